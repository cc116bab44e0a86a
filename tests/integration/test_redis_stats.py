"""RedisStatsStore on a real Redis: atomic updates from many workers lose nothing."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from orchestrator.constants import INFLIGHT_STALE_SECONDS
from orchestrator.routing import Outcome, RedisStatsStore, Router, Target

pytestmark = pytest.mark.redis


def test_concurrent_outcomes_from_many_threads_are_all_counted(redis_url):
    connection = redis.Redis.from_url(redis_url)
    routers = [Router(RedisStatsStore(redis.Redis.from_url(redis_url))) for _ in range(8)]

    def report(index: int) -> None:
        router = routers[index % len(routers)]
        for n in range(25):
            router.record(Outcome("gpu", ok=n % 5 != 0, latency_ms=50.0 + n, at=time.time()))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(report, range(8)))
    stats = RedisStatsStore(connection).snapshot(["gpu"], time.time())["gpu"]
    assert stats.calls == 200 and stats.failures == 40


def test_calls_in_flight_are_shared_and_stale_ones_expire(redis_url):
    store = RedisStatsStore(redis.Redis.from_url(redis_url))
    now = time.time()
    store.call_started("edge", "a", now)
    store.call_started("edge", "b", now - INFLIGHT_STALE_SECONDS - 1)  # its worker died long ago
    assert store.snapshot(["edge"], now)["edge"].in_flight == 1
    store.call_ended("edge", "a")
    assert store.snapshot(["edge"], now)["edge"].in_flight == 0


def test_a_router_in_another_process_sees_the_same_learning(redis_url):
    writer = Router(RedisStatsStore(redis.Redis.from_url(redis_url)))
    reader = Router(RedisStatsStore(redis.Redis.from_url(redis_url)))
    for _ in range(6):
        writer.record(Outcome("edge", ok=False, latency_ms=3.0, at=time.time(), error_kind="http_5xx"))
    target = Target("edge", "edge")
    assert reader.stats([target], time.time())["edge"].circuit.value == "open"
