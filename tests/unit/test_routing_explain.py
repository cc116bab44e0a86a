"""Property: for any decision, each candidate's one-line reason states the rule that was applied
with the candidate's own numbers (never "fits" next to a p95 past the deadline)."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.routing import (
    DEFAULT_CONFIG,
    CircuitState,
    RouteRequest,
    RoutingConfig,
    SloClassStats,
    Target,
    TargetStats,
    decide,
)

NOW = 6_000_000.0
LIKELY = re.compile(
    r"^(?P<name>[^:]+): (?P<p>[\d.]+)% on time (?P<sign>>=|<) (?P<need>[\d.]+)% needed \((?P<rule>[^()]*)\); "
    r"p95 (?P<p95>-?\d+) ms (?P<fits><=|>) (?P<left>-?\d+) ms left of the (?P<sla>\d+) ms SLA"
)
ERRORS = re.compile(
    r"^(?P<name>[^:]+): error rate (?P<e>\d+)% > (?P<max>\d+)% allowed \((?P<p>[\d.]+)% on time\); p95 "
)


@st.composite
def target_stats(draw) -> TargetStats:
    samples = draw(st.floats(0.0, 20.0))
    circuit = draw(st.sampled_from(list(CircuitState)))
    return TargetStats(
        samples=samples,
        log_mean=draw(st.floats(2.0, 8.0)),
        log_var=draw(st.floats(0.0, 1.5)),
        error_rate=draw(st.floats(0.0, 0.9)),
        calls=draw(st.integers(0, 100)),
        circuit=circuit,
        circuit_until=NOW + draw(st.floats(-20.0, 20.0)),
        updated_at=NOW - draw(st.floats(0.0, 60.0)),
        in_flight=draw(st.integers(0, 12)),
        last_call_at=NOW - draw(st.floats(0.0, 30.0)),
        telemetry_up=draw(st.sampled_from([None, True, False])),
        telemetry_at=NOW - draw(st.floats(0.0, 60.0)),
    )


@st.composite
def scenes(draw):
    n = draw(st.integers(1, 5))
    targets = [
        Target(
            f"t{i}",
            draw(st.sampled_from(["edge", "cloud", "gpu"])),
            cost_per_call_usd=draw(st.sampled_from([0.0001, 0.0002, 0.001, 0.004])),
            capacity=draw(st.integers(1, 16)),
            prior_latency_ms=draw(st.floats(10.0, 2000.0)),
            enabled=draw(st.booleans()) or i == 0,
        )
        for i in range(n)
    ]
    stats = {t.name: draw(target_stats()) for t in targets}
    request = RouteRequest(
        job_id="j",
        sla_ms=draw(st.sampled_from([200.0, 300.0, 800.0, 2000.0, 10_000.0])),
        submitted_at=NOW - draw(st.floats(0.0, 3.0)),
        strict_sla=draw(st.booleans()),
        budget_usd=draw(st.sampled_from([None, 0.0005, 0.002])),
    )
    config = draw(
        st.sampled_from(
            [
                DEFAULT_CONFIG,
                RoutingConfig(slo_objectives=((500.0, 0.999), (3000.0, 0.99)), slo_default_objective=0.9),
                RoutingConfig(slo_default_objective=0.8),
            ]
        )
    )
    record = draw(st.sampled_from([None, SloClassStats(jobs=50, miss_rate=0.0), SloClassStats(jobs=30, miss_rate=0.2)]))
    return targets, stats, request, config, record, draw(st.floats(0.0, 0.999))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenes())
def test_every_candidates_reason_agrees_with_its_fields(scene):
    targets, stats, request, config, record, u = scene
    decision = decide(request, targets, stats, NOW, config, u, slo=record)
    for c in decision.candidates:
        if not c.eligible:
            assert c.reason.endswith("; skipped") and not c.meets_sla
            continue
        errors = ERRORS.match(c.reason)
        likely = LIKELY.match(c.reason)
        assert errors or likely, c.reason
        if errors:
            assert c.p_on_time >= c.on_time_needed and c.error_rate > config.max_error_rate and not c.meets_sla
            assert errors["p"] == f"{c.p_on_time * 100:.2f}"
        else:
            assert (likely["sign"] == ">=") == (c.p_on_time >= c.on_time_needed)
            assert c.meets_sla == (likely["sign"] == ">=" and c.error_rate <= config.max_error_rate)
            assert likely["p"] == f"{c.p_on_time * 100:.2f}" and likely["need"] == f"{c.on_time_needed * 100:.2f}"
            assert likely["rule"] == c.rule
            assert (likely["fits"] == "<=") == (c.predicted_p95_ms <= c.time_left_ms)
            assert likely["p95"] == f"{c.predicted_p95_ms:.0f}" and likely["left"] == f"{c.time_left_ms:.0f}"
        assert ("; failover counted" in c.reason) == c.failover_counted
        assert f"${c.cost_usd:.4f}/call" in c.reason
        assert ("over the $" in c.reason) == (not c.within_budget)
        assert ("; probing (" in c.reason) == c.probe
    chosen = decision.chosen
    if chosen is not None and not decision.sla_unmeetable and not decision.hints:
        assert (
            decision.reason
            == f"{chosen.target} chosen: cheapest target at least {chosen.on_time_needed:.2%} on time ({chosen.rule})"
        )
        assert chosen.meets_sla
