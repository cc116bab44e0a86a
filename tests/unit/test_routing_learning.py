"""The pure learning step: latency model, error rate, decay and the circuit breaker."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from orchestrator.routing import DEFAULT_CONFIG, CircuitState, Outcome, TargetStats, at_time, observe

CFG = DEFAULT_CONFIG
DEFAULT_ON_TIME = CFG.on_time_target


def feed(stats: TargetStats, outcomes: list[Outcome]) -> TargetStats:
    for outcome in outcomes:
        stats = observe(stats, outcome, CFG)
    return stats


def ok(latency: float, at: float, target: str = "t") -> Outcome:
    return Outcome(target, True, latency, at)


def fail(at: float, kind: str = "http_5xx", latency: float = 5.0) -> Outcome:
    return Outcome("t", False, latency, at, kind)


def test_the_latency_estimate_converges_to_what_is_observed():
    stats = feed(TargetStats(), [ok(100.0, t * 0.1) for t in range(50)])
    assert math.exp(stats.log_mean) == pytest.approx(100.0, rel=0.01)
    assert stats.samples == CFG.sample_cap
    assert stats.error_rate == 0.0


def test_a_slowdown_shows_within_a_few_calls():
    stats = feed(TargetStats(), [ok(100.0, t * 0.1) for t in range(30)])
    slowed = feed(stats, [ok(1000.0, 3.0 + t * 0.1) for t in range(5)])
    assert math.exp(slowed.log_mean) > 400


def test_a_stray_error_of_a_healthy_target_moves_its_error_rate_by_little():
    healthy = feed(TargetStats(), [ok(100.0, t * 0.1) for t in range(50)])
    after = observe(healthy, fail(5.1), CFG)
    assert after.error_rate == pytest.approx(CFG.error_alpha)
    assert after.error_rate < 1 - DEFAULT_ON_TIME


def test_a_timeout_counts_as_a_slow_observation_but_a_refused_connection_does_not():
    base = feed(TargetStats(), [ok(100.0, t * 0.1) for t in range(20)])
    after_timeout = observe(base, fail(2.1, "timeout", latency=2000.0), CFG)
    after_refused = observe(base, fail(2.1, "connect_error", latency=1.0), CFG)
    assert after_timeout.log_mean > base.log_mean
    assert after_refused.log_mean == base.log_mean
    assert after_refused.error_rate > base.error_rate


def test_a_cancelled_hedge_loser_teaches_nothing():
    base = feed(TargetStats(), [ok(100.0, 0.0)])
    assert observe(base, Outcome("t", False, 50.0, 1.0, "cancelled"), CFG) == base


def test_evidence_and_errors_decay_with_the_documented_half_life():
    stats = feed(TargetStats(), [fail(0.0), fail(0.1)])
    later = at_time(stats, stats.updated_at + CFG.decay_half_life_s, CFG)
    assert later.error_rate == pytest.approx(stats.error_rate / 2)
    assert later.samples == pytest.approx(stats.samples / 2)


def test_the_circuit_opens_after_consecutive_failures_and_half_opens_after_its_period():
    stats = feed(TargetStats(), [fail(t * 0.01) for t in range(CFG.circuit_consecutive_failures)])
    assert stats.circuit is CircuitState.OPEN
    assert stats.circuit_until == pytest.approx(0.04 + CFG.circuit_base_open_s)
    assert at_time(stats, stats.circuit_until - 0.1, CFG).circuit is CircuitState.OPEN
    assert at_time(stats, stats.circuit_until, CFG).circuit is CircuitState.HALF_OPEN


def test_one_failure_short_of_the_threshold_keeps_the_circuit_closed():
    stats = feed(TargetStats(), [fail(t * 0.01) for t in range(CFG.circuit_consecutive_failures - 1)])
    assert stats.circuit is CircuitState.CLOSED


def test_a_half_open_success_closes_the_circuit_and_a_failure_reopens_it_for_twice_as_long():
    opened = feed(TargetStats(), [fail(t * 0.01) for t in range(CFG.circuit_consecutive_failures)])
    probe_at = opened.circuit_until + 1
    assert observe(opened, ok(80.0, probe_at), CFG).circuit is CircuitState.CLOSED
    reopened = observe(opened, fail(probe_at), CFG)
    assert reopened.circuit is CircuitState.OPEN
    assert reopened.circuit_until - probe_at == pytest.approx(2 * CFG.circuit_base_open_s)


def test_a_circuit_can_be_made_to_need_several_half_open_successes():
    careful = replace(CFG, circuit_close_successes=3)
    opened = feed(TargetStats(), [fail(t * 0.01) for t in range(careful.circuit_consecutive_failures)])
    probe_at = opened.circuit_until + 1
    states = []
    stats = opened
    for i in range(3):
        stats = observe(stats, ok(80.0, probe_at + i * 0.1), careful)
        states.append(stats.circuit)
    assert states == [CircuitState.HALF_OPEN, CircuitState.HALF_OPEN, CircuitState.CLOSED]
    assert observe(observe(opened, ok(80.0, probe_at), careful), fail(probe_at + 1), careful).circuit is (
        CircuitState.OPEN
    )


def test_closing_the_circuit_starts_learning_afresh_from_the_probes():
    slow_then_dead = feed(TargetStats(), [ok(2000.0, t * 0.1) for t in range(20)])
    opened = feed(slow_then_dead, [fail(2.0 + t * 0.01) for t in range(CFG.circuit_consecutive_failures)])
    probe_at = opened.circuit_until + 1
    closed = feed(opened, [ok(90.0, probe_at + i * 0.1) for i in range(CFG.circuit_close_successes)])
    assert closed.circuit is CircuitState.CLOSED
    assert closed.error_rate == 0.0 and closed.samples <= 1.0
    assert math.exp(closed.log_mean) == pytest.approx(90.0, rel=0.01)


def test_every_outcome_that_teaches_something_marks_when_the_target_was_last_called():
    stats = feed(TargetStats(), [ok(100.0, 5.0), fail(7.5)])
    assert stats.last_call_at == 7.5
    assert observe(stats, Outcome("t", False, 10.0, 9.0, "cancelled"), CFG).last_call_at == 7.5


def test_the_open_period_is_capped():
    stats = TargetStats(circuit=CircuitState.HALF_OPEN, open_count=20)
    reopened = observe(stats, fail(100.0), CFG)
    assert reopened.circuit_until - 100.0 == CFG.circuit_max_open_s


def test_an_error_rate_over_the_threshold_opens_the_circuit_without_consecutive_failures():
    # two failures in every three calls: never five in a row, but a 67% error rate
    outcomes = [fail(t * 0.01) if t % 3 else ok(50.0, t * 0.01) for t in range(150)]
    stats = feed(TargetStats(), outcomes)
    assert max_consecutive_failures(outcomes) < CFG.circuit_consecutive_failures
    assert stats.open_count >= 1


def max_consecutive_failures(outcomes: list[Outcome]) -> int:
    longest = run = 0
    for outcome in outcomes:
        run = 0 if outcome.ok else run + 1
        longest = max(longest, run)
    return longest
