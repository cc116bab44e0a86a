"""Scoring details of the policy: on-time probability with failover, queue waits, slot
reservation, stalled calls, and probing of stale targets."""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator.routing import (
    DEFAULT_CONFIG,
    Outcome,
    RouteRequest,
    Target,
    TargetStats,
    decide,
    observe,
    predict_latency,
)

NOW = 2_000_000.0
CHEAP = Target("cheap", "edge", cost_per_call_usd=0.0002, capacity=2, prior_latency_ms=100)
MID = Target("mid", "cloud", cost_per_call_usd=0.001, capacity=64, prior_latency_ms=300)
PRICEY = Target("pricey", "gpu", cost_per_call_usd=0.004, capacity=8, prior_latency_ms=60)


def learned(latency_ms: float, calls: int = 30, at: float = NOW, failures_every: int = 0) -> TargetStats:
    stats = TargetStats()
    for i in range(calls):
        when = at - (calls - i) * 0.01
        failed = failures_every and i % failures_every == 0
        outcome = Outcome("x", False, latency_ms, when, "http_5xx") if failed else Outcome("x", True, latency_ms, when)
        stats = observe(stats, outcome)
    return stats


def job(sla_ms: float, **kwargs) -> RouteRequest:
    return RouteRequest(job_id="j", sla_ms=sla_ms, submitted_at=NOW, **kwargs)


def candidate(decision, name: str):
    return next(c for c in decision.candidates if c.target == name)


def test_errors_count_against_a_tight_job_but_failover_covers_a_lax_one():
    flaky = replace(learned(100.0), error_rate=0.3)
    stats = {"cheap": flaky, "pricey": learned(400.0)}
    lax = decide(job(10_000), [CHEAP, PRICEY], stats, NOW)
    tight = decide(job(250), [CHEAP, PRICEY], stats, NOW)
    assert lax.chosen.target == "cheap" and candidate(lax, "cheap").p_on_time > 0.99
    # after an error at ~100 ms there are ~150 ms left, and the backup needs ~400 ms
    assert candidate(tight, "cheap").p_on_time == pytest.approx(0.7, abs=0.02)
    assert not candidate(tight, "cheap").meets_sla
    assert "70.12% on time < 90.00% needed" in candidate(tight, "cheap").reason
    assert "failover counted" in candidate(tight, "cheap").reason


def test_calls_beyond_capacity_add_a_queue_wait_to_the_prediction():
    stats = learned(100.0)
    idle_p50, idle_p95 = predict_latency(CHEAP, replace(stats, in_flight=CHEAP.capacity - 1), NOW)
    busy_p50, busy_p95 = predict_latency(CHEAP, replace(stats, in_flight=CHEAP.capacity + 3), NOW)
    # four departures ahead, each ~mean service / 2 slots
    assert busy_p50 - idle_p50 == pytest.approx(4 * 100.0 / 2, rel=0.1)
    assert busy_p95 - idle_p95 == pytest.approx(busy_p50 - idle_p50, rel=1e-6)
    decision = decide(job(2000), [CHEAP], {"cheap": replace(stats, in_flight=5)}, NOW)
    assert decision.candidates[0].queue_wait_ms > 150 and "queue (5 in flight)" in decision.candidates[0].reason


def test_a_job_does_not_queue_behind_a_busy_cheap_target_if_a_free_one_meets_at_a_modest_price():
    busy_cheap = replace(learned(100.0), in_flight=CHEAP.capacity + 1)
    with_mid = decide(job(2000), [CHEAP, MID], {"cheap": busy_cheap, "mid": learned(300.0)}, NOW)
    assert with_mid.chosen.target == "mid"
    assert candidate(with_mid, "cheap").meets_sla  # it would make it, but would hold up others
    # the only free alternative costs 20x: waiting is worth it
    with_pricey = decide(job(2000), [CHEAP, PRICEY], {"cheap": busy_cheap, "pricey": learned(60.0)}, NOW)
    assert with_pricey.chosen.target == "cheap"


def test_a_call_running_far_past_the_p95_raises_the_prediction_at_once():
    stats = learned(100.0, at=NOW - 3.0)  # the last call ended 3 s ago
    _, normal_p95 = predict_latency(CHEAP, stats, NOW)
    hung = replace(stats, in_flight=1, oldest_in_flight_at=NOW - 2.0)
    hung_p50, hung_p95 = predict_latency(CHEAP, hung, NOW)
    # its age becomes the model's 99.9th percentile: no longer an outlier
    assert hung_p95 > 5 * normal_p95 and hung_p50 < 2000.0 < 3 * hung_p95
    tight = decide(job(300), [CHEAP, PRICEY], {"cheap": hung, "pricey": learned(60.0)}, NOW)
    assert tight.chosen.target == "pricey"


def test_a_straggler_is_no_alarm_when_later_calls_have_come_back():
    stats = learned(100.0)  # calls ended until just now
    straggler = replace(stats, in_flight=1, oldest_in_flight_at=NOW - 2.0)
    assert predict_latency(CHEAP, straggler, NOW) == pytest.approx(predict_latency(CHEAP, stats, NOW))


def test_one_slow_call_among_many_is_no_alarm():
    stats = learned(300.0, at=NOW - 2.0)
    _, p95 = predict_latency(MID, stats, NOW)
    busy = replace(stats, in_flight=30, oldest_in_flight_at=NOW - 1.2 * p95 / 1000.0)
    assert predict_latency(MID, busy, NOW)[1] == pytest.approx(p95)


def test_the_stall_check_can_be_switched_off():
    hung = replace(learned(100.0, at=NOW - 3.0), in_flight=1, oldest_in_flight_at=NOW - 2.0)
    config = replace(DEFAULT_CONFIG, stall_detection=False)
    assert predict_latency(CHEAP, hung, NOW, config)[1] < 500


def test_a_target_nobody_called_lately_is_probed_in_a_bounded_share_of_jobs_that_can_afford_it():
    stale = learned(300.0, at=NOW - 20)  # 20 s without a call: stale, with evidence left
    stats = {"cheap": learned(100.0), "mid": stale, "pricey": learned(60.0)}
    targets = [PRICEY, MID, CHEAP]
    draws = [i / 1000 for i in range(1000)]
    # a 300 ms job cannot afford a failed probe of a ~300 ms target: it is never probed
    assert all(not decide(job(300), targets, stats, NOW, u=u).candidates[0].probe for u in draws[::25])
    firsts = [decide(job(10_000), targets, stats, NOW, u=u).candidates[0] for u in draws]
    assert {c.target for c in firsts if not c.probe} == {"cheap"}
    probes = [c for c in firsts if c.probe]
    assert len(probes) / len(draws) == pytest.approx(DEFAULT_CONFIG.probe_share, abs=0.01)
    assert {c.target for c in probes} == {"mid"} and "not called recently" in probes[0].reason


def test_a_strict_job_is_never_used_to_probe_a_target_that_may_miss():
    new = TargetStats()
    stats = {"pricey": learned(60.0), "mid": new}
    for u in (0.0, 0.01, 0.04):
        decision = decide(job(400, strict_sla=True), [PRICEY, MID], stats, NOW, u=u)
        assert decision.candidates[0].target == "pricey"


def test_a_recovered_target_wins_its_traffic_back_through_probes():
    """The cheap target was slow; it is fast again. Probes of lax jobs show it, and within a
    few of them it is first choice again."""
    slow = learned(3000.0, at=NOW - 15)
    stats = {"cheap": slow, "pricey": learned(60.0)}
    assert decide(job(2000), [CHEAP, PRICEY], stats, NOW).chosen.target == "pricey"
    t = NOW
    for _ in range(10):
        t += 0.5
        probe = decide(job(10_000), [CHEAP, PRICEY], stats, t, u=0.0).candidates[0]
        assert probe.target == "cheap"
        stats["cheap"] = observe(stats["cheap"], Outcome("cheap", True, 90.0, t + 0.09))
        fresh = RouteRequest(job_id="k", sla_ms=2000, submitted_at=t + 0.1)
        if decide(fresh, [CHEAP, PRICEY], stats, t + 0.1).chosen.target == "cheap":
            break
    else:
        pytest.fail("ten fast probes did not win the cheap target its traffic back")
