"""Engine and session factories. Nothing is connected at import time: callers build an engine
from settings and pass sessions explicitly."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.errors import DatabaseUnavailable
from orchestrator.settings import Settings

SQLITE_BUSY_TIMEOUT_SECONDS = 15
"""How long a SQLite writer waits for the lock (s); the dev stack has an API and a worker."""
HIDE_SQL_PARAMETERS = True
"""SQLAlchemy errors (and SQL logging) quote statement parameters, which include observations:
keep them out of every exception message and log line."""


def make_engine(settings: Settings, *, pool_size: int | None = None) -> Engine:
    """A new engine for ``settings.database_url``. ``pool_size`` overrides the configured size
    (the worker sizes its pool to its concurrency)."""
    url = settings.database_url
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
            hide_parameters=HIDE_SQL_PARAMETERS,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    size = pool_size or settings.db_pool_size
    connect_args = {}
    if url.startswith("postgresql"):
        connect_args = {
            "connect_timeout": max(1, round(settings.db_connect_timeout_seconds)),
            "application_name": "pedi-orchestrator",
        }
    return create_engine(
        url,
        pool_size=size,
        max_overflow=size,
        pool_pre_ping=True,
        pool_timeout=settings.db_connect_timeout_seconds,
        connect_args=connect_args,
        hide_parameters=HIDE_SQL_PARAMETERS,
    )


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # pragma: no cover - trivial
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def is_connection_error(exc: BaseException) -> bool:
    """True when ``exc`` means the database is unreachable (as opposed to a bad statement)."""
    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits on success, rolls back on error, and turns an unreachable
    database into ``DatabaseUnavailable``."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException as exc:
        session.rollback()
        if is_connection_error(exc):
            raise DatabaseUnavailable() from exc
        raise
    finally:
        session.close()


def ping(engine: Engine) -> None:
    """Raise unless the database answers ``SELECT 1``."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
