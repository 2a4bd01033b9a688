"""Alembic environment: migrates the catalog that ``KF_DATABASE_URL`` names (or a connection handed in by code).

Order of precedence for the target database: a connection in ``config.attributes["connection"]`` (tests and
``kf db upgrade``), ``alembic -x database_url=...``, then the service settings (``KF_DATABASE_URL``).
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Connection, types

from service.config import Settings, get_settings
from service.catalog.db import make_engine
from service.catalog.models import Base, UTCDateTime

config = context.config
# Tests hand in a modified copy to prove `alembic check` notices drift; everyone else compares the real models.
target_metadata = config.attributes.get("target_metadata", Base.metadata)


def _render_item(type_: str, obj: Any, _autogen_context: Any) -> str | bool:
    # Migrations must not import service code: UTCDateTime is a plain timezone-aware DateTime in the schema.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _compare_type(
    _ctx: Any, _inspected: Any, _metadata_col: Any, inspected_type: Any, metadata_type: Any
) -> bool | None:
    if isinstance(metadata_type, UTCDateTime):
        return not isinstance(inspected_type, types.DateTime)
    return None  # alembic's own comparison


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        render_item=_render_item,
        compare_type=_compare_type,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("database_url")
    settings = Settings(database_url=url) if url else get_settings()
    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            _configure(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run them against a database")
run_migrations_online()
