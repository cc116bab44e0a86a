"""Runs one claimed job: plan its route, record the decision, call targets in order with
deadline-bounded timeouts (hedged when the router says it pays), fail over on error, and return
the terminal fields to persist.

    plan(rt, job)                        -> Plan | Terminal   (no I/O but the router's stats)
    record_decision(rt, job, d)          -> Routed            (in memory: written with the first call)
    execute_plan(rt, job, plan)          -> Terminal          (the model calls)

One write per state change: the decision and its ``routed`` row are written with the first
call's ``call_started`` row, a failed call's ``attempt`` row with the next call's
``call_started`` row, and whatever is left (``Plan.unwritten``) with the terminal state. Every
``call_started`` row is committed before its request leaves, so a crash still leaves every
billed call in the trail.

Every write goes through ``orchestrator.jobs``, the one writer of a job's state and trail.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from modelreasoner.calls import Attempt, call_input, call_once, call_timeout, hedged_call
from modelreasoner.db_retry import with_db_retry
from modelreasoner.runtime import Runtime
from orchestrator import audit, jobs
from orchestrator.db import session_scope
from orchestrator.error_kinds import ErrorKind
from orchestrator.metrics import FAILOVERS, ROUTING_DECISIONS
from orchestrator.models import Job, JobKind, JobStatus
from orchestrator.routing import Candidate, Decision, RouteRequest, Target, hedge_plan
from orchestrator.targets import targets_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Terminal:
    """The terminal state of a job and the columns written with it (None: not written)."""

    status: JobStatus
    error_kind: ErrorKind | None = None
    error: str | None = None
    """PHI-free: a reason the worker wrote, never an exception's text."""
    target: str | None = None
    """The target that served the job, or the last one tried."""
    result: dict[str, Any] | None = None
    latency_ms: float | None = None
    cost_usd: float | None = None
    attempts: int | None = None
    decision: dict[str, Any] | None = None
    """Set when the decision is not a run (no target fits): written with the terminal state."""
    winner: Attempt | None = None
    """The successful attempt (its audit row is written with the terminal state)."""


@dataclass
class Unwritten:
    """What a job's next write carries: the decision (until the first call is recorded) and
    the ``attempt`` rows of calls that ended since the last write."""

    routed: jobs.Routed | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Plan:
    """A routed job: the targets by name, its routing request and the router's decision."""

    targets: dict[str, Target]
    request: RouteRequest
    decision: Decision
    unwritten: Unwritten = field(default_factory=Unwritten)


def plan(rt: Runtime, job: Job, catalogue: list[Target] | None = None, refresh: bool = True) -> Plan | Terminal:
    """Ask the router where ``job`` goes; a Terminal when nothing can take it.

    ``catalogue`` is the full target list, read by the caller before it opened a transaction
    (default: read now). With ``refresh``, an empty choice reads the registered targets once
    more: one may have been registered since the catalogue was cached."""
    targets = targets_for(job.kind, rt.targets() if catalogue is None else catalogue)
    if not targets and refresh:
        targets = targets_for(job.kind, rt.targets(refresh=True))
    if not targets:
        return no_targets(job)
    request = route_request(job)
    decision = rt.router.decide(request, targets, time.time())
    return Plan({t.name: t for t in targets}, request, decision)


def no_targets(job: Job) -> Terminal:
    if job.kind == JobKind.TASK.value:
        return failed(ErrorKind.NO_TARGETS, "no runner-contract target (POST /run) is configured for tasks")
    return failed(ErrorKind.NO_TARGETS, "no model server is configured")


def execute_plan(rt: Runtime, job: Job, planned: Plan) -> Terminal:
    """Call the decision's candidates in order until one answers; fail with every reason."""
    decision, request, by_name = planned.decision, planned.request, planned.targets
    if not decision.run:
        unmeetable = decision.candidates and decision.sla_unmeetable
        kind = ErrorKind.SLA_UNMEETABLE if unmeetable else ErrorKind.NO_ELIGIBLE_TARGET
        return failed(kind, decision.reason, decision=decision.to_dict())
    hedge = hedge_plan(decision, request, rt.router.config) if rt.settings.hedge_enabled else None
    payload = call_input(job)
    started = CallLog(rt, job, planned.unwritten)
    attempts: list[Attempt] = []
    pending = [c.target for c in decision.call_order]
    # The decision's count of calls in flight holds for the job's first call, made right away.
    in_flight = {c.target: c.in_flight for c in decision.candidates}
    while pending:
        target = by_name[pending.pop(0)]
        timeout = call_timeout(rt, target, request, time.time())
        if timeout is None:
            attempts.append(Attempt(target.name, False, 0.0, ErrorKind.DEADLINE_PASSED, "strict SLA deadline passed"))
            break
        if hedge is not None and not attempts:
            backup = by_name[hedge.backup]
            busy = in_flight.get(target.name)
            decided = decision.decided_at
            finished = hedged_call(rt, payload, request, target, timeout, backup, hedge, decided, started, busy)
        else:
            busy = None if attempts else in_flight.get(target.name)
            finished = [call_once(rt, target, payload, timeout, call=started(target, False), in_flight=busy)]
        tried = {a.target for a in finished}
        pending = [name for name in pending if name not in tried]
        winner = next((a for a in finished if a.ok), None)
        for attempt in finished:
            if attempt is not winner:
                attempts.append(attempt)
                _record_failover(rt, started, attempt, len(attempts))
        if winner is not None:
            attempts.append(winner)
            return completed(winner, attempts)
    return all_failed(attempts)


class CallLog:
    """Writes each call's ``call_started`` row (one statement, retried while Postgres is
    unreachable) before the request leaves, together with what ``unwritten`` holds, and numbers
    the calls of this claim. If the row cannot be written, the call is not made."""

    def __init__(self, rt: Runtime, job: Job, unwritten: Unwritten) -> None:
        self.rt = rt
        self.job = job
        self.unwritten = unwritten
        self._count = 0

    def __call__(self, target: Target, hedge: bool) -> int:
        self._count += 1
        number = self._count
        details = {"claim": self.job.claim_count, "call": number, "hedge": hedge}
        row = audit.row(audit.CALL_STARTED, self.rt.worker_id, target=target.name, details=details)
        routed, rows = self.unwritten.routed, list(self.unwritten.rows)

        def write() -> None:
            with session_scope(self.rt.sessions) as session:
                jobs.start_call(session, self.job.id, row, routed=routed, rows=rows)

        with_db_retry(self.rt.settings, write)
        self.unwritten.routed = None
        del self.unwritten.rows[: len(rows)]
        return number


def record_decision(rt: Runtime, job: Job, decision: Decision) -> jobs.Routed:
    """The decision as stored on the job, with its ``routed`` audit row (written with the
    job's first call, or with its terminal state when no call is made)."""
    first = decision.candidates[0].target if decision.candidates else "none"
    ROUTING_DECISIONS.labels(first, str(decision.sla_unmeetable).lower()).inc()
    chosen: Candidate | None = decision.chosen
    return jobs.Routed(
        decision=decision.to_dict(),
        predicted_ms=chosen.predicted_p50_ms if chosen else None,
        predicted_p95_ms=chosen.predicted_p95_ms if chosen else None,
        worker_id=rt.worker_id,
        row=audit.row(
            "routed",
            rt.worker_id,
            target=chosen.target if chosen else None,
            outcome=ErrorKind.SLA_UNMEETABLE if decision.sla_unmeetable else "ok",
            details={"reason": decision.reason, "order": [c.target for c in decision.call_order]},
        ),
    )


def route_request(job: Job) -> RouteRequest:
    return RouteRequest(
        job_id=str(job.id),
        sla_ms=job.sla_ms,
        submitted_at=job.created_at.timestamp(),
        preferred_target=job.preferred_target or "auto",
        strict_sla=job.strict_sla,
        budget_usd=job.budget_usd,
    )


def _record_failover(rt: Runtime, started: CallLog, attempt: Attempt, number: int) -> None:
    """Note a call that did not produce the result (failed, or abandoned after a hedge): its
    audit row is written with the next call's start, or with the terminal state."""
    if attempt.error_kind is not ErrorKind.CANCELLED:
        FAILOVERS.labels(attempt.target).inc()
        log.warning(
            "model call failed; failing over",
            extra={"target": attempt.target, "error_kind": attempt.error_kind, "attempt": number},
        )
    started.unwritten.rows.append(attempt_row(started.job, rt.worker_id, attempt, number))


def attempt_row(job: Job, actor: str, attempt: Attempt, number: int) -> dict[str, Any]:
    """The ``attempt`` audit row of one call (``audit.row``: written with a later statement)."""
    return audit.row(
        "attempt",
        actor,
        at=attempt.ended_at,
        target=attempt.target,
        outcome="ok" if attempt.ok else attempt.error_kind,
        latency_ms=round(attempt.latency_ms, 2),
        details={
            "attempt": number,
            "claim": job.claim_count,
            "call": attempt.call,
            "hedge": attempt.hedge,
            "error_kind": attempt.error_kind,
            "error": attempt.message or None,
            "cost_usd": attempt.cost_usd,
        },
    )


def completed(winner: Attempt, attempts: list[Attempt]) -> Terminal:
    """The terminal state of a served job. The decision is not in it: it was written with the
    first call's ``call_started`` row, before any call."""
    return Terminal(
        JobStatus.COMPLETED,
        target=winner.target,
        result=winner.result.result if winner.result else None,
        latency_ms=round(winner.latency_ms, 3),
        cost_usd=sum(a.cost_usd for a in attempts),
        attempts=len(attempts),
        winner=winner,
    )


def failed(kind: ErrorKind, message: str, *, decision: dict[str, Any] | None = None) -> Terminal:
    return Terminal(JobStatus.FAILED, error_kind=kind, error=message, decision=decision)


def all_failed(attempts: list[Attempt]) -> Terminal:
    reasons = "; ".join(f"{a.target}: {a.error_kind} ({a.message})" for a in attempts)
    return Terminal(
        JobStatus.FAILED,
        error_kind=ErrorKind.ALL_TARGETS_FAILED,
        error=f"every target failed: {reasons}" if attempts else "no target could be called",
        target=attempts[-1].target if attempts else None,
        attempts=len(attempts),
        cost_usd=sum(a.cost_usd for a in attempts),
    )
