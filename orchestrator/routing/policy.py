"""The routing policy: a pure function from (job, targets, stats, time) to a ranked Decision.

No I/O and no clock: ``now`` and the random draw ``u`` are arguments, so the worker, the dry-run
endpoint, the tests and the simulator all run this exact code.

Order of concerns, for targets whose circuit admits a call:
1. meet the deadline: predicted p95 (with a load penalty) fits the time left, error rate sane;
2. then cost: cheapest first, within the job's budget before over it;
3. then health: fewer errors, then lower p95.
Targets that cannot meet the deadline follow, least bad (lowest p95 per success) first;
targets whose circuit is open come last and are never called.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from orchestrator.routing.config import DEFAULT_CONFIG, RoutingConfig
from orchestrator.routing.learning import at_time
from orchestrator.routing.types import Candidate, CircuitState, Decision, RouteRequest, Target, TargetStats

_EMPTY = TargetStats()


@dataclass(slots=True)
class _View:
    target: Target
    stats: TargetStats
    p50: float
    p95: float
    eligible: bool
    skip_reason: str
    meets: bool
    within_budget: bool
    probe: bool


def predict_latency(
    target: Target, stats: TargetStats, now: float, config: RoutingConfig = DEFAULT_CONFIG
) -> tuple[float, float]:
    """Predicted (p50, p95) latency in ms of one more call to ``target`` right now.

    The log-normal model blends the target's prior with observed moments by the weight of the
    evidence, blends in fresh pushed telemetry, then scales by a queueing penalty when the calls
    in flight (plus reported queue depth) exceed the target's capacity.
    """
    prior_mu = math.log(max(target.prior_latency_ms, 0.1))
    weight = stats.samples / (stats.samples + config.prior_weight)
    mu = weight * stats.log_mean + (1.0 - weight) * prior_mu
    var = weight * stats.log_var + (1.0 - weight) * config.prior_sigma**2
    fresh = stats.telemetry_at and now - stats.telemetry_at <= config.telemetry_ttl_s
    if fresh and stats.telemetry_latency_ms:
        tw = config.telemetry_weight
        mu = (1.0 - tw) * mu + tw * math.log(max(stats.telemetry_latency_ms, 0.1))
    sigma = min(max(math.sqrt(var), config.min_sigma), config.max_sigma)
    capacity = max(target.capacity, 1)
    waiting = stats.in_flight + 1 - capacity
    if fresh and stats.telemetry_queue_depth:
        waiting += stats.telemetry_queue_depth
    factor = 1.0 + waiting / capacity if waiting > 0 else 1.0
    if fresh and stats.telemetry_utilization is not None and stats.telemetry_utilization > 0.8:
        factor *= 1.0 + (min(stats.telemetry_utilization, 1.0) - 0.8) * 2.5
    median = math.exp(mu) * factor
    return median, median * math.exp(config.p95_z * sigma)


def _eligibility(target: Target, stats: TargetStats, now: float, config: RoutingConfig) -> tuple[bool, str]:
    if not target.enabled:
        return False, "disabled"
    if stats.circuit is CircuitState.OPEN:
        return False, f"circuit open for {max(stats.circuit_until - now, 0):.0f} s more"
    if stats.circuit is CircuitState.HALF_OPEN and stats.in_flight >= config.probe_max_in_flight:
        return False, "circuit half-open, its probe is in flight"
    fresh = stats.telemetry_at and now - stats.telemetry_at <= config.telemetry_ttl_s
    if fresh and stats.telemetry_up is False:
        return False, "reported down by telemetry"
    return True, ""


def _view(
    target: Target, raw: TargetStats, request: RouteRequest, time_left: float, now: float, config: RoutingConfig
) -> _View:
    stats = at_time(raw, now, config)
    p50, p95 = predict_latency(target, stats, now, config)
    eligible, skip = _eligibility(target, stats, now, config)
    meets = eligible and p95 <= time_left and stats.error_rate < config.max_error_rate
    within = request.budget_usd is None or target.cost_per_call_usd <= request.budget_usd
    probe = (
        eligible
        and (stats.samples < config.min_samples or stats.circuit is CircuitState.HALF_OPEN)
        and stats.in_flight < config.probe_max_in_flight
    )
    return _View(target, stats, p50, p95, eligible, skip, meets, within, probe)


def _rank_key(view: _View) -> tuple:
    if not view.eligible:
        return (3, 0.0, 0.0, view.target.name)
    health = view.stats.error_rate
    if view.meets:
        group = 0 if view.within_budget else 1
        return (group, round(view.target.cost_per_call_usd, 9), round(health, 2), view.p95)
    return (2, view.p95 / max(1.0 - health, 0.05), health, view.target.name)


def _matches(view: _View, preferred: str) -> bool:
    return view.target.name == preferred or view.target.tier == preferred


def decide(
    request: RouteRequest,
    targets: Sequence[Target],
    stats: Mapping[str, TargetStats],
    now: float,
    config: RoutingConfig = DEFAULT_CONFIG,
    u: float = 1.0,
) -> Decision:
    """Rank ``targets`` for ``request`` at time ``now`` (epoch s).

    ``stats`` maps target name to what has been learned (missing: nothing yet). ``u`` is a
    uniform draw in [0, 1) that decides exploration: with probability ``probe_share`` an
    under-sampled or half-open target whose prediction fits the SLA is tried first.
    """
    time_left = (request.deadline - now) * 1000.0
    views = [_view(t, stats.get(t.name, _EMPTY), request, time_left, now, config) for t in targets]
    views.sort(key=_rank_key)
    hints: dict[str, object] = {}
    if request.preferred_target not in ("auto", ""):
        preferred = [v for v in views if v.eligible and _matches(v, request.preferred_target)]
        if preferred:
            views = preferred + [v for v in views if v not in preferred]
            hints["preferred"] = preferred[0].target.name
    elif u < config.probe_share:
        probes = [v for v in views if v.probe and (v.meets or not request.strict_sla)]
        if probes:
            pick = probes[min(int(u / config.probe_share * len(probes)), len(probes) - 1)]
            views = [pick] + [v for v in views if v is not pick]
            hints["probe"] = pick.target.name
    eligible = [v for v in views if v.eligible]
    unmeetable = not any(v.meets for v in eligible)
    run = bool(eligible) and not (request.strict_sla and unmeetable)
    if eligible and request.budget_usd is not None and not eligible[0].within_budget:
        hints["over_budget"] = True
    candidates = tuple(_candidate(rank, v, request, time_left, hints) for rank, v in enumerate(views, start=1))
    return Decision(
        job_id=request.job_id,
        decided_at=now,
        candidates=candidates,
        sla_unmeetable=unmeetable,
        run=run,
        reason=_decision_reason(eligible, unmeetable, run, request, time_left, hints),
        hints=hints,
    )


def _candidate(rank: int, view: _View, request: RouteRequest, time_left: float, hints: dict) -> Candidate:
    return Candidate(
        target=view.target.name,
        tier=view.target.tier,
        rank=rank,
        eligible=view.eligible,
        meets_sla=view.meets,
        within_budget=view.within_budget,
        predicted_p50_ms=view.p50,
        predicted_p95_ms=view.p95,
        time_left_ms=time_left,
        cost_usd=view.target.cost_per_call_usd,
        error_rate=view.stats.error_rate,
        circuit=view.stats.circuit.value,
        in_flight=view.stats.in_flight,
        probe=hints.get("probe") == view.target.name,
        reason=_candidate_reason(view, request, time_left, hints),
    )


def _candidate_reason(view: _View, request: RouteRequest, time_left: float, hints: dict) -> str:
    name, cost = view.target.name, view.target.cost_per_call_usd
    if not view.eligible:
        return f"{name}: {view.skip_reason}; skipped"
    sla = f"{request.sla_ms:.0f} ms SLA"
    if view.meets:
        text = f"{name}: p95 {view.p95:.0f} ms fits the {sla} ({max(time_left, 0):.0f} ms left); ${cost:.4f}/call"
    elif view.stats.error_rate >= 0.5 and view.p95 <= time_left:
        text = f"{name}: error rate {view.stats.error_rate:.0%} too high for the {sla}; ${cost:.4f}/call"
    else:
        text = (
            f"{name}: p95 {view.p95:.0f} ms exceeds the {max(time_left, 0):.0f} ms left of the {sla}; ${cost:.4f}/call"
        )
    if not view.within_budget:
        text += f"; over the ${request.budget_usd:.4f} budget"
    if hints.get("preferred") == name:
        text += "; preferred by the submitter"
    if hints.get("probe") == name:
        text += "; probing (little evidence yet)"
    return text


def _decision_reason(
    eligible: list[_View], unmeetable: bool, run: bool, request: RouteRequest, time_left: float, hints: dict
) -> str:
    if not eligible:
        return "no_eligible_target: every target is disabled, down or has its circuit open"
    first = eligible[0].target.name
    if unmeetable:
        gap = f"no target's predicted p95 fits the {max(time_left, 0):.0f} ms left of the {request.sla_ms:.0f} ms SLA"
        if not run:
            return f"sla_unmeetable: {gap}; strict SLA requested, so the job is not run"
        return f"sla_unmeetable: {gap}; running on the least-bad target {first}"
    if "preferred" in hints:
        return f"{first} chosen: preferred by the submitter"
    if "probe" in hints:
        return f"{first} chosen: exploration probe of a target with little evidence"
    if hints.get("over_budget"):
        return f"{first} chosen: cheapest target that fits the SLA, over the job's budget (none within it fits)"
    return f"{first} chosen: cheapest target whose predicted p95 fits the SLA"
