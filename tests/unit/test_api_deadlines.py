"""Every wait of the API on a dependency is bounded, and a timeout is a 503 + Retry-After, never a
500 (defect 5, in-process; tests/faults/test_api_hung_dependency.py stops real processes).

On real Postgres: pool exhaustion, a lock wait (``lock_timeout``) and the request's own budget
(the client-side deadline, which closes the connection) each answer 503 database_unavailable in
about their configured time. /readyz answers within its deadline whatever its checks do, and
/healthz touches no dependency at all.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from orchestrator.app.deps import Services
from orchestrator.app.main import create_app
from orchestrator.db import is_connection_error, make_engine
from orchestrator.errors import ConfigError
from orchestrator.queue_rq import make_redis
from orchestrator.routers import ops
from orchestrator.settings import load_settings
from tests.support.app import in_process_app


def pg_app(pg_url, redis_url, monkeypatch, **env: str):
    for name, value in {"DATABASE_URL": pg_url, "REDIS_URL": redis_url, **env}.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    engine, connection = make_engine(settings), make_redis(settings)
    return create_app(services=Services.over(settings, engine, connection)), engine, connection


def timed_get(client: TestClient, path: str) -> tuple[object, float]:
    started = time.monotonic()
    response = client.get(path)
    return response, time.monotonic() - started


def assert_database_503(response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "database_unavailable" and response.headers["retry-after"]


@pytest.mark.postgres
@pytest.mark.redis
def test_an_exhausted_pool_is_a_quick_503_not_a_500(pg_url, redis_url, monkeypatch):
    app, engine, connection = pg_app(pg_url, redis_url, monkeypatch, DB_POOL_SIZE="1", DB_POOL_TIMEOUT_SECONDS="0.5")
    held = [engine.connect(), engine.connect()]  # pool_size 1 + overflow 1: nothing left
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            response, seconds = timed_get(client, "/api/jobs")
    finally:
        for each in held:
            each.close()
        engine.dispose()
        connection.close()
    assert_database_503(response)
    assert 0.4 < seconds < 2.0, seconds


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.parametrize(
    ("env", "bound"),
    [
        ({"DB_LOCK_TIMEOUT_SECONDS": "0.5"}, 0.5),  # the server gives up waiting for the lock
        (
            {"DB_LOCK_TIMEOUT_SECONDS": "10", "DB_STATEMENT_TIMEOUT_SECONDS": "20", "DB_REQUEST_BUDGET_SECONDS": "1"},
            1.0,
        ),
    ],
    ids=["lock_timeout", "request-budget"],
)
def test_a_blocked_statement_is_a_503_in_about_its_bound(pg_url, redis_url, monkeypatch, env, bound):
    """A second connection holds an exclusive lock on the jobs table, so the request's query waits:
    Postgres ends it at lock_timeout, or the client at the request's budget (no server help)."""
    app, engine, connection = pg_app(pg_url, redis_url, monkeypatch, **env)
    blocker = create_engine(pg_url)
    try:
        with blocker.connect() as locked, TestClient(app, raise_server_exceptions=False) as client:
            locked.execute(text("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE"))
            response, seconds = timed_get(client, "/api/jobs")
            locked.rollback()
            after, _ = timed_get(client, "/api/jobs")
    finally:
        blocker.dispose()
        engine.dispose()
        connection.close()
    assert_database_503(response)
    assert bound * 0.8 < seconds < bound + 1.5, seconds
    assert after.status_code == 200, "the pool recovered: a closed connection was replaced"


class HangingRedis:
    """A Redis client whose every command hangs (as a SIGSTOPped server would make it)."""

    def __getattr__(self, name: str):
        def hang(*_args, **_kwargs):
            time.sleep(10)

        return hang


def test_readyz_answers_503_within_its_deadline_when_a_check_hangs(sqlite_engine, fake_redis, monkeypatch):
    app = in_process_app(sqlite_engine, fake_redis, monkeypatch)
    app.state.services.redis = HangingRedis()
    with TestClient(app) as client:
        response, seconds = timed_get(client, "/readyz")
    assert response.status_code == 503 and response.headers["retry-after"]
    checks = response.json()["checks"]
    assert checks["database"] == "ok" and "no answer within" in checks["redis"], checks
    assert seconds < ops.READYZ_DEADLINE_SECONDS + 0.5, seconds


def test_readyz_is_not_delayed_by_a_full_thread_pool(sqlite_engine, fake_redis, monkeypatch):
    """Requests stuck on a hung database hold FastAPI's worker threads; readyz does not need one."""
    release = threading.Event()
    monkeypatch.setattr(ops, "ping", lambda _engine: release.wait(10))
    app = in_process_app(sqlite_engine, fake_redis, monkeypatch)
    with TestClient(app) as client:
        response, seconds = timed_get(client, "/readyz")
        release.set()
        again, _ = timed_get(client, "/readyz")
    assert response.status_code == 503 and "no answer" in response.json()["checks"]["database"]
    assert seconds < ops.READYZ_DEADLINE_SECONDS + 0.5
    assert again.status_code == 200, "ready again once the check answers"


class Untouchable:
    """Fails the test if anything reaches for it."""

    def __getattr__(self, name: str):
        raise AssertionError(f"/healthz touched a dependency ({name})")


def test_healthz_touches_no_dependency(sqlite_engine, fake_redis, monkeypatch):
    app = in_process_app(sqlite_engine, fake_redis, monkeypatch)
    with TestClient(app) as client:
        app.state.services.engine = Untouchable()
        app.state.services.redis = Untouchable()
        app.state.services.sessions = Untouchable()
        response, seconds = timed_get(client, "/healthz")
        app.state.services.engine, app.state.services.redis = sqlite_engine, fake_redis  # for shutdown
    assert response.status_code == 200 and response.json() == {"status": "ok"} and seconds < 0.5


def test_a_lock_timeout_above_the_statement_timeout_is_refused_naming_both(monkeypatch):
    monkeypatch.setenv("DB_STATEMENT_TIMEOUT_SECONDS", "5")
    monkeypatch.setenv("DB_LOCK_TIMEOUT_SECONDS", "10")
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert (
        "DB_LOCK_TIMEOUT_SECONDS" in refused.value.message and "DB_STATEMENT_TIMEOUT_SECONDS" in refused.value.message
    )


@pytest.mark.postgres
def test_every_connection_carries_the_server_timeouts_and_keepalives(pg_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", pg_url)
    monkeypatch.setenv("DB_STATEMENT_TIMEOUT_SECONDS", "1")
    monkeypatch.setenv("DB_LOCK_TIMEOUT_SECONDS", "0.25")
    monkeypatch.setenv("DB_KEEPALIVE_IDLE_SECONDS", "17")
    engine = make_engine(load_settings())
    try:
        with engine.connect() as connection:
            assert connection.scalar(text("SHOW statement_timeout")) == "1s"
            assert connection.scalar(text("SHOW lock_timeout")) == "250ms"
            raw = connection.connection.dbapi_connection
            with socket.socket(fileno=os.dup(raw.fileno())) as sock:
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 17
            started = time.monotonic()
            with pytest.raises(OperationalError) as cancelled:
                connection.execute(text("SELECT pg_sleep(5)"))
            seconds = time.monotonic() - started
        assert is_connection_error(cancelled.value) and 0.8 < seconds < 2.0, seconds  # the server cancelled it
        with engine.connect() as connection:
            assert connection.scalar(text("SELECT 1")) == 1
    finally:
        engine.dispose()


def test_a_database_that_accepts_but_never_answers_is_a_503_within_the_connect_timeout(fake_redis, monkeypatch):
    """A listening socket nobody serves (as a stopped postmaster's): TCP connects, the startup
    handshake never completes. Only the client's connect deadline can end the wait."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        monkeypatch.setenv("DATABASE_URL", f"postgresql://nobody@127.0.0.1:{port}/nothing")
        monkeypatch.setenv("DB_CONNECT_TIMEOUT_SECONDS", "1")
        monkeypatch.setenv("DB_STATEMENT_TIMEOUT_SECONDS", "30")
        monkeypatch.setenv("DB_REQUEST_BUDGET_SECONDS", "30")
        settings = load_settings()
        engine = make_engine(settings)
        app = create_app(services=Services.over(settings, engine, fake_redis))
        try:
            with TestClient(app, raise_server_exceptions=False) as client:
                response, seconds = timed_get(client, "/api/jobs")
        finally:
            engine.dispose()
    assert_database_503(response)
    assert 0.8 < seconds < 2.5, seconds
