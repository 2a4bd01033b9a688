"""Database engines and sessions for the catalog (SQLite by default, PostgreSQL via ``KF_DATABASE_URL``).

SQLite is shared by the API and the job processes, so every connection turns on WAL (readers never block the
writer), a generous busy timeout (writers queue instead of failing) and foreign keys (off by default in SQLite).
Job timestamps that are compared across hosts (heartbeats) come from :func:`db_now`, the database's clock, so
workers with skewed clocks cannot declare each other dead.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from service.config import Settings

__all__ = ["db_now", "make_engine", "make_sessionmaker", "reachable", "savepoint", "session_scope", "utcnow"]


def make_engine(settings: Settings) -> Engine:
    """An engine for ``settings.database_url``; creates the SQLite file's directory if needed."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # pre_ping: a worker that sat idle for hours behind a load balancer must not fail its first progress write.
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: routes return ORM objects after committing and read their fields afterwards.
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits on success and rolls back on any exception."""
    with factory() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


@contextmanager
def savepoint(session: Session) -> Iterator[None]:
    """``session.begin_nested()`` that stays inside the session's transaction on SQLite too: Python's sqlite3
    emits BEGIN only before a write, so a SAVEPOINT after mere reads would open a transaction of its own, and its
    RELEASE would commit whatever it holds even if the session's transaction later rolls back."""
    connection = session.connection()
    if connection.dialect.name == "sqlite" and not connection.connection.dbapi_connection.in_transaction:  # type: ignore[union-attr]
        connection.exec_driver_sql("BEGIN")
    with session.begin_nested():
        yield


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def db_now(session: Session) -> dt.datetime:
    """The database server's current time (UTC); this host's clock for SQLite, which is always local."""
    if session.get_bind().dialect.name == "postgresql":
        # clock_timestamp(), not now(): now() is frozen at the start of the transaction.
        value = session.scalar(select(func.clock_timestamp()))
        assert isinstance(value, dt.datetime)
        return value.astimezone(dt.UTC)
    return utcnow()


def reachable(factory: sessionmaker[Session]) -> bool:
    """Whether the catalog answers a trivial query (readiness probes, HTTP and gRPC)."""
    try:
        with factory() as session:
            session.execute(text("SELECT 1"))
    except Exception:
        return False
    return True
