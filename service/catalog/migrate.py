"""Schema migrations from code: ``kf db upgrade`` and the API's startup check.

The schema is only ever created by Alembic (``migrations/``), never by ``create_all``. The API refuses to start
on a catalog that is behind the code, with the command that fixes it, instead of failing on the first query.
"""

from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from service.catalog.db import make_engine
from service.config import Settings
from service.errors import CatalogNotMigratedError

__all__ = ["alembic_config", "check_schema", "current_revision", "head_revision", "upgrade"]

_ROOT = Path(__file__).resolve().parents[2]  # the repository root: alembic.ini and migrations/
_MIGRATION_LOCK = 0x6B66_6D69  # "kfmi": PostgreSQL advisory lock held while migrating


def alembic_config() -> Config:
    cfg = Config(str(_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(_ROOT / "migrations"))
    return cfg


@functools.cache
def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(settings: Settings, revision: str = "head") -> str:
    """Migrate the catalog of ``settings`` to ``revision``; returns the revision it is at afterwards."""
    engine = make_engine(settings)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # API and worker containers migrate as they start: one at a time, the others then find head.
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
        return current_revision(engine) or "base"
    finally:
        engine.dispose()


def check_schema(engine: Engine) -> None:
    """Raise :class:`CatalogNotMigratedError` unless the catalog is at the code's head revision."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        where = engine.url.render_as_string(hide_password=True)
        state = "is not migrated" if current is None else f"is at revision {current}"
        raise CatalogNotMigratedError(
            f"the catalog at {where} {state}, the code needs {head}: run `kf db upgrade` (same KF_DATABASE_URL) first"
        )
