"""Engine and session factories. Nothing is connected at import time: callers build an engine
from settings and pass sessions explicitly.

Every wait on Postgres is bounded (docs/reliability.md, "API under a hung dependency"):

* the server ends a statement after DB_STATEMENT_TIMEOUT_SECONDS and a lock wait after
  DB_LOCK_TIMEOUT_SECONDS; TCP keepalives find a vanished host behind an idle connection;
* the client bounds what the server cannot (a stopped or partitioned Postgres answers nothing):
  psycopg2 runs in "green" mode with ``_bounded_wait``, which gives every connect
  DB_CONNECT_TIMEOUT_SECONDS and every statement DB_STATEMENT_TIMEOUT_SECONDS + 1 s, and then
  shuts the socket down, so the caller gets an OperationalError and the pool drops the connection;
* an API request has one budget for all of it (``request_deadline``, DB_REQUEST_BUDGET_SECONDS),
  and a pool checkout waits at most DB_POOL_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import logging
import os
import random
import select
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from psycopg2 import extensions as pg_extensions
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
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
CLIENT_GRACE_SECONDS = 1.0
"""The client waits this much longer than ``statement_timeout`` for an answer (s), so a live but
slow server cancels the statement itself (a clean error, the connection kept) before the client
decides the server is hung and closes the connection."""
KEEPALIVE_INTERVAL_SECONDS = 10
KEEPALIVE_COUNT = 3
"""TCP keepalive probes after DB_KEEPALIVE_IDLE_SECONDS of silence: every 10 s, 3 unanswered
probes and the kernel drops the connection."""

AUTOCOMMITS = "pedi_autocommits"
"""Execution option marking an engine whose connections autocommit from the moment they open."""
AUTOCOMMIT_ENGINE = {"isolation_level": "AUTOCOMMIT", "execution_options": {AUTOCOMMITS: True}}

_REQUEST_DEADLINE: ContextVar[float | None] = ContextVar("pedi_db_request_deadline", default=None)
"""time.monotonic() by which the current API request must be done with Postgres, or None."""


@contextmanager
def request_deadline(budget_seconds: float) -> Iterator[None]:
    """Bound every Postgres wait inside the block (in this context, and the threads FastAPI runs
    it in) to ``budget_seconds`` from now in all."""
    token = _REQUEST_DEADLINE.set(time.monotonic() + budget_seconds)
    try:
        yield
    finally:
        _REQUEST_DEADLINE.reset(token)


def _abandon(dbapi_connection) -> None:
    """Shut the connection's socket down under libpq: its next read sees end-of-file, so psycopg2
    raises OperationalError and marks the connection closed, and SQLAlchemy discards it."""
    try:
        with socket.socket(fileno=os.dup(dbapi_connection.fileno())) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed: the next poll reports it
        pass


def _bounded_wait(dbapi_connection) -> None:
    """psycopg2's wait callback (process-wide). Connections made by ``make_engine`` carry their
    budgets (``_bounded_connection_class``); any other connection (tests, Alembic) waits as long
    as it takes, as without a callback."""
    connecting = getattr(dbapi_connection, "pedi_connecting", False)
    budget = getattr(dbapi_connection, "pedi_connect_seconds" if connecting else "pedi_answer_seconds", None)
    deadline = None if budget is None else time.monotonic() + budget
    request = _REQUEST_DEADLINE.get()
    if deadline is not None and request is not None:
        deadline = min(deadline, request)
    abandoned = False
    while True:
        try:
            state = dbapi_connection.poll()
        except dbapi_connection.OperationalError as exc:
            if abandoned:
                raise dbapi_connection.OperationalError("Postgres did not answer in time; connection closed") from exc
            raise
        if state == pg_extensions.POLL_OK:
            return
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            if abandoned:  # the shut-down socket still reads as pending: give up outright
                raise dbapi_connection.OperationalError("Postgres did not answer in time; connection closed")
            _abandon(dbapi_connection)
            abandoned, deadline = True, time.monotonic() + CLIENT_GRACE_SECONDS
            continue
        poller = select.poll()  # not select.select: file descriptors above 1024 are fine
        poller.register(
            dbapi_connection.fileno(), select.POLLIN if state == pg_extensions.POLL_READ else select.POLLOUT
        )
        poller.poll(None if remaining is None else max(1, int(remaining * 1000)))


def _bounded_connection_class(connect_seconds: float, answer_seconds: float) -> type:
    """A psycopg2 connection class carrying the budgets ``_bounded_wait`` enforces."""

    class BoundedConnection(pg_extensions.connection):
        pedi_connect_seconds = connect_seconds
        pedi_answer_seconds = answer_seconds

        def __init__(self, *args, **kwargs) -> None:
            self.pedi_connecting = True
            super().__init__(*args, **kwargs)
            self.pedi_connecting = False

    return BoundedConnection


def _install_bounded_wait() -> None:
    """Put psycopg2 in green mode with ``_bounded_wait`` (idempotent, process-wide)."""
    if pg_extensions.get_wait_callback() is not _bounded_wait:
        pg_extensions.set_wait_callback(_bounded_wait)


def postgres_connect_args(settings: Settings) -> dict:
    """libpq options of every connection: server-side timeouts, keepalives, a name."""
    statement_ms = round(settings.db_statement_timeout_seconds * 1000)
    lock_ms = round(settings.db_lock_timeout_seconds * 1000)
    return {
        "connect_timeout": max(2, round(settings.db_connect_timeout_seconds)),  # libpq's floor is 2 s
        "application_name": "pedi-orchestrator",
        "options": f"-c statement_timeout={statement_ms} -c lock_timeout={lock_ms}",
        "keepalives": 1,
        "keepalives_idle": settings.db_keepalive_idle_seconds,
        "keepalives_interval": KEEPALIVE_INTERVAL_SECONDS,
        "keepalives_count": KEEPALIVE_COUNT,
        # Unacknowledged data (a host gone mid-statement) drops the connection as the client would.
        "tcp_user_timeout": round((settings.db_statement_timeout_seconds + CLIENT_GRACE_SECONDS) * 1000),
    }


def make_engine(
    settings: Settings, *, pool_size: int | None = None, pre_ping: bool = True, autocommit: bool = False
) -> Engine:
    """A new engine for ``settings.database_url``. ``pool_size`` overrides the configured size
    (the worker sizes its pool to its concurrency); ``pre_ping=False`` skips the liveness round
    trip on every checkout, for callers that retry on a dead connection anyway (the worker).
    ``autocommit`` (Postgres): every connection autocommits from the start, set once when it is
    opened rather than switched on each checkout and back on each return (each switch costs a
    round trip); for the API's intake and the worker's job transitions, whose writes are single
    statements (orchestrator.intake, orchestrator.job_sql)."""
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
        _install_bounded_wait()
        connect_args = postgres_connect_args(settings)
        answer = settings.db_statement_timeout_seconds + CLIENT_GRACE_SECONDS
        connect_args["connection_factory"] = _bounded_connection_class(settings.db_connect_timeout_seconds, answer)
    engine = create_engine(
        url,
        **(AUTOCOMMIT_ENGINE if autocommit and url.startswith("postgresql") else {}),
        pool_size=size,
        max_overflow=size,
        pool_pre_ping=pre_ping,
        pool_timeout=settings.db_pool_timeout_seconds,
        connect_args=connect_args,
        hide_parameters=HIDE_SQL_PARAMETERS,
    )
    retrying = _retrying_connect(settings.db_connect_attempts, settings.db_connect_timeout_seconds)
    event.listen(engine, "do_connect", retrying)
    return engine


def _retrying_connect(attempts: int, budget_seconds: float):
    """A ``do_connect`` hook: open a DBAPI connection, retrying a refused or dropped one up to
    ``attempts`` times with jittered backoff, but never past ``budget_seconds`` in all (nor past
    the current request's deadline)."""

    def connect(dialect, _record, cargs, cparams):
        deadline = time.monotonic() + budget_seconds
        request = _REQUEST_DEADLINE.get()
        if request is not None:
            deadline = min(deadline, request)
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


def make_intake_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for the submit routes: on Postgres their connections autocommit, so the one
    statement that stores a submit (orchestrator.intake) is its own transaction, with no BEGIN
    and COMMIT round trips around it, and the quota reads before it open none. Give an engine
    made with ``make_engine(..., autocommit=True)``; any other Postgres engine is switched per
    checkout (correct, one round trip slower). Elsewhere (SQLite) ordinary sessions: intake runs
    its INSERTs in one transaction there."""
    if engine.dialect.name == "postgresql" and not engine.get_execution_options().get(AUTOCOMMITS):
        engine = engine.execution_options(isolation_level="AUTOCOMMIT")
    return make_session_factory(engine)


def is_connection_error(exc: BaseException) -> bool:
    """True when ``exc`` means the database is unreachable, hung, overloaded or timed out (as
    opposed to a bad statement): a connection failure, a statement or lock timeout, a client
    deadline, or no free pooled connection within DB_POOL_TIMEOUT_SECONDS."""
    if isinstance(exc, OperationalError | PoolTimeoutError):
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
