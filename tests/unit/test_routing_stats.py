"""The stats stores and the Router shell: calls in flight, their age, telemetry, round trips."""

from __future__ import annotations

import random

import pytest

from orchestrator.constants import INFLIGHT_STALE_SECONDS
from orchestrator.routing import (
    InMemoryStatsStore,
    Outcome,
    RedisStatsStore,
    Router,
    RouteRequest,
    Target,
    TargetStats,
)

NOW = 4_000_000.0
EDGE = Target("edge", "edge", cost_per_call_usd=0.0002, capacity=2, prior_latency_ms=100)
GPU = Target("gpu", "gpu", cost_per_call_usd=0.004, capacity=8, prior_latency_ms=60)


@pytest.fixture(params=["memory", "redis"])
def store(request, fake_redis):
    return InMemoryStatsStore() if request.param == "memory" else RedisStatsStore(fake_redis)


def test_a_snapshot_counts_live_calls_and_the_start_of_the_oldest(store):
    store.call_started("edge", "a", NOW - 2.0)
    store.call_started("edge", "b", NOW - 0.5)
    store.call_started("edge", "dead", NOW - INFLIGHT_STALE_SECONDS - 1)  # its worker died
    edge = store.snapshot(["edge"], NOW)["edge"]
    assert edge.in_flight == 2 and edge.oldest_in_flight_at == pytest.approx(NOW - 2.0)
    store.call_ended("edge", "a")
    assert store.snapshot(["edge"], NOW)["edge"].oldest_in_flight_at == pytest.approx(NOW - 0.5)
    store.call_ended("edge", "b")
    idle = store.snapshot(["edge"], NOW)["edge"]
    assert idle.in_flight == 0 and idle.oldest_in_flight_at == 0.0


def test_what_a_snapshot_fills_in_is_never_stored(store):
    stored = store.update("gpu", lambda s: TargetStats(samples=3.0, in_flight=9, oldest_in_flight_at=NOW))
    assert stored.samples == 3.0 and stored.in_flight == 0 and stored.oldest_in_flight_at == 0.0
    assert store.snapshot(["gpu"], NOW)["gpu"] == stored


def test_an_unknown_target_has_empty_stats(store):
    assert store.snapshot(["nobody"], NOW)["nobody"] == TargetStats()


def test_the_router_learns_from_outcomes_and_a_hung_call_moves_traffic_at_once(store):
    router = Router(store, rng=random.Random(3))
    for i in range(20):
        router.record(Outcome("edge", True, 90.0, NOW - 5 + i * 0.1))
        router.record(Outcome("gpu", True, 50.0, NOW - 5 + i * 0.1))
    tight = RouteRequest(job_id="t", sla_ms=300, submitted_at=NOW)
    assert router.decide(tight, [EDGE, GPU], NOW).chosen.target == "edge"
    call = router.call_started("edge", NOW - 1.5)  # still running after 1.5 s
    assert router.decide(tight, [EDGE, GPU], NOW).chosen.target == "gpu"
    router.call_ended("edge", call)
    assert router.decide(tight, [EDGE, GPU], NOW).chosen.target == "edge"


def test_telemetry_is_blended_in_and_a_target_reported_down_is_skipped(store):
    router = Router(store, rng=random.Random(3))
    router.record_telemetry("edge", at=NOW, latency_ms=80.0, utilization=0.5, queue_depth=0, up=True)
    router.record_telemetry("edge", at=NOW + 1, up=False)
    edge = router.stats([EDGE], NOW + 1)["edge"]
    assert edge.telemetry_latency_ms == 80.0 and edge.telemetry_utilization == 0.5 and edge.telemetry_up is False
    decision = router.decide(RouteRequest(job_id="d", sla_ms=2000, submitted_at=NOW), [EDGE, GPU], NOW + 1)
    assert decision.chosen.target == "gpu" and "reported down by telemetry" in decision.candidates[-1].reason


def test_reported_queue_depth_adds_to_the_predicted_wait(store):
    router = Router(store, rng=random.Random(3))
    request = RouteRequest(job_id="q", sla_ms=2000, submitted_at=NOW)
    before = router.decide(request, [EDGE], NOW).candidates[0].queue_wait_ms
    router.record_telemetry("edge", at=NOW, utilization=1.0, queue_depth=6)
    after = router.decide(request, [EDGE], NOW).candidates[0]
    assert before == 0.0 and after.queue_wait_ms > 200 and after.predicted_p50_ms > 300
