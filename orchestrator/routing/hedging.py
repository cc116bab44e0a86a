"""Hedged requests, the pure part: when to send a backup call for a decision, and where.

A hedge is a second call for the same job to another target, sent while the first is still
running. The first success wins; the other call is ignored (it is not cut off at the server:
it runs to its own timeout and its outcome is still learned from). Hedges are for the SLA,
not for shaving tail latency, so a job is hedged only when waiting longer for its first call
puts the deadline at risk:

* the trigger is the first call's predicted p95: a call still running by then is late;
* if the deadline is far off, the backup is held back further, until the last moment that
  still leaves it ``hedge_backup_margin`` x its own predicted p95 before the deadline (a 10 s
  job on a 150 ms target is hedged only if the first call hangs, not when it is merely slow);
* the backup is the first other eligible candidate in the call order whose p95 fits the time
  left after the trigger (else the quickest whose median fits); none fits: no hedge;
* a hedge never takes a job over its budget.

How many hedges are actually sent is capped by a shared ``HedgeBudget`` (hedge_budget.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.routing.config import DEFAULT_CONFIG, RoutingConfig
from orchestrator.routing.types import Candidate, Decision, RouteRequest


@dataclass(frozen=True, slots=True)
class HedgeSpec:
    """Send a backup call to ``backup`` if the first call has not answered ``delay_s`` seconds
    after the decision (the worker starts the first call right after it). ``reason`` says why,
    for logs."""

    delay_s: float
    backup: str
    reason: str


def hedge_plan(decision: Decision, request: RouteRequest, config: RoutingConfig = DEFAULT_CONFIG) -> HedgeSpec | None:
    """The hedge for ``decision``'s first call, or None when a backup could not help in time.

    Pure: uses the predictions stored in the decision and the time it was made. Times are
    measured from the decision, which the worker makes just before the first call.
    """
    order = decision.call_order
    if len(order) < 2:
        return None
    primary = order[0]
    left_ms = (request.deadline - decision.decided_at) * 1000.0
    trigger_ms = primary.predicted_p95_ms
    after_trigger = left_ms - trigger_ms
    backup = _pick_backup(order[1:], after_trigger, request, primary)
    if backup is None:
        return None
    latest_ms = left_ms - config.hedge_backup_margin * backup.predicted_p95_ms
    delay_ms = max(trigger_ms, latest_ms)
    if delay_ms > trigger_ms:
        why = f"hedge to {backup.target} if {primary.target} has not answered by {delay_ms:.0f} ms (deadline-bound)"
    else:
        why = f"hedge to {backup.target} if {primary.target} has not answered by its p95, {delay_ms:.0f} ms"
    return HedgeSpec(delay_s=delay_ms / 1000.0, backup=backup.target, reason=why)


def _pick_backup(
    others: list[Candidate], after_trigger_ms: float, request: RouteRequest, primary: Candidate
) -> Candidate | None:
    affordable = [
        c for c in others if request.budget_usd is None or primary.cost_usd + c.cost_usd <= request.budget_usd + 1e-12
    ]
    for candidate in affordable:
        if candidate.predicted_p95_ms <= after_trigger_ms:
            return candidate
    likely = [c for c in affordable if c.predicted_p50_ms <= after_trigger_ms]
    return min(likely, key=lambda c: c.predicted_p95_ms) if likely else None
