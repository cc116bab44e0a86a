"""The routing policy: a pure function from (job, targets, stats, time) to a ranked Decision.

No I/O and no clock: ``now`` and the random draw ``u`` are arguments, so the worker, the dry-run
endpoint, the tests and the simulator all run this exact code.

Each target's latency is predicted by ``latency.model`` (re-exported here: ``predict_latency``):
a log-normal service time plus the wait for a free slot. From that, ``p_on_time``: the
probability that the job succeeds by its deadline if it starts here, counting the failover the
worker makes after an error:
P(latency <= left) x (1 - e) + e x P(the best other target answers in what is left after the
error), where e is the target's error rate and an error is assumed to come back after the
target's median latency.

Order of concerns, for targets whose circuit admits a call:
1. meet the deadline: ``p_on_time`` at least the bar of the job's SLA class objective
   (``objective.bar``: by default, nearly as likely as the likeliest target);
2. then cost: within the job's budget before over it; no queueing where a free target meets
   the SLA at a modest premium (``queue_price_ratio``); cheapest first;
3. then health: the likelier to be on time first.
Targets that cannot meet the deadline follow, least bad (likeliest to be on time) first;
targets whose circuit is open come last and are never called. New, stale and half-open
targets are probed now and then with jobs that can afford it (``_probe``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from orchestrator.routing.config import DEFAULT_CONFIG, RoutingConfig
from orchestrator.routing.explain import candidate_reason, decision_reason
from orchestrator.routing.latency import model, p_latency, predict_latency
from orchestrator.routing.learning import decay_factor
from orchestrator.routing.objective import Bar, bar
from orchestrator.routing.types import (
    Candidate,
    CircuitState,
    Decision,
    RouteRequest,
    SloClassStats,
    Target,
    TargetStats,
)

__all__ = ["decide", "predict_latency"]

_EMPTY = TargetStats()
_NEW, _STALE, _HALF_OPEN, _OPEN = "new", "stale", "half-open", "open"
_CLOSED_STATE, _OPEN_STATE, _HALF_OPEN_STATE = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
_CIRCUIT_VALUE = {state: state.value for state in CircuitState}
"""Each circuit state's value, looked up without the enum's descriptor (the same str objects)."""


class _View:
    """One target as seen for one job: the numbers behind its Candidate. Built once per target
    and decision (a hundred of them per decision with a hundred targets), so it is a plain
    slotted class filled in by its constructor rather than a dataclass built from keywords."""

    __slots__ = (
        "target",
        "stats",
        "samples",
        "error_rate",
        "circuit",
        "model",
        "p50",
        "p95",
        "wait",
        "p_latency",
        "p_on_time",
        "eligible",
        "skip_reason",
        "meets",
        "within_budget",
        "queue_behind",
        "probe_kind",
        "failover",
    )

    def __init__(
        self,
        target: Target,
        stats: TargetStats,
        budget: float | None,
        time_left: float,
        now: float,
        config: RoutingConfig,
    ) -> None:
        factor = decay_factor(stats, now, config)
        samples = stats.samples * factor
        circuit = stats.circuit
        if circuit is _OPEN_STATE and now >= stats.circuit_until:
            circuit = _HALF_OPEN_STATE
        m = model(target, stats, samples, now, config)
        if circuit is _CLOSED_STATE and target.enabled and stats.telemetry_up is not False:
            eligible, skip = True, ""  # what _eligibility says, without the call (most targets)
        else:
            eligible, skip = _eligibility(target, stats, circuit, now, config)
        self.target = target
        self.stats = stats
        self.samples = samples
        self.error_rate = error_rate = stats.error_rate * factor
        self.circuit = circuit
        self.model = m
        self.wait = m.wait_ms
        self.p50 = m.wait_ms + math.exp(m.mu)
        self.p95 = m.quantile_ms(config.p95_z)
        self.p_latency = p_lat = p_latency(m, time_left)
        self.p_on_time = p_lat * (1.0 - error_rate)
        self.eligible = eligible
        self.skip_reason = skip
        self.meets = self.queue_behind = self.failover = False
        self.within_budget = budget is None or target.cost_per_call_usd <= budget
        # Most targets are not probed: one with calls in flight never is unless half-open.
        busy = stats.in_flight >= config.probe_max_in_flight and circuit is not _HALF_OPEN_STATE
        self.probe_kind = _probe_kind(stats, samples, circuit, now, config) if eligible and not busy else ""


def _eligibility(
    target: Target, stats: TargetStats, circuit: CircuitState, now: float, config: RoutingConfig
) -> tuple[bool, str]:
    if not target.enabled:
        return False, "disabled"
    if circuit is CircuitState.OPEN:
        return False, f"circuit open for {max(stats.circuit_until - now, 0):.0f} s more"
    if circuit is CircuitState.HALF_OPEN and stats.in_flight >= config.circuit_half_open_calls:
        return False, "circuit half-open, its probes are in flight"
    fresh = stats.telemetry_at and now - stats.telemetry_at <= config.telemetry_ttl_s
    if fresh and stats.telemetry_up is False:
        return False, "reported down by telemetry"
    return True, ""


def _probe_kind(stats: TargetStats, samples: float, circuit: CircuitState, now: float, config: RoutingConfig) -> str:
    if circuit is CircuitState.HALF_OPEN:
        return _HALF_OPEN
    if stats.in_flight >= config.probe_max_in_flight:
        return ""
    if samples < config.min_samples:
        return _NEW
    if stats.last_call_at and now - stats.last_call_at > config.probe_stale_s:
        return _STALE
    return ""


def _best_two(views: list[_View]) -> tuple[_View | None, _View | None]:
    """The two eligible targets likeliest to answer within the time left (failover goes there)."""
    best = second = None
    for view in views:
        if not view.eligible:
            continue
        if best is None or view.p_latency > best.p_latency:
            best, second = view, best
        elif second is None or view.p_latency > second.p_latency:
            second = view
    return best, second


def _with_failover(
    views: list[_View], request: RouteRequest, time_left: float, config: RoutingConfig, slo: SloClassStats | None
) -> Bar:
    """Fill in ``p_on_time`` (counting one failover after an error), ``meets`` (against the
    class objective's bar, which it returns) and ``queue_behind``. The failover goes to the
    other eligible target likeliest to answer within the full time left."""
    best, second = _best_two(views)
    eligible = [v for v in views if v.eligible]
    best_p = 0.0
    for view in eligible:
        error = view.error_rate
        view.p_on_time = view.p_latency * (1.0 - error)
        backup = second if view is best else best
        if error > 0.0 and backup is not None:
            after_error = p_latency(backup.model, time_left - view.p50) * (1.0 - backup.error_rate)
            view.p_on_time += error * after_error
            view.failover = True
        if error <= config.max_error_rate:
            best_p = max(best_p, view.p_on_time)
    needed = bar(config, request.sla_ms, best_p, slo)
    for view in eligible:
        view.meets = view.p_on_time >= needed.needed and view.error_rate <= config.max_error_rate
    idle = [v.target.cost_per_call_usd for v in eligible if v.meets and v.wait <= 0.0]
    cheapest_idle = min(idle, default=math.inf)
    for view in eligible:
        if view.meets and view.wait > 0.0:
            view.queue_behind = cheapest_idle <= config.queue_price_ratio * view.target.cost_per_call_usd
    return needed


def _rank_key(view: _View) -> tuple:
    if not view.eligible:
        return (3, 0.0, 0.0, view.target.name)
    if view.meets:
        return (
            0 if view.within_budget else 1,
            view.queue_behind,
            view.target.cost_per_call_usd,
            -view.p_on_time,
            view.target.name,
        )
    return (2, -round(view.p_on_time, 3), view.p50, view.target.cost_per_call_usd)


def _matches(view: _View, preferred: str) -> bool:
    return view.target.name == preferred or view.target.tier == preferred


def _affordable_probe(view: _View, views: list[_View], request: RouteRequest, time_left: float) -> bool:
    """A probe may only take a job that survives a failed probe: the probe target meets the SLA
    itself, or its p95 plus the p95 of the best other target that does still fits the time left."""
    if view.meets:
        return True
    if request.strict_sla:
        return False
    fallback = next((v for v in views if v.meets and v is not view), None)
    return fallback is not None and view.p95 + fallback.p95 <= time_left


def _open_probe(
    views: list[_View], request: RouteRequest, now: float, needed: Bar, config: RoutingConfig
) -> _View | None:
    """A target whose circuit is open, made eligible as a probe for a job that would otherwise
    run on a target unlikely to be on time (every admitted target is below the floor): a
    breaker keeps calls off a broken target while the rest of the fleet can serve, but when the
    rest cannot (a small fleet, one target flapping and the other overloaded by the whole
    load), the open target is the job's best remaining chance, and a success closes the circuit
    (``learning``) without waiting out the open period. Never for a strict job (it fails fast);
    when nothing is admitted at all, only with ``circuit_probe_all_open``; at most
    ``circuit_half_open_calls`` in flight, as when half-open; the target whose open period
    ends soonest."""
    eligible = [v for v in views if v.eligible]
    if request.strict_sla or (not eligible and not config.circuit_probe_all_open) or any(v.meets for v in eligible):
        return None
    shut = [
        v
        for v in views
        if v.circuit is CircuitState.OPEN
        and v.target.enabled
        and v.stats.in_flight < config.circuit_half_open_calls
        and _eligibility(v.target, v.stats, CircuitState.HALF_OPEN, now, config)[0]
    ]
    if not shut:
        return None
    pick = min(shut, key=lambda v: v.stats.circuit_until)
    pick.eligible, pick.skip_reason, pick.probe_kind = True, "", _OPEN
    pick.meets = pick.p_on_time >= needed.needed and pick.error_rate <= config.max_error_rate
    return pick


def _probe(
    views: list[_View], request: RouteRequest, time_left: float, u: float, config: RoutingConfig
) -> _View | None:
    """The target to probe with this job, if any: a half-open one whenever the job can afford
    it (its circuit caps the probes in flight); a new or stale one in ``probe_share`` of jobs."""
    opened = next((v for v in views if v.probe_kind == _OPEN), None)
    if opened is not None:
        return opened
    half_open = [v for v in views if v.probe_kind == _HALF_OPEN]
    for view in half_open:
        if _affordable_probe(view, views, request, time_left):
            return view
    if u >= config.probe_share:
        return None
    probes = [v for v in views if v.probe_kind in (_NEW, _STALE) and _affordable_probe(v, views, request, time_left)]
    if not probes:
        return None
    return probes[min(int(u / config.probe_share * len(probes)), len(probes) - 1)]


def decide(
    request: RouteRequest,
    targets: Sequence[Target],
    stats: Mapping[str, TargetStats],
    now: float,
    config: RoutingConfig = DEFAULT_CONFIG,
    u: float = 1.0,
    slo: SloClassStats | None = None,
) -> Decision:
    """Rank ``targets`` for ``request`` at time ``now`` (epoch s).

    ``stats`` maps target name to what has been learned (missing: nothing yet). ``u`` is a
    uniform draw in [0, 1) that decides exploration: with probability ``probe_share`` a new or
    stale target is tried first, if the job can afford a failed probe. Half-open targets are
    probed by any job that can afford it, a few calls at a time.
    """
    time_left = (request.deadline - now) * 1000.0
    budget, get = request.budget_usd, stats.get
    views = [_View(t, get(t.name, _EMPTY), budget, time_left, now, config) for t in targets]
    hints: dict[str, object] = {}
    needed = _with_failover(views, request, time_left, config, slo)
    if config.circuit_open_probe and request.preferred_target in ("auto", ""):
        _open_probe(views, request, now, needed, config)
    views.sort(key=_rank_key)
    if request.preferred_target not in ("auto", ""):
        preferred = [v for v in views if v.eligible and _matches(v, request.preferred_target)]
        if preferred:
            views = preferred + [v for v in views if v not in preferred]
            hints["preferred"] = preferred[0].target.name
    else:
        pick = _probe(views, request, time_left, u, config)
        # A half-open or open target's every call is a probe; a new or stale one is only if moved up.
        if pick is not None and (pick is not views[0] or pick.probe_kind in (_HALF_OPEN, _OPEN)):
            views = [pick] + [v for v in views if v is not pick]
            hints["probe"] = pick.target.name
            hints["probe_kind"] = pick.probe_kind
    eligible = [v for v in views if v.eligible]
    unmeetable = not any(v.meets for v in eligible)
    run = bool(eligible) and not (request.strict_sla and unmeetable)
    if eligible and request.budget_usd is not None and not eligible[0].within_budget:
        hints["over_budget"] = True
    probed, preferred_name = hints.get("probe"), hints.get("preferred")
    candidates = tuple(
        [
            _candidate(rank, v, request, time_left, probed, preferred_name, needed, config)
            for rank, v in enumerate(views, start=1)
        ]
    )
    return Decision(
        job_id=request.job_id,
        decided_at=now,
        candidates=candidates,
        sla_unmeetable=unmeetable,
        run=run,
        reason=decision_reason([v.target.name for v in eligible], unmeetable, run, request, time_left, hints, needed),
        hints=hints,
    )


def _candidate(
    rank: int,
    view: _View,
    request: RouteRequest,
    time_left: float,
    probed: object,
    preferred: object,
    needed: Bar,
    config: RoutingConfig,
) -> Candidate:
    """``probed`` and ``preferred``: the names of the decision's probe and preferred target, if any."""
    target = view.target
    name = target.name
    probe = probed == name
    why = candidate_reason(view, request, time_left, needed, probe, preferred == name, config)
    # Positional, in the order of Candidate's fields (a hundred of these per decision).
    return Candidate(
        name,
        target.tier,
        rank,
        view.eligible,
        view.meets,
        view.within_budget,
        view.p50,
        view.p95,
        time_left,
        target.cost_per_call_usd,
        view.error_rate,
        _CIRCUIT_VALUE[view.circuit],
        view.stats.in_flight,
        probe,
        why,
        view.p_on_time,
        view.wait,
        needed.needed,
        needed.rule,
        view.failover,
    )
