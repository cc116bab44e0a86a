"""Runs one claimed job: ask the router, call targets in order with deadline-bounded timeouts,
fail over on error, and return the terminal fields to persist. Persistence of the routing
decision and of failed attempts happens as they occur, so a crash leaves an honest trail."""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import update

from modelreasoner.client import CallInput, CallResult
from modelreasoner.runtime import Runtime
from orchestrator import audit
from orchestrator.constants import MIN_CALL_TIMEOUT_SECONDS
from orchestrator.db import session_scope
from orchestrator.errors import ModelCallError
from orchestrator.metrics import FAILOVERS, MODEL_CALL_DURATION, ROUTING_DECISIONS
from orchestrator.models import Job, JobStatus
from orchestrator.routing import Candidate, Decision, Outcome, RouteRequest, Target
from orchestrator.targets import targets_for

log = logging.getLogger(__name__)

COST_BEARING_ERRORS = frozenset({"timeout", "http_5xx", "invalid_response", "transport_error"})
"""Failed calls that reached the server, so it probably did (and billed) the work."""


@dataclass
class Attempt:
    target: str
    ok: bool
    latency_ms: float
    error_kind: str | None = None
    message: str = ""
    cost_usd: float = 0.0
    result: CallResult | None = None


@dataclass
class Terminal:
    """The terminal state of a job and the fields to write with it."""

    status: JobStatus
    fields: dict[str, Any] = field(default_factory=dict)
    winner: Attempt | None = None
    """The successful attempt (its audit row is written with the terminal state)."""


def route_request(job: Job) -> RouteRequest:
    return RouteRequest(
        job_id=str(job.id),
        sla_ms=job.sla_ms,
        submitted_at=job.created_at.timestamp(),
        preferred_target=job.preferred_target or "auto",
        strict_sla=job.strict_sla,
        budget_usd=job.budget_usd,
    )


def call_input(job: Job) -> CallInput:
    return CallInput(
        job_id=str(job.id),
        sla_ms=job.sla_ms,
        age_months=job.age_months,
        observations=job.observations,
        embedding_b64=base64.b64encode(job.embedding).decode() if job.embedding else None,
        task_type=job.task_type or "screening",
        payload=job.payload,
    )


def call_timeout(rt: Runtime, target: Target, request: RouteRequest, now: float) -> float | None:
    """min(configured timeout, time left to the deadline); None when a strict job has no time
    left. A non-strict job late already still gets MIN_CALL_TIMEOUT_SECONDS."""
    configured = target.timeout_seconds or rt.settings.routing_timeout_seconds
    left = request.deadline - now
    if request.strict_sla and left <= 0:
        return None
    return min(configured, max(left, MIN_CALL_TIMEOUT_SECONDS))


def run(rt: Runtime, job: Job) -> Terminal:
    """Route and execute ``job`` (already claimed by this worker)."""
    targets = targets_for(job.kind, rt.targets())
    if not targets:
        return failed("no_targets", "no model server is configured")
    request = route_request(job)
    decision = rt.router.decide(request, targets, time.time())
    _record_decision(rt, job, decision)
    if not decision.run:
        kind = "sla_unmeetable" if decision.candidates and decision.sla_unmeetable else "no_eligible_target"
        return failed(kind, decision.reason, decision=decision.to_dict())
    by_name = {t.name: t for t in targets}
    attempts: list[Attempt] = []
    for candidate in decision.call_order:
        target = by_name[candidate.target]
        timeout = call_timeout(rt, target, request, time.time())
        if timeout is None:
            attempts.append(Attempt(target.name, False, 0.0, "deadline_passed", "strict SLA deadline passed"))
            break
        attempt = call_once(rt, target, call_input(job), timeout)
        attempts.append(attempt)
        if attempt.ok:
            return completed(job, decision, candidate, attempts)
        _record_failover(rt, job, attempt, len(attempts))
    return all_failed(decision, attempts)


def call_once(rt: Runtime, target: Target, payload: CallInput, timeout: float) -> Attempt:
    """One call, counted in flight and folded into the shared stats whatever happens."""
    call_id = rt.router.call_started(target.name, time.time())
    started = time.perf_counter()
    try:
        result = rt.client.call(target, payload, timeout)
        attempt = Attempt(target.name, True, result.latency_ms, cost_usd=result.cost_usd, result=result)
    except ModelCallError as exc:
        elapsed = (time.perf_counter() - started) * 1000.0
        cost = target.cost_per_call_usd if exc.kind in COST_BEARING_ERRORS else 0.0
        attempt = Attempt(target.name, False, elapsed, exc.kind, exc.message, cost_usd=cost)
    finally:
        rt.router.call_ended(target.name, call_id)
    rt.router.record(
        Outcome(target.name, attempt.ok, attempt.latency_ms, time.time(), attempt.error_kind, attempt.cost_usd)
    )
    MODEL_CALL_DURATION.labels(target.name, attempt.error_kind or "ok").observe(attempt.latency_ms / 1000.0)
    return attempt


def _record_decision(rt: Runtime, job: Job, decision: Decision) -> None:
    first = decision.candidates[0].target if decision.candidates else "none"
    ROUTING_DECISIONS.labels(first, str(decision.sla_unmeetable).lower()).inc()
    chosen: Candidate | None = decision.chosen
    with session_scope(rt.sessions) as session:
        session.execute(
            update(Job)
            .where(Job.id == job.id)
            .values(
                decision=decision.to_dict(),
                predicted_ms=chosen.predicted_p50_ms if chosen else None,
                predicted_p95_ms=chosen.predicted_p95_ms if chosen else None,
            )
        )
        audit.record(
            session,
            job.id,
            "routed",
            rt.worker_id,
            target=chosen.target if chosen else None,
            outcome="sla_unmeetable" if decision.sla_unmeetable else "ok",
            details={"reason": decision.reason, "order": [c.target for c in decision.call_order]},
        )


def _record_failover(rt: Runtime, job: Job, attempt: Attempt, number: int) -> None:
    FAILOVERS.labels(attempt.target).inc()
    log.warning(
        "model call failed; failing over",
        extra={"target": attempt.target, "error_kind": attempt.error_kind, "attempt": number},
    )
    with session_scope(rt.sessions) as session:
        attempt_audit(session, job.id, rt.worker_id, attempt, number)


def attempt_audit(session, job_id, actor: str, attempt: Attempt, number: int, hedge: bool = False) -> None:
    audit.record(
        session,
        job_id,
        "attempt",
        actor,
        target=attempt.target,
        outcome="ok" if attempt.ok else attempt.error_kind,
        latency_ms=round(attempt.latency_ms, 2),
        details={
            "attempt": number,
            "hedge": hedge,
            "error_kind": attempt.error_kind,
            "error": attempt.message or None,
            "cost_usd": attempt.cost_usd,
        },
    )


def completed(job: Job, decision: Decision, candidate: Candidate, attempts: list[Attempt]) -> Terminal:
    winner = attempts[-1]
    return Terminal(
        JobStatus.COMPLETED,
        {
            "target": winner.target,
            "result": winner.result.result if winner.result else None,
            "latency_ms": round(winner.latency_ms, 3),
            "cost_usd": sum(a.cost_usd for a in attempts),
            "attempts": len(attempts),
            "decision": decision.to_dict(),
        },
        winner=winner,
    )


def failed(kind: str, message: str, **extra: Any) -> Terminal:
    return Terminal(JobStatus.FAILED, {"error_kind": kind, "error": message, **extra})


def all_failed(decision: Decision, attempts: list[Attempt]) -> Terminal:
    reasons = "; ".join(f"{a.target}: {a.error_kind} ({a.message})" for a in attempts)
    last = attempts[-1].target if attempts else None
    return Terminal(
        JobStatus.FAILED,
        {
            "error_kind": "all_targets_failed",
            "error": f"every target failed: {reasons}" if attempts else "no target could be called",
            "target": last,
            "attempts": len(attempts),
            "cost_usd": sum(a.cost_usd for a in attempts),
            "decision": decision.to_dict(),
        },
    )
