"""The pure routing policy: deadline first, then cost, then health; every decision explains itself."""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator.routing import (
    DEFAULT_CONFIG,
    CircuitState,
    Outcome,
    RouteRequest,
    Target,
    TargetStats,
    decide,
    observe,
    predict_latency,
)

EDGE = Target("edge", "edge", cost_per_call_usd=0.0002, capacity=2, prior_latency_ms=150)
CLOUD = Target("cloud", "cloud", cost_per_call_usd=0.001, capacity=64, prior_latency_ms=400)
GPU = Target("gpu", "gpu", cost_per_call_usd=0.004, capacity=8, prior_latency_ms=80)
TARGETS = [EDGE, CLOUD, GPU]
NOW = 1_000_000.0


def learned(latency_ms: float, calls: int = 20, at: float = NOW) -> TargetStats:
    stats = TargetStats()
    for i in range(calls):
        stats = observe(stats, Outcome("x", True, latency_ms, at - (calls - i) * 0.01), DEFAULT_CONFIG)
    return stats


def job(sla_ms: float = 2000, **kwargs) -> RouteRequest:
    return RouteRequest(job_id="j", sla_ms=sla_ms, submitted_at=NOW, **kwargs)


def ranked(decision) -> list[str]:
    return [c.target for c in decision.candidates]


def test_the_cheapest_target_that_fits_the_sla_is_first():
    stats = {"edge": learned(100), "cloud": learned(300), "gpu": learned(50)}
    decision = decide(job(sla_ms=2000), TARGETS, stats, NOW)
    assert ranked(decision) == ["edge", "cloud", "gpu"]
    assert decision.chosen.target == "edge" and not decision.sla_unmeetable and decision.run
    reason = decision.candidates[0].reason
    assert reason.startswith("edge: 100.00% on time >= ") and "needed (deadline first: best 100.00%" in reason
    assert "p95 184 ms <= 2000 ms left of the 2000 ms SLA" in reason and "$0.0002/call" in reason


def test_a_tight_sla_moves_the_job_to_the_target_that_can_meet_it():
    stats = {"edge": learned(400), "cloud": learned(900), "gpu": learned(50)}
    decision = decide(job(sla_ms=300), TARGETS, stats, NOW)
    assert decision.chosen.target == "gpu"
    edge = next(c for c in decision.candidates if c.target == "edge")
    assert not edge.meets_sla and " on time < " in edge.reason and "ms > 300 ms left" in edge.reason


def test_time_already_spent_in_the_queue_counts_against_the_sla():
    stats = {"edge": learned(100), "gpu": learned(20)}
    fresh = decide(job(sla_ms=500), [EDGE, GPU], stats, NOW)
    late = decide(job(sla_ms=500), [EDGE, GPU], stats, NOW + 0.4)
    assert fresh.chosen.target == "edge"
    assert late.chosen.target == "gpu"
    assert late.candidates[0].time_left_ms == pytest.approx(100, abs=1)


def test_when_nothing_fits_the_decision_says_so_and_runs_on_the_least_bad_target():
    stats = {"edge": learned(900), "cloud": learned(2000), "gpu": learned(500)}
    decision = decide(job(sla_ms=100), TARGETS, stats, NOW)
    assert decision.sla_unmeetable and decision.run
    assert decision.chosen.target == "gpu"
    assert decision.reason.startswith("sla_unmeetable:") and "least-bad target gpu" in decision.reason


def test_a_strict_sla_that_cannot_be_met_is_not_run():
    stats = {"edge": learned(900), "gpu": learned(500)}
    decision = decide(job(sla_ms=100, strict_sla=True), [EDGE, GPU], stats, NOW)
    assert decision.sla_unmeetable and not decision.run
    assert decision.chosen is None and decision.call_order == []
    assert "strict SLA requested" in decision.reason


def test_an_open_circuit_is_skipped_and_listed_last():
    open_edge = TargetStats(circuit=CircuitState.OPEN, circuit_until=NOW + 30)
    decision = decide(job(), TARGETS, {"edge": open_edge, "cloud": learned(300), "gpu": learned(50)}, NOW)
    assert ranked(decision)[-1] == "edge"
    assert [c.target for c in decision.call_order] == ["cloud", "gpu"]
    assert decision.candidates[-1].reason == "edge: circuit open for 30 s more; skipped"


def test_a_half_open_circuit_admits_a_few_probes_at_a_time():
    half = TargetStats(circuit=CircuitState.HALF_OPEN, samples=10, log_mean=4.0, log_var=0.01)
    limit = DEFAULT_CONFIG.circuit_half_open_calls
    stats = {"gpu": learned(50)}
    below = decide(job(), [EDGE, GPU], {**stats, "edge": replace(half, in_flight=limit - 1)}, NOW)
    full = decide(job(), [EDGE, GPU], {**stats, "edge": replace(half, in_flight=limit)}, NOW)
    assert below.candidates[0].target == "edge" and below.candidates[0].probe
    assert "circuit half-open" in below.candidates[0].reason
    assert all(c.target != "edge" for c in full.call_order)
    assert "its probes are in flight" in full.candidates[-1].reason


def test_with_every_circuit_open_a_few_jobs_probe_and_the_rest_are_shed():
    opened = TargetStats(circuit=CircuitState.OPEN, circuit_until=NOW + 5)
    probing = decide(job(), [EDGE], {"edge": opened}, NOW)
    assert probing.run and probing.candidates[0].probe and [c.target for c in probing.call_order] == ["edge"]
    limit = DEFAULT_CONFIG.circuit_half_open_calls
    full = decide(job(), [EDGE], {"edge": replace(opened, in_flight=limit)}, NOW)
    strict = decide(job(strict_sla=True), [EDGE], {"edge": opened}, NOW)
    off = replace(DEFAULT_CONFIG, circuit_probe_all_open=False)
    no_probe = decide(job(), [EDGE], {"edge": opened}, NOW, config=off)
    for shed in (full, strict, no_probe):
        assert not shed.run and shed.reason.startswith("no_eligible_target"), shed.reason


def test_a_preferred_tier_goes_first_but_the_job_can_still_fail_over():
    stats = {"edge": learned(100), "cloud": learned(300), "gpu": learned(50)}
    decision = decide(job(preferred_target="gpu"), TARGETS, stats, NOW)
    assert ranked(decision)[0] == "gpu" and len(decision.call_order) == 3
    assert "preferred by the submitter" in decision.candidates[0].reason


def test_a_budget_prefers_targets_within_it():
    stats = {"edge": learned(1500), "cloud": learned(150), "gpu": learned(50)}
    within = decide(job(sla_ms=1200, budget_usd=0.002), TARGETS, stats, NOW)
    assert within.chosen.target == "cloud" and not within.hints.get("over_budget")
    assert next(c for c in within.candidates if c.target == "gpu").within_budget is False
    # nothing that fits is within a $0.0005 budget: run anyway (a child's case), cheapest first, and say so
    over = decide(job(sla_ms=1200, budget_usd=0.0005), TARGETS, stats, NOW)
    assert over.chosen.target == "cloud" and over.hints.get("over_budget")
    assert "over the $0.0005 budget" in over.candidates[0].reason
    assert "over the job's budget" in over.reason


def test_load_beyond_capacity_raises_the_prediction():
    stats = learned(100)
    idle = predict_latency(EDGE, stats, NOW)
    loaded = predict_latency(EDGE, replace(stats, in_flight=5), NOW)
    assert loaded[0] > idle[0] * 2 and loaded[1] > idle[1] * 2


def test_fresh_telemetry_reporting_down_makes_a_target_ineligible_and_stale_telemetry_is_ignored():
    down = TargetStats(telemetry_up=False, telemetry_at=NOW - 1)
    stale = TargetStats(telemetry_up=False, telemetry_at=NOW - DEFAULT_CONFIG.telemetry_ttl_s - 1)
    assert not next(c for c in decide(job(), [EDGE], {"edge": down}, NOW).candidates).eligible
    assert next(c for c in decide(job(), [EDGE], {"edge": stale}, NOW).candidates).eligible


def test_probes_go_to_under_sampled_targets_in_a_bounded_share():
    stats = {"edge": learned(100), "cloud": learned(300), "gpu": TargetStats()}
    draws = [i / 1000 for i in range(1000)]
    firsts = [decide(job(), TARGETS, stats, NOW, u=u).candidates[0].target for u in draws]
    share = firsts.count("gpu") / len(firsts)
    assert share == pytest.approx(DEFAULT_CONFIG.probe_share, abs=0.01)
    probe = decide(job(), TARGETS, stats, NOW, u=0.0)
    assert probe.candidates[0].probe and "probing" in probe.candidates[0].reason


def test_the_decision_is_deterministic_and_serializable():
    stats = {"edge": learned(100), "gpu": learned(50)}
    one, two = decide(job(), [EDGE, GPU], stats, NOW, u=0.3), decide(job(), [EDGE, GPU], stats, NOW, u=0.3)
    assert one == two
    data = one.to_dict()
    assert data["chosen"] == "edge" and len(data["candidates"]) == 2
    assert set(data["candidates"][0]) >= {"target", "rank", "predicted_p95_ms", "cost_usd", "reason", "circuit"}


def test_the_routing_package_docstring_example_runs():
    import doctest

    import orchestrator.routing

    result = doctest.testmod(orchestrator.routing, verbose=False)
    assert result.attempted > 5 and result.failed == 0
