"""Engine and session factories. Nothing is connected at import time: callers build an engine
from settings and pass sessions explicitly."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.errors import DatabaseUnavailable
from orchestrator.settings import Settings

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_SECONDS = 15
"""How long a SQLite writer waits for the lock (s); the dev stack has an API and a worker."""
HIDE_SQL_PARAMETERS = True
"""SQLAlchemy errors (and SQL logging) quote statement parameters, which include observations:
keep them out of every exception message and log line."""
CONNECT_BACKOFF_BASE_SECONDS = 0.05
CONNECT_BACKOFF_CAP_SECONDS = 0.5
"""Backoff between tries to open a connection (s, jittered): a restarting Postgres accepts
connections again within a second or so; a request must not wait much longer than that."""


def make_engine(settings: Settings, *, pool_size: int | None = None, pre_ping: bool = True) -> Engine:
    """A new engine for ``settings.database_url``. ``pool_size`` overrides the configured size
    (the worker sizes its pool to its concurrency); ``pre_ping=False`` skips the liveness round
    trip on every checkout, for callers that retry on a dead connection anyway (the worker)."""
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
    engine = create_engine(
        url,
        pool_size=size,
        max_overflow=size,
        pool_pre_ping=pre_ping,
        pool_timeout=settings.db_connect_timeout_seconds,
        connect_args=connect_args,
        hide_parameters=HIDE_SQL_PARAMETERS,
    )
    retrying = _retrying_connect(settings.db_connect_attempts, settings.db_connect_timeout_seconds)
    event.listen(engine, "do_connect", retrying)
    return engine


def _retrying_connect(attempts: int, budget_seconds: float):
    """A ``do_connect`` hook: open a DBAPI connection, retrying a refused or dropped one up to
    ``attempts`` times with jittered backoff, but never past ``budget_seconds`` in all."""

    def connect(dialect, _record, cargs, cparams):
        deadline = time.monotonic() + budget_seconds
        for attempt in range(1, attempts + 1):
            try:
                return dialect.loaded_dbapi.connect(*cargs, **cparams)
            except dialect.loaded_dbapi.OperationalError:
                delay = min(CONNECT_BACKOFF_CAP_SECONDS, CONNECT_BACKOFF_BASE_SECONDS * 2 ** (attempt - 1))
                delay *= random.uniform(0.5, 1.0)
                if attempt == attempts or time.monotonic() + delay > deadline:
                    raise
                log.warning("database connection failed; retrying", extra={"attempt": attempt})
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    return connect


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
