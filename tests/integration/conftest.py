"""Fixtures shared by the integration tests that drive the reconciler on real Postgres and Redis."""

from __future__ import annotations

import pytest
import redis

from orchestrator.db import make_session_factory
from orchestrator.queue_rq import get_queue


@pytest.fixture
def sessions(pg_engine):
    return make_session_factory(pg_engine)


@pytest.fixture
def queue(redis_url):
    connection = redis.Redis.from_url(redis_url)
    yield get_queue(connection)
    connection.close()
