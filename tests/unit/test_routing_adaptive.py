"""Learning that adapts: the change-point test on latency residuals, the observed-tail estimate,
evidence-weighted updates after silence, and probing an open circuit when nothing else will do."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from orchestrator.routing import DEFAULT_CONFIG, CircuitState, Outcome, RouteRequest, Target, TargetStats, observe, tail
from orchestrator.routing.policy import decide, predict_latency

CFG = replace(DEFAULT_CONFIG, shift_detection=True, tail_quantile=True, evidence_weighted=True)
"""The mechanisms under test, on (they are knobs, off by default: docs/routing.md says why)."""
NOW = 1_700_000_000.0
TARGET = Target("t", "cpu", prior_latency_ms=100.0)


def feed(stats: TargetStats, latencies: list[float], start: float = NOW, config=CFG) -> TargetStats:
    for i, latency in enumerate(latencies):
        stats = observe(stats, Outcome("t", True, latency, start + i * 0.05), config)
    return stats


def lognormal(rng: random.Random, median: float, sigma: float, n: int) -> list[float]:
    return [median * math.exp(rng.gauss(0.0, sigma)) for _ in range(n)]


def calls_to_track(config, before: list[float], after: list[float], level: float) -> int:
    """Calls after the change until the learned median is within 25% of ``level``."""
    stats = feed(TargetStats(), before, config=config)
    for i, latency in enumerate(after, start=len(before)):
        stats = observe(stats, Outcome("t", True, latency, NOW + i * 0.05), config)
        if abs(stats.log_mean - math.log(level)) < math.log(1.25):
            return i - len(before) + 1
    return len(after) + 1


def test_a_level_shift_is_taken_up_within_a_few_calls_and_faster_than_the_ewma_alone():
    rng = random.Random(5)
    before, after = lognormal(rng, 100.0, 0.3, 200), lognormal(rng, 400.0, 0.3, 40)
    with_test = calls_to_track(CFG, before, after, 400.0)
    without = calls_to_track(replace(CFG, shift_detection=False), before, after, 400.0)
    assert with_test <= 5
    assert with_test < without


def test_a_recovery_is_taken_up_as_fast():
    rng = random.Random(6)
    before, after = lognormal(rng, 800.0, 0.3, 200), lognormal(rng, 100.0, 0.3, 40)
    assert calls_to_track(CFG, before, after, 100.0) <= 5


def test_a_steady_target_rarely_looks_shifted():
    """Siegmund's approximation puts the two-sided CUSUM's false alarms at about one in 470
    calls (docs: ``RoutingConfig.shift_h``); allow three times that rate."""
    rng = random.Random(7)
    stats, alarms, n = feed(TargetStats(), lognormal(rng, 100.0, 0.3, 50)), 0, 4000
    for i, latency in enumerate(lognormal(rng, 100.0, 0.3, n)):
        new = observe(stats, Outcome("t", True, latency, NOW + 10 + i * 0.05), CFG)
        alarms += new.samples < stats.samples  # an alarm resets the evidence to min_samples
        stats = new
    assert alarms <= 3 * n / 470


def pareto(rng: random.Random, scale: float, alpha: float, n: int) -> list[float]:
    return [scale * (1.0 - rng.random()) ** (-1.0 / alpha) for _ in range(n)]


def exceedances(sample: list[float], config) -> float:
    """Share of calls (after the first 300) slower than the p95 predicted just before them."""
    stats, over = TargetStats(), 0
    for i, latency in enumerate(sample):
        if i >= 300:
            over += latency > predict_latency(TARGET, stats, NOW + i * 0.05, config)[1]
        stats = observe(stats, Outcome("t", True, latency, NOW + i * 0.05), config)
    return over / (len(sample) - 300)


@pytest.mark.parametrize("alpha", [1.5, 2.5])
def test_the_predicted_p95_holds_on_a_heavy_tail(alpha):
    sample = pareto(random.Random(11), 100.0, alpha, 3000)
    observed = exceedances(sample, CFG)
    assumed = exceedances(sample, replace(CFG, tail_quantile=False))
    assert 0.03 <= observed <= 0.08
    assert abs(observed - 0.05) < abs(assumed - 0.05)


def test_a_log_normal_target_keeps_a_calibrated_p95():
    assert 0.03 <= exceedances(lognormal(random.Random(12), 100.0, 0.4, 3000), CFG) <= 0.07


def test_the_sketch_reads_the_95th_percentile_of_what_it_was_fed():
    rng = random.Random(13)
    zs = [rng.expovariate(1.2) - 0.5 for _ in range(5000)]
    counts: tuple[float, ...] = ()
    for z in zs:
        counts = tail.add(counts, z, keep=1.0)
    assert tail.quantile(counts) == pytest.approx(sorted(zs)[int(0.95 * len(zs))], abs=tail.WIDTH)
    assert tail.quantile(tail.add((), 1.0, 1.0)) == 0.0  # too little evidence


def test_after_a_silence_a_new_call_outweighs_the_decayed_evidence():
    weighted = replace(CFG, evidence_weighted=True)
    stats = feed(TargetStats(), [800.0] * 30, config=weighted)
    # a minute later (three half-lives) the evidence is worth 20 / 8 = 2.5 calls
    later = observe(stats, Outcome("t", True, 100.0, NOW + 62.0), weighted)
    share = (stats.log_mean - later.log_mean) / (stats.log_mean - math.log(100.0))
    assert share == pytest.approx(1.0 / later.samples, rel=0.05)
    plain = observe(stats, Outcome("t", True, 100.0, NOW + 62.0), replace(CFG, evidence_weighted=False))
    assert (stats.log_mean - plain.log_mean) / (stats.log_mean - math.log(100.0)) == pytest.approx(CFG.latency_alpha)


def test_a_timeout_no_slower_than_the_target_answers_does_not_move_the_breaker():
    gate = replace(CFG, circuit_timeout_plausible=True)
    rng = random.Random(14)
    queueing = feed(TargetStats(), lognormal(rng, 1500.0, 0.3, 40), config=gate)  # answers take ~1.5 s
    timeouts = [Outcome("t", False, 2000.0, NOW + 3.0 + i * 0.1, "timeout") for i in range(10)]
    slow = queueing
    for outcome in timeouts:
        slow = observe(slow, outcome, gate)
    assert slow.circuit is CircuitState.CLOSED and slow.consecutive_failures == 0
    assert slow.log_mean > queueing.log_mean  # still latency evidence
    fast = feed(TargetStats(), lognormal(rng, 50.0, 0.3, 40), config=gate)  # a 2 s timeout is a hang here
    for outcome in timeouts:
        fast = observe(fast, outcome, gate)
    assert fast.circuit is CircuitState.OPEN
    ungated = queueing
    for outcome in timeouts:
        ungated = observe(ungated, outcome, replace(CFG, circuit_timeout_plausible=False))
    assert ungated.circuit is CircuitState.OPEN


EDGE = Target("edge", "edge", cost_per_call_usd=0.0002, prior_latency_ms=80, capacity=2)
GPU = Target("gpu", "gpu", cost_per_call_usd=0.004, prior_latency_ms=60, capacity=2)


def opened(at: float) -> TargetStats:
    learned = feed(TargetStats(), [50.0] * 20, start=at - 5.0)
    return replace(learned, circuit=CircuitState.OPEN, circuit_until=at + 10.0, circuit_opened_at=at, open_count=1)


def failing(at: float) -> TargetStats:
    learned = feed(TargetStats(), [70.0] * 20, start=at - 5.0)
    return replace(learned, error_rate=0.6)


def job(**kwargs) -> RouteRequest:
    return RouteRequest(job_id="j", sla_ms=300, submitted_at=NOW, **kwargs)


def test_an_open_circuit_is_probed_only_when_every_admitted_target_is_unlikely_on_time():
    stats = {"gpu": opened(NOW - 1.0), "edge": failing(NOW)}
    decision = decide(job(), [EDGE, GPU], stats, NOW)
    assert decision.chosen.target == "gpu" and decision.candidates[0].probe
    assert "circuit open" in decision.reason  # it would meet the SLA itself, so the SLA is not unmeetable
    assert not decision.sla_unmeetable and decision.candidates[0].meets_sla
    assert [c.target for c in decision.call_order] == ["gpu", "edge"]
    healthy = {**stats, "edge": feed(TargetStats(), [70.0] * 20, start=NOW - 5.0)}
    assert [c.target for c in decide(job(), [EDGE, GPU], healthy, NOW).call_order] == ["edge"]
    assert decide(job(strict_sla=True), [EDGE, GPU], stats, NOW).call_order == []
    busy = {**stats, "gpu": replace(stats["gpu"], in_flight=CFG.circuit_half_open_calls)}
    assert [c.target for c in decide(job(), [EDGE, GPU], busy, NOW).call_order] == ["edge"]
    off = replace(CFG, circuit_open_probe=False)
    assert [c.target for c in decide(job(), [EDGE, GPU], stats, NOW, off).call_order] == ["edge"]


def test_a_success_of_a_call_made_while_open_closes_the_circuit_and_a_straggler_does_not():
    stats = opened(NOW)
    straggler = observe(stats, Outcome("gpu", True, 400.0, NOW + 0.2), CFG)  # started before it opened
    assert straggler.circuit is CircuitState.OPEN
    probe = observe(stats, Outcome("gpu", True, 50.0, NOW + 2.0), CFG)
    assert probe.circuit is CircuitState.CLOSED and probe.circuit_until == 0.0
    failed = observe(stats, Outcome("gpu", False, 2000.0, NOW + 3.0, "connect_error"), CFG)
    assert failed.circuit is CircuitState.OPEN and failed.circuit_until == stats.circuit_until


def test_with_every_circuit_open_a_job_probes_the_soonest_to_reopen_unless_told_to_shed():
    stats = {"gpu": opened(NOW - 1.0), "edge": replace(opened(NOW - 2.0), circuit_until=NOW + 30.0)}
    probing = decide(job(), [EDGE, GPU], stats, NOW)
    assert probing.run and [c.target for c in probing.call_order] == ["gpu"]
    assert probing.candidates[0].probe
    assert not decide(job(), [EDGE, GPU], stats, NOW, replace(CFG, circuit_probe_all_open=False)).run
