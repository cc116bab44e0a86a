"""Per-class SLO objectives: deadline first by default; an operator's objective below 1 is met
first and then traded for cost, moved by the class's live record (shared through the store)."""

from __future__ import annotations

import random

import pytest
import redis

from orchestrator.routing import (
    DEFAULT_CONFIG,
    CircuitState,
    InMemoryStatsStore,
    Outcome,
    RedisStatsStore,
    Router,
    RouteRequest,
    RoutingConfig,
    SloClassStats,
    Target,
    TargetStats,
    decide,
    observe,
)
from orchestrator.routing.objective import allowance_factor, bar, slo_class

NOW = 5_000_000.0
EDGE = Target("edge", "edge", cost_per_call_usd=0.0002, capacity=2, prior_latency_ms=120)
GPU = Target("gpu", "gpu", cost_per_call_usd=0.004, capacity=8, prior_latency_ms=60)
OBJECTIVE = RoutingConfig(slo_objectives=((500.0, 0.99),), slo_default_objective=0.95)


def learned(latency_ms: float, spread: float, calls: int = 20) -> TargetStats:
    """A target whose ln-latency alternates +-spread around ln(latency_ms)."""
    stats = TargetStats()
    for i in range(calls):
        x = latency_ms * (2.718281828 ** (spread if i % 2 else -spread))
        stats = observe(stats, Outcome("x", True, x, NOW - (calls - i) * 0.01))
    return stats


def job(sla_ms: float) -> RouteRequest:
    return RouteRequest(job_id="j", sla_ms=sla_ms, submitted_at=NOW)


def p_of(decision, name: str) -> float:
    return next(c.p_on_time for c in decision.candidates if c.target == name)


# an edge box that is on time ~97-99% for a 300 ms job, a GPU that always is
STATS = {"edge": learned(130.0, 0.45, 40), "gpu": learned(50.0, 0.1)}


def test_the_default_objective_takes_the_cheapest_target_nearly_as_likely_as_the_best():
    decision = decide(job(300), [EDGE, GPU], STATS, NOW)
    edge, gpu = p_of(decision, "edge"), p_of(decision, "gpu")
    assert gpu - edge > DEFAULT_CONFIG.deadline_first_slack  # the edge box is measurably riskier
    assert decision.chosen.target == "gpu"
    loose = decide(job(2000), [EDGE, GPU], STATS, NOW)  # both near-certain: the cheaper one
    assert loose.chosen.target == "edge"
    assert p_of(loose, "gpu") - p_of(loose, "edge") <= DEFAULT_CONFIG.deadline_first_slack


def test_an_operator_objective_below_the_edge_boxs_chance_lets_the_cheap_target_take_the_job():
    edge_p = p_of(decide(job(300), [EDGE, GPU], STATS, NOW), "edge")
    relaxed = RoutingConfig(slo_objectives=((500.0, edge_p - 0.005),))
    strict = RoutingConfig(slo_objectives=((500.0, edge_p + 0.005),))
    assert decide(job(300), [EDGE, GPU], STATS, NOW, relaxed).chosen.target == "edge"
    assert decide(job(300), [EDGE, GPU], STATS, NOW, strict).chosen.target == "gpu"


def test_the_class_record_loosens_the_bar_when_the_class_beats_its_objective_and_tightens_it_when_not():
    calm = SloClassStats(jobs=50, miss_rate=0.0)
    missing = SloClassStats(jobs=50, miss_rate=0.05)
    assert allowance_factor(0.99, calm, OBJECTIVE) == OBJECTIVE.slo_loosen_max
    assert allowance_factor(0.99, missing, OBJECTIVE) == pytest.approx(0.25)
    assert allowance_factor(0.99, SloClassStats(jobs=5, miss_rate=0.0), OBJECTIVE) < OBJECTIVE.slo_loosen_max
    assert bar(OBJECTIVE, 300, 1.0, calm).needed == pytest.approx(0.96)
    assert bar(OBJECTIVE, 300, 1.0, missing).needed == pytest.approx(0.9975)
    edge_p = p_of(decide(job(300), [EDGE, GPU], STATS, NOW), "edge")
    assert 0.96 < edge_p < 0.9975  # so the record decides
    assert decide(job(300), [EDGE, GPU], STATS, NOW, OBJECTIVE, slo=calm).chosen.target == "edge"
    assert decide(job(300), [EDGE, GPU], STATS, NOW, OBJECTIVE, slo=missing).chosen.target == "gpu"


def test_a_class_that_cannot_reach_its_objective_gets_the_likeliest_target():
    needed = bar(OBJECTIVE, 300, 0.95, SloClassStats(jobs=50, miss_rate=0.2))
    assert needed.needed == pytest.approx(0.95 - OBJECTIVE.deadline_first_slack)
    assert "capped at best 95.00%" in needed.rule


def test_classes_are_chosen_by_the_largest_sla_of_each_range():
    config = RoutingConfig(slo_objectives=((3000.0, 0.99), (500.0, 0.999)))
    assert slo_class(config, 500) == ("le500ms", 0.999)
    assert slo_class(config, 501) == ("le3000ms", 0.99)
    assert slo_class(config, 10_000) == ("default", 1.0)


@pytest.fixture(params=["memory", "fakeredis", "redis"])
def store(request):
    if request.param == "memory":
        return InMemoryStatsStore()
    if request.param == "fakeredis":
        return RedisStatsStore(request.getfixturevalue("fake_redis"))
    connection = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    connection.flushdb()
    return RedisStatsStore(connection)


def test_finished_jobs_feed_the_class_record_that_later_decisions_read(store):
    router = Router(store, OBJECTIVE, rng=random.Random(1))
    for name, stats in STATS.items():
        store.update(name, lambda _s, stats=stats: stats)
    assert router.decide(job(300), [EDGE, GPU], NOW).chosen.target == "gpu"  # no record: bar 99%
    for i in range(60):
        router.record_job(300, on_time=True, at=NOW + i * 0.01)
    record = store.slo_record("le500ms")
    assert record.jobs >= OBJECTIVE.slo_min_jobs and record.miss_rate < 1e-6
    assert router.decide(job(300), [EDGE, GPU], NOW).chosen.target == "edge"
    for i in range(60):
        router.record_job(300, on_time=i % 4 != 0, at=NOW + 1 + i * 0.01)
    assert store.slo_record("le500ms").miss_rate > 0.1
    assert router.decide(job(300), [EDGE, GPU], NOW).chosen.target == "gpu"
    assert store.slo_record("default").jobs == 0  # another class is untouched


def test_the_default_objective_keeps_no_record():
    store = InMemoryStatsStore()
    Router(store, rng=random.Random(1)).record_job(300, on_time=False, at=NOW)
    assert store.slo_record("default") == SloClassStats()


def test_a_timeout_cut_short_by_the_deadline_does_not_trip_the_breaker_but_a_long_one_does():
    stats = learned(100.0, 0.2)
    short = stats
    for i in range(10):
        short = observe(short, Outcome("edge", False, 400.0, NOW + i * 0.01, "timeout"))
    assert short.circuit is CircuitState.CLOSED and short.consecutive_failures == 0
    assert short.error_rate == stats.error_rate and short.log_mean > stats.log_mean  # slower, not broken
    long = stats
    for i in range(5):
        long = observe(long, Outcome("edge", False, 2000.0, NOW + i * 0.01, "timeout"))
    assert long.circuit is CircuitState.OPEN


def test_the_operator_names_objectives_in_the_environment_and_a_malformed_value_is_refused(monkeypatch):
    from orchestrator.errors import ConfigError
    from orchestrator.routing.config import config_with_objectives
    from orchestrator.settings import load_settings

    monkeypatch.setenv("ROUTING_SLO_OBJECTIVES", "3000:0.99,500:0.999")
    monkeypatch.setenv("ROUTING_SLO_DEFAULT_OBJECTIVE", "0.95")
    settings = load_settings()
    config = config_with_objectives(settings.routing_slo_objectives, settings.routing_slo_default_objective)
    assert config.slo_objectives == ((500.0, 0.999), (3000.0, 0.99)) and config.slo_default_objective == 0.95
    assert slo_class(config, 400) == ("le500ms", 0.999)
    for bad in ("500=0.999", "500:1.5", "fast:0.9"):
        monkeypatch.setenv("ROUTING_SLO_OBJECTIVES", bad)
        with pytest.raises(ConfigError, match="ROUTING_SLO_OBJECTIVES"):
            load_settings()
