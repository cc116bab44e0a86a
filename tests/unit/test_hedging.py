"""Hedged requests, the pure part: when and where a backup call goes, and the shared budget."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from orchestrator.routing import (
    DEFAULT_CONFIG,
    HedgeBudget,
    Outcome,
    RedisHedgeBudget,
    RouteRequest,
    RoutingConfig,
    Target,
    TargetStats,
    decide,
    hedge_plan,
    observe,
)

NOW = 3_000_000.0
EDGE = Target("edge", "edge", cost_per_call_usd=0.0002, capacity=2, prior_latency_ms=120)
CLOUD = Target("cloud", "cloud", cost_per_call_usd=0.001, capacity=64, prior_latency_ms=350)
GPU = Target("gpu", "gpu", cost_per_call_usd=0.004, capacity=8, prior_latency_ms=60)


def learned(latency_ms: float) -> TargetStats:
    stats = TargetStats()
    for i in range(30):
        stats = observe(stats, Outcome("x", True, latency_ms * (1.3 if i % 2 else 0.77), NOW - 1 + i * 0.01))
    return stats


STATS = {"edge": learned(120.0), "cloud": learned(350.0), "gpu": learned(60.0)}
SAVING = RoutingConfig(slo_objectives=((500.0, 0.99),))
"""An operator objective of 99% for tight jobs: the edge box (~99.7% on time) may take them.
(Deadline first, the default, gives them to the GPU, which is a little likelier still.)"""


def plan_for(sla_ms: float, targets=(EDGE, CLOUD, GPU), stats=STATS, config=SAVING, **kwargs):
    request = RouteRequest(job_id="h", sla_ms=sla_ms, submitted_at=NOW, **kwargs)
    decision = decide(request, list(targets), stats, NOW, config)
    return decision, hedge_plan(decision, request, config)


def test_a_tight_job_is_hedged_at_its_first_calls_p95_to_a_backup_that_still_fits():
    decision, plan = plan_for(300)
    primary = decision.call_order[0]
    assert primary.target == "edge"
    assert plan is not None and plan.backup == "gpu"
    assert plan.delay_s * 1000 == pytest.approx(primary.predicted_p95_ms)
    gpu = next(c for c in decision.candidates if c.target == "gpu")
    assert plan.delay_s * 1000 + gpu.predicted_p50_ms <= 300  # the backup most likely makes it
    assert "by its p95" in plan.reason


def test_a_lax_job_is_hedged_only_when_its_deadline_comes_close():
    decision, plan = plan_for(10_000)
    backup = next(c for c in decision.candidates if c.target == plan.backup)
    assert plan.delay_s == pytest.approx((10_000 - DEFAULT_CONFIG.hedge_backup_margin * backup.predicted_p95_ms) / 1000)
    assert plan.delay_s > 9.0 and "deadline-bound" in plan.reason


def test_the_backup_is_the_cheapest_other_target_that_fits_after_the_trigger():
    decision, plan = plan_for(2000)
    assert decision.call_order[0].target == "edge" and plan.backup == "cloud"


def test_no_hedge_when_no_backup_could_answer_in_time():
    slow = {"edge": learned(120.0), "cloud": learned(900.0)}
    _, plan = plan_for(300, targets=(EDGE, CLOUD), stats=slow)
    assert plan is None


def test_no_hedge_with_a_single_target():
    assert plan_for(2000, targets=(EDGE,), stats={"edge": STATS["edge"]})[1] is None


def test_a_hedge_never_takes_the_job_over_its_budget():
    _, within = plan_for(300, budget_usd=0.005)
    _, tight = plan_for(300, budget_usd=0.002)
    assert within is not None and within.backup == "gpu"
    assert tight is None  # edge + gpu would cost $0.0042; cloud cannot answer in time


def test_with_no_traffic_there_is_no_hedge_budget():
    assert not HedgeBudget(max_share=0.1).try_acquire(NOW)


def test_hedges_stay_within_their_share_of_calls():
    budget = HedgeBudget(max_share=0.1, window_s=60)
    admitted = 0
    for i in range(200):
        t = NOW + i * 0.1
        budget.note_call(t)
        if budget.try_acquire(t):
            admitted += 1
            budget.note_call(t)  # the hedge is a call too
    calls, hedges = budget.usage(NOW + 19.9)
    assert hedges == admitted and admitted >= 15 and hedges <= 0.1 * calls


def test_the_budget_window_slides():
    budget = HedgeBudget(max_share=0.5, window_s=10)
    for _ in range(10):
        budget.note_call(NOW)
    assert budget.usage(NOW + 5) == (10, 0)
    assert budget.usage(NOW + 10.5) == (0, 0)
    assert not budget.try_acquire(NOW + 10.5)


def test_the_redis_budget_is_shared_by_every_worker(fake_redis):
    one, two = RedisHedgeBudget(fake_redis, 0.25), RedisHedgeBudget(fake_redis, 0.25)
    for _ in range(3):
        one.note_call(NOW)
    assert two.try_acquire(NOW)  # 1 hedge of 4 calls
    two.note_call(NOW)
    assert not one.try_acquire(NOW)  # a second would be 2 of 5
    assert one.usage(NOW) == (4, 1)


def test_the_redis_budget_forgets_calls_outside_its_window(fake_redis):
    budget = RedisHedgeBudget(fake_redis, 0.5, window_s=10)
    for _ in range(10):
        budget.note_call(NOW)
    assert budget.usage(NOW + 11) == (0, 0)
    assert not budget.try_acquire(NOW + 11)
    assert len(fake_redis.hgetall("pedi:hedge:calls")) == 0  # stale buckets are cleaned up


@pytest.mark.redis
def test_racing_workers_never_exceed_the_shared_budget(redis_url):
    connection = redis.Redis.from_url(redis_url)
    budget = RedisHedgeBudget(connection, 0.1)
    now = time.time()
    for _ in range(100):
        budget.note_call(now)
    admitted = []

    def worker() -> None:
        mine = RedisHedgeBudget(redis.Redis.from_url(redis_url), 0.1)
        admitted.extend(ok for ok in (mine.try_acquire(now) for _ in range(5)) if ok)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 1 <= len(admitted) <= 10  # 10% of 100 calls (hedges were not made as calls here)
    assert budget.usage(now)[1] == len(admitted)
