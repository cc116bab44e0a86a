"""Queue-wait calibration (``capacity_learning``): the router learns a target's effective
capacity from each answered call's latency against the calls in flight when it started, so its
predicted queue wait follows the real one when the catalogue's slot count is wrong."""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import replace

from orchestrator.routing import learning
from orchestrator.routing.config import DEFAULT_CONFIG
from orchestrator.routing.latency import model
from orchestrator.routing.types import Outcome, Target, TargetStats

ON = replace(DEFAULT_CONFIG, capacity_learning=True)
MEDIAN_MS = 100.0
SIGMA = 0.4


def _serve(
    true_slots: int, told_slots: int, utilization: float, calls: int, seed: int = 1, waits: dict | None = None
) -> TargetStats:
    """``calls`` Poisson arrivals (at ``utilization`` of the true throughput) at a FIFO server
    with ``true_slots`` slots and log-normal service; every outcome is folded in with the calls
    in flight when it started. Returns the learned stats."""
    rng = random.Random(seed)
    mean_s = MEDIAN_MS * math.exp(SIGMA**2 / 2) / 1000.0
    rate = utilization * true_slots / mean_s
    slots = [0.0] * true_slots
    ends: list[float] = []  # when each call in flight ends (as the client sees it)
    stats, now, pending = TargetStats(), 0.0, []
    for _ in range(calls):
        now += rng.expovariate(rate)
        while ends and ends[0] <= now:
            heapq.heappop(ends)
        busy = len(ends)
        start = max(now, slots[0])
        end = start + MEDIAN_MS * math.exp(SIGMA * rng.gauss(0, 1)) / 1000.0
        heapq.heapreplace(slots, end)
        if waits is not None:
            waits.setdefault(busy, []).append((start - now) * 1000.0)
        heapq.heappush(ends, end)
        pending.append((end, Outcome("t", True, (end - now) * 1000.0, end, in_flight=busy, capacity=told_slots)))
        # Outcomes are learned when their calls end, in that order.
        pending.sort(key=lambda item: item[0])
        while pending and pending[0][0] <= now:
            stats = learning.observe(stats, pending.pop(0)[1], ON)
    for _, outcome in pending:
        stats = learning.observe(stats, outcome, ON)
    return stats


def _wait_ms(told_slots: int, stats: TargetStats, busy: int) -> float:
    target = Target("t", "edge", capacity=told_slots, prior_latency_ms=MEDIAN_MS)
    return model(target, replace(stats, in_flight=busy), 20.0, stats.updated_at, ON).wait_ms


def _measured_wait_ms(waits: dict[int, list[float]], busy: int) -> float:
    """The mean wait the simulated server really gave calls that found ``busy`` in flight."""
    return sum(waits[busy]) / len(waits[busy])


def test_catalogue_quadrupling_the_slots_is_corrected():
    """Told 8 slots, really 2, at 80% load: the catalogue predicts no wait up to 7 calls in
    flight; after 2,000 calls the predicted wait with 4 and with 6 in flight is within 20% of
    what the server really gave such calls."""
    for seed in (1, 2, 3):
        waits: dict[int, list[float]] = {}
        stats = _serve(true_slots=2, told_slots=8, utilization=0.8, calls=2000, seed=seed, waits=waits)
        assert 1.5 <= learning.effective_capacity(8, stats, ON) <= 2.7
        for busy in (4, 6):
            assert _wait_ms(8, replace(stats, capacity_log_ratio=0.0), busy) == 0.0
            measured = _measured_wait_ms(waits, busy)
            assert abs(_wait_ms(8, stats, busy) - measured) <= 0.2 * measured, (seed, busy)


def test_catalogue_halving_the_slots_is_corrected():
    """Told 2 slots, really 4, at 90% load: the catalogue predicts 2.5 service times of wait with
    6 in flight, the server gives well under one; the learned wait is within 25% of it."""
    for seed in (1, 2, 3):
        waits: dict[int, list[float]] = {}
        stats = _serve(true_slots=4, told_slots=2, utilization=0.9, calls=3000, seed=seed, waits=waits)
        measured = _measured_wait_ms(waits, 6)
        assert _wait_ms(2, replace(stats, capacity_log_ratio=0.0), 6) > 2.0 * measured
        assert abs(_wait_ms(2, stats, 6) - measured) <= 0.25 * measured, seed


def test_right_catalogue_does_not_drift():
    """Told the truth (4 slots): at 90% load (calls often queue) the learned capacity stays
    within 4 +- 25%; at 50% load (calls rarely queue, so little evidence either way) within
    3-6.5, and it never predicts a wait with fewer calls in flight than slots."""
    for seed in (1, 2, 3):
        busy = _serve(true_slots=4, told_slots=4, utilization=0.9, calls=3000, seed=seed)
        assert 3.0 <= learning.effective_capacity(4, busy, ON) <= 5.0, seed
        light = _serve(true_slots=4, told_slots=4, utilization=0.5, calls=3000, seed=seed)
        assert 3.0 <= learning.effective_capacity(4, light, ON) <= 6.5, seed
        assert _wait_ms(4, light, 2) == 0.0


def test_catalogue_too_small_is_not_believed_forever():
    """Told 1 slot, really 8, at 60% load (about 5 calls in flight): the catalogue predicts a
    wait of ~4 service times with 4 in flight; after 2,000 calls the prediction is under a
    quarter of a service time (the truth: none)."""
    stats = _serve(true_slots=8, told_slots=1, utilization=0.6, calls=2000)
    mean_ms = MEDIAN_MS * math.exp(SIGMA**2 / 2)
    assert _wait_ms(1, replace(stats, capacity_log_ratio=0.0), 4) > 3.0 * mean_ms
    assert _wait_ms(1, stats, 4) < 0.25 * mean_ms
    assert learning.effective_capacity(1, stats, ON) >= 4.0


def test_light_load_keeps_the_catalogue():
    """A target never near its capacity teaches nothing about it: told 16 (really 16) at 10%
    load, the learned capacity is exactly the catalogue's."""
    stats = _serve(true_slots=16, told_slots=16, utilization=0.1, calls=1000)
    assert stats.service_ref_ms > 0.0
    assert stats.capacity_log_ratio == 0.0


def test_bounded_and_off_by_config():
    """Learned capacity stays within capacity_max_ratio of the catalogue and at least one slot;
    with capacity_learning off, outcomes leave it alone and the catalogue is used."""
    stats = TargetStats(service_ref_ms=100.0, service_ref_calls=20.0)
    for _ in range(500):
        stats = learning.fold_capacity(stats, 10_000.0, in_flight=30, capacity=4, config=ON)
    assert learning.effective_capacity(4, stats, ON) == 1.0
    for _ in range(500):
        stats = learning.fold_capacity(stats, 1.0, in_flight=60, capacity=4, config=ON)
    assert math.isclose(learning.effective_capacity(4, stats, ON), 4 * ON.capacity_max_ratio)
    off = replace(ON, capacity_learning=False)
    assert learning.effective_capacity(4, stats, off) == 4.0
    same = learning.observe(TargetStats(), Outcome("t", True, 100.0, 1.0, in_flight=0, capacity=4), off)
    assert same.service_ref_ms == 0.0


def test_outcomes_without_the_count_teach_nothing():
    """An Outcome from an older worker (no in_flight) folds in exactly as before."""
    plain = Outcome("t", True, 120.0, 1.0)
    assert plain.in_flight is None and plain.capacity is None
    stats = learning.observe(TargetStats(), plain, ON)
    assert stats.service_ref_ms == 0.0 and stats.capacity_log_ratio == 0.0


def test_round_trips_through_the_store_format():
    stats = TargetStats(service_ref_ms=123.5, capacity_log_ratio=-1.2)
    assert TargetStats.from_dict(stats.to_dict()) == stats


def test_the_simulator_reports_the_count_with_a_jobs_first_call_only():
    """``OurRouterPolicy`` reports, as the worker does, the calls in flight on the target when a
    job's first call started (and the catalogue's capacity); a failover made later reports None."""
    from bench.sim_engine import CallOutcome
    from bench.sim_router import OurRouterPolicy
    from bench.sim_scenarios import Job

    ours = OurRouterPolicy(random.Random(1), ON, hedging=False)
    seen: list[Outcome] = []
    ours.router.record = seen.append
    name = ours.plan(Job(0, 0.0, 10_000.0, None), 0.0).order[0]
    first = ours.call_started(name, 0.0)
    ours.plan(Job(1, 0.1, 10_000.0, None), 0.1)
    second = ours.call_started(name, 0.1)
    failover = ours.call_started(name, 0.2)  # no plan since: a failover or a hedge
    for token, at in ((first, 1.0), (second, 1.1), (failover, 1.2)):
        ours.call_ended(name, token, CallOutcome(name, True, 100.0, at, None, 0.0))
    capacity = next(t.capacity for t in ours.targets if t.name == name)
    assert [(o.in_flight, o.capacity) for o in seen] == [(0, capacity), (1, capacity), (None, None)]


def test_the_worker_reports_the_count_with_a_jobs_first_call(sqlite_engine, fake_redis):
    """The worker's first call of a job carries the decision's count of calls in flight and the
    catalogue's capacity: with nothing else in flight, its latency becomes the queue-free
    service time of the target that answered."""
    from tests.unit.test_worker_logic import ScriptedClient, execute, make_runtime, submit

    runtime = make_runtime(sqlite_engine, fake_redis, ScriptedClient())
    seen: list[Outcome] = []
    record = runtime.router.record
    runtime.router.record = lambda outcome: (seen.append(outcome), record(outcome))[1]
    execute(runtime, submit(sqlite_engine))
    assert len(seen) == 1
    assert seen[0].in_flight == 0
    assert seen[0].capacity == next(t.capacity for t in runtime.static_targets if t.name == seen[0].target)
