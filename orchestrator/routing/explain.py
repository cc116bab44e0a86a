"""The one-line reasons of a Decision and its candidates: each states the rule actually applied,
with the numbers it was applied to (a property test checks they agree with the fields).

A candidate's reason reads, for example,
``cloud: 94.10% on time >= 90.00% needed (objective 90.00% for the rest); p95 910 ms > 874 ms
left of the 2000 ms SLA; failover counted; $0.0010/call``: the probability of being on time
against the bar of the class objective (``objective.bar``), then the p95 against the time left
(which is information, not the rule: a target may be likely enough to be on time while its p95
passes the deadline), then whether a failover after an error was counted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.routing.config import RoutingConfig
from orchestrator.routing.objective import Bar
from orchestrator.routing.types import RouteRequest

if TYPE_CHECKING:
    from orchestrator.routing.policy import _View

PROBE_WHY = {
    "new": "little evidence yet",
    "stale": "not called recently",
    "half-open": "circuit half-open",
    "open": "circuit open, and no admitted target is likely on time",
    "": "exploration",
}


def candidate_reason(
    view: _View,
    request: RouteRequest,
    time_left: float,
    needed: Bar,
    probe: bool,
    preferred: bool,
    config: RoutingConfig,
) -> str:
    """The reason of the candidate built from ``view`` (``policy._View``: its numbers are the
    Candidate's): ``probe``, it is probed with this job; ``preferred``, by the submitter."""
    name = view.target.name
    if not view.eligible:
        return f"{name}: {view.skip_reason}; skipped"
    p, bar_p, error = view.p_on_time, needed.needed, view.error_rate
    likely = p >= bar_p
    if likely and error > config.max_error_rate:
        head = f"{name}: error rate {error:.0%} > {config.max_error_rate:.0%} allowed ({p:.2%} on time)"
    else:
        head = f"{name}: {p:.2%} on time {'>=' if likely else '<'} {bar_p:.2%} needed ({needed.rule})"
    p95 = view.p95
    text = (
        f"{head}; p95 {p95:.0f} ms {'<=' if p95 <= time_left else '>'} {time_left:.0f} ms left of the "
        f"{request.sla_ms:.0f} ms SLA"
    )
    if view.failover:
        text += "; failover counted"
    text += f"; ${view.target.cost_per_call_usd:.4f}/call"
    if view.wait >= 1.0:
        text += f"; ~{view.wait:.0f} ms queue ({view.stats.in_flight} in flight)"
    if not view.within_budget:
        text += f"; over the ${request.budget_usd:.4f} budget"
    if preferred:
        text += "; preferred by the submitter"
    if probe:
        text += f"; probing ({PROBE_WHY[view.probe_kind]})"
    return text


def decision_reason(
    eligible: list[str],
    unmeetable: bool,
    run: bool,
    request: RouteRequest,
    time_left: float,
    hints: dict,
    needed: Bar,
) -> str:
    if not eligible:
        return "no_eligible_target: every target is disabled, down or has its circuit open"
    first = eligible[0]
    if unmeetable:
        gap = (
            f"no target is at least {needed.floor:.0%} likely to answer in the {max(time_left, 0):.0f} ms left "
            f"of the {request.sla_ms:.0f} ms SLA"
        )
        if not run:
            return f"sla_unmeetable: {gap}; strict SLA requested, so the job is not run"
        if hints.get("probe_kind") == "open":
            return f"sla_unmeetable: {gap}; probing {first}, whose circuit is open, before the others"
        return f"sla_unmeetable: {gap}; running on the least-bad target {first}"
    if "preferred" in hints:
        return f"{first} chosen: preferred by the submitter"
    if "probe" in hints:
        return f"{first} chosen: probe of a target that is {PROBE_WHY[str(hints['probe_kind'])]}"
    bar_text = f"at least {needed.needed:.2%} on time ({needed.rule})"
    if hints.get("over_budget"):
        return f"{first} chosen: cheapest target {bar_text}, over the job's budget (none within it is)"
    return f"{first} chosen: cheapest target {bar_text}"
