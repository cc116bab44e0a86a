"""Runs one claimed job: ask the router, call targets in order with deadline-bounded timeouts,
fail over on error, and return the terminal fields to persist. Persistence of the routing
decision and of failed attempts happens as they occur, so a crash leaves an honest trail.

Hedging (HEDGE_ENABLED): when the router's ``hedge_plan`` says the first call is late, a backup
call goes to another target while the first keeps running; the first success wins. The loser
is not cut off (a blocking HTTP call cannot be): it finishes on its pool thread within its own
timeout, and its real outcome still feeds the shared stats. Its audit row says it was
abandoned. Hedges are capped fleet-wide by ``RedisHedgeBudget`` (HEDGE_MAX_SHARE of all calls
over HEDGE_WINDOW_SECONDS)."""

from __future__ import annotations

import base64
import contextvars
import logging
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from sqlalchemy import update

from modelreasoner.client import CallInput, CallResult
from modelreasoner.runtime import Runtime
from orchestrator import audit
from orchestrator.constants import MIN_CALL_TIMEOUT_SECONDS
from orchestrator.db import session_scope
from orchestrator.errors import ModelCallError
from orchestrator.metrics import FAILOVERS, HEDGES, MODEL_CALL_DURATION, ROUTING_DECISIONS
from orchestrator.models import Job, JobKind, JobStatus
from orchestrator.routing import (
    Candidate,
    Decision,
    HedgeSpec,
    Outcome,
    RedisHedgeBudget,
    RouteRequest,
    Target,
    hedge_plan,
)
from orchestrator.targets import targets_for

log = logging.getLogger(__name__)

COST_BEARING_ERRORS = frozenset({"timeout", "http_5xx", "invalid_response", "transport_error"})
"""Failed calls that reached the server, so it probably did (and billed) the work."""
ABANDONED = "cancelled"
"""Outcome of the audit row of a hedge's losing call: the job stopped waiting for it."""
CALL_POOL_MAX_THREADS = 1024
"""Threads for the calls of hedged jobs in one process: a hedged job holds at most two calls,
and a worker runs at most 512 jobs, so no call ever waits for a thread. Threads are started
only as calls need them."""


@dataclass
class Attempt:
    target: str
    ok: bool
    latency_ms: float
    error_kind: str | None = None
    message: str = ""
    cost_usd: float = 0.0
    result: CallResult | None = None
    hedge: bool = False
    """This call was the backup of a hedged job."""
    ended_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    """When the call ended (or was abandoned): the time of its audit row, so a timeline lists
    attempts before the terminal event they led to."""


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
    if not targets:  # maybe registered since the cached catalogue was read: look once more
        targets = targets_for(job.kind, rt.targets(refresh=True))
    if not targets:
        if job.kind == JobKind.TASK.value:
            return failed("no_targets", "no runner-contract target (POST /run) is configured for tasks")
        return failed("no_targets", "no model server is configured")
    request = route_request(job)
    decision = rt.router.decide(request, targets, time.time())
    _record_decision(rt, job, decision)
    if not decision.run:
        kind = "sla_unmeetable" if decision.candidates and decision.sla_unmeetable else "no_eligible_target"
        return failed(kind, decision.reason, decision=decision.to_dict())
    by_name = {t.name: t for t in targets}
    hedge = hedge_plan(decision, request, rt.router.config) if rt.settings.hedge_enabled else None
    attempts: list[Attempt] = []
    pending = [c.target for c in decision.call_order]
    while pending:
        target = by_name[pending.pop(0)]
        timeout = call_timeout(rt, target, request, time.time())
        if timeout is None:
            attempts.append(Attempt(target.name, False, 0.0, "deadline_passed", "strict SLA deadline passed"))
            break
        if hedge is not None and not attempts:
            finished = hedged_call(rt, job, request, target, timeout, by_name[hedge.backup], hedge, decision.decided_at)
        else:
            finished = [call_once(rt, target, call_input(job), timeout)]
        tried = {a.target for a in finished}
        pending = [name for name in pending if name not in tried]
        winner = next((a for a in finished if a.ok), None)
        for attempt in finished:
            if attempt is not winner:
                attempts.append(attempt)
                _record_failover(rt, job, attempt, len(attempts))
        if winner is not None:
            attempts.append(winner)
            return completed(job, decision, winner, attempts)
    return all_failed(decision, attempts)


def call_once(rt: Runtime, target: Target, payload: CallInput, timeout: float, hedge: bool = False) -> Attempt:
    """One call, counted in flight and folded into the shared stats whatever happens."""
    now = time.time()
    call_id = rt.router.call_started(target.name, now)
    if rt.settings.hedge_enabled:
        _note_call(rt, now)
    started = time.perf_counter()
    try:
        result = rt.client.call(target, payload, timeout)
        attempt = Attempt(target.name, True, result.latency_ms, cost_usd=result.cost_usd, result=result, hedge=hedge)
    except ModelCallError as exc:
        elapsed = (time.perf_counter() - started) * 1000.0
        cost = target.cost_per_call_usd if exc.kind in COST_BEARING_ERRORS else 0.0
        attempt = Attempt(target.name, False, elapsed, exc.kind, exc.message, cost_usd=cost, hedge=hedge)
    finally:
        rt.router.call_ended(target.name, call_id)
    rt.router.record(
        Outcome(target.name, attempt.ok, attempt.latency_ms, time.time(), attempt.error_kind, attempt.cost_usd)
    )
    MODEL_CALL_DURATION.labels(target.name, attempt.error_kind or "ok").observe(attempt.latency_ms / 1000.0)
    return attempt


def hedged_call(
    rt: Runtime,
    job: Job,
    request: RouteRequest,
    primary: Target,
    timeout: float,
    backup: Target,
    hedge: HedgeSpec,
    decided_at: float,
) -> list[Attempt]:
    """The first call of ``job`` (to ``primary``, with ``timeout`` s), with a backup call to
    ``backup`` if the first has not answered ``hedge.delay_s`` after the decision and the
    hedge budget allows one.

    Returns the finished attempts, the winner (if any) last. A loser still running when the
    winner answers is returned as abandoned (``ABANDONED``, its elapsed time and its price:
    the server is still working on it); its real outcome reaches the stats when it ends.
    """
    payload = call_input(job)
    first = _submit(call_once, rt, primary, payload, timeout)
    first_started = time.perf_counter()
    wait([first], timeout=max(decided_at + hedge.delay_s - time.time(), 0.0))
    if first.done():
        return [first.result()]
    backup_timeout = call_timeout(rt, backup, request, time.time())
    if backup_timeout is None or not _try_hedge(rt):
        return [first.result()]
    HEDGES.labels(backup.name).inc()
    log.info(
        "first call is late; hedging",
        extra={"target": primary.name, "backup": backup.name, "reason": hedge.reason},
    )
    second = _submit(call_once, rt, backup, payload, backup_timeout, True)
    finished: list[Attempt] = []
    running = {first: (primary, False, first_started), second: (backup, True, time.perf_counter())}
    while running:
        done, _ = wait(list(running), return_when=FIRST_COMPLETED)
        for future in done:
            running.pop(future)
            finished.append(future.result())
        winner = next((a for a in finished if a.ok), None)
        if winner is not None:
            losers = [_abandoned(*running_call, at=winner.ended_at) for running_call in running.values()]
            return [a for a in finished if a is not winner] + losers + [winner]
    return finished


def _abandoned(target: Target, hedge: bool, started: float, *, at: datetime) -> Attempt:
    """The audit record of a call still running when the other call of its job won at ``at``
    (its row takes that time: it was abandoned the moment the winner answered)."""
    elapsed = (time.perf_counter() - started) * 1000.0
    message = "lost the hedge race; left to finish on its own"
    return Attempt(
        target.name, False, elapsed, ABANDONED, message, cost_usd=target.cost_per_call_usd, hedge=hedge, ended_at=at
    )


_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _submit(fn, *args) -> Future:
    """Run ``fn(*args)`` on this process's call pool (created on first use, per pid: the
    forking RQ worker must not inherit another process's threads)."""
    pid = os.getpid()
    with _pools_lock:
        pool = _pools.get(pid)
        if pool is None:
            pool = _pools[pid] = ThreadPoolExecutor(CALL_POOL_MAX_THREADS, thread_name_prefix="call")
    # Run in a copy of the caller's context: the job's trace and its job_id in log lines follow.
    return pool.submit(contextvars.copy_context().run, fn, *args)


def _budget(rt: Runtime) -> RedisHedgeBudget:
    return RedisHedgeBudget(rt.redis, rt.settings.hedge_max_share, rt.settings.hedge_window_seconds)


def _note_call(rt: Runtime, now: float) -> None:
    try:
        _budget(rt).note_call(now)
    except redis.RedisError:
        log.warning("hedge budget unavailable; call not counted")


def _try_hedge(rt: Runtime) -> bool:
    """Take one hedge from the fleet-wide budget; no budget (or no Redis) means no hedge."""
    try:
        return _budget(rt).try_acquire(time.time())
    except redis.RedisError:
        log.warning("hedge budget unavailable; not hedging")
        return False


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
    """Audit a call that did not produce the result (failed, or abandoned after a hedge)."""
    if attempt.error_kind != ABANDONED:
        FAILOVERS.labels(attempt.target).inc()
        log.warning(
            "model call failed; failing over",
            extra={"target": attempt.target, "error_kind": attempt.error_kind, "attempt": number},
        )
    with session_scope(rt.sessions) as session:
        attempt_audit(session, job.id, rt.worker_id, attempt, number)


def attempt_audit(session, job_id, actor: str, attempt: Attempt, number: int, hedge: bool | None = None) -> None:
    """The audit row of one call; ``hedge`` (default: the attempt's own flag) marks a backup."""
    hedge = attempt.hedge if hedge is None else hedge
    audit.record(
        session,
        job_id,
        "attempt",
        actor,
        at=attempt.ended_at,
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


def completed(job: Job, decision: Decision, winner: Attempt, attempts: list[Attempt]) -> Terminal:
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
