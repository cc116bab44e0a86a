"""Calls to model servers for one job: a single call (counted in flight, folded into the
shared stats), and a hedged call (a backup when the first is late; the first success wins).

Hedging (HEDGE_ENABLED): when the router's ``hedge_plan`` says the first call is late, a backup
call goes to another target while the first keeps running. The loser is not cut off (a blocking
HTTP call cannot be): it finishes on its pool thread within its own timeout, and its real
outcome still feeds the shared stats; its audit row says it was abandoned. Hedges are capped
fleet-wide by ``RedisHedgeBudget`` (HEDGE_MAX_SHARE of all calls over HEDGE_WINDOW_SECONDS).
"""

from __future__ import annotations

import base64
import contextvars
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis

from modelreasoner.client import CallInput, CallResult, classify
from modelreasoner.runtime import Runtime
from orchestrator.constants import MIN_CALL_TIMEOUT_SECONDS
from orchestrator.error_kinds import COST_BEARING, ErrorKind
from orchestrator.metrics import HEDGES, MODEL_CALL_DURATION
from orchestrator.models import Job
from orchestrator.routing import HedgeSpec, Outcome, RedisHedgeBudget, RouteRequest, Target

log = logging.getLogger("modelreasoner.dispatch")

CALL_POOL_MAX_THREADS = 1024
"""Threads for the calls of hedged jobs in one process: a hedged job holds at most two calls,
and a worker runs at most 512 jobs, so no call ever waits for a thread. Threads are started
only as calls need them."""


@dataclass
class Attempt:
    target: str
    ok: bool
    latency_ms: float
    error_kind: ErrorKind | None = None
    message: str = ""
    cost_usd: float = 0.0
    result: CallResult | None = None
    hedge: bool = False
    """This call was the backup of a hedged job."""
    ended_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    """When the call ended (or was abandoned): the time of its audit row, so a timeline lists
    attempts before the terminal event they led to."""
    call: int | None = None
    """The call's number within its claim (its ``call_started`` row has the same)."""


Started = Callable[[Target, bool], int]
"""Records that a call to a target (a hedge or not) is about to start, durably, and returns
its number: the job's ``call_started`` audit row, written before any request byte leaves."""


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


def call_once(
    rt: Runtime,
    target: Target,
    payload: CallInput,
    timeout: float,
    hedge: bool = False,
    call: int | None = None,
    in_flight: int | None = None,
) -> Attempt:
    """One call, counted in flight and folded into the shared stats whatever happens. Any
    exception the client raises, of any class, is a failed attempt (``classify``), never a
    crashed job: it is audited, feeds the circuit breaker and fails over like any other.
    ``in_flight``: the other calls in flight on the target as the router's decision counted
    them (None: not known), reported on the outcome so the router can learn the real capacity."""
    now = time.time()
    call_id = rt.router.call_started(target.name, now)
    if rt.settings.hedge_enabled:
        _note_call(rt, now)
    started = time.perf_counter()
    outcome = None
    try:
        try:
            result = rt.client.call(target, payload, timeout)
            attempt = Attempt(
                target.name, True, result.latency_ms, cost_usd=result.cost_usd, result=result, hedge=hedge, call=call
            )
        except Exception as raised:  # the worker's boundary: whatever the client threw
            exc = classify(raised, timeout)
            if exc is not raised:
                log.warning("model client raised an unmapped error", extra={"error": type(raised).__name__})
            elapsed = (time.perf_counter() - started) * 1000.0
            cost = target.cost_per_call_usd if exc.kind in COST_BEARING else 0.0
            attempt = Attempt(target.name, False, elapsed, exc.kind, exc.message, cost_usd=cost, hedge=hedge, call=call)
        outcome = Outcome(
            target.name,
            attempt.ok,
            attempt.latency_ms,
            time.time(),
            attempt.error_kind,
            attempt.cost_usd,
            in_flight=in_flight,
            capacity=target.capacity if in_flight is not None else None,
        )
    finally:
        after_call(rt, target.name, call_id, outcome)
    MODEL_CALL_DURATION.labels(target.name, attempt.error_kind or "ok").observe(attempt.latency_ms / 1000.0)
    return attempt


def after_call(rt: Runtime, target: str, call_id: str, outcome: Outcome | None) -> None:
    """The call is no longer in flight, and the router learns from it: on the process's stats
    writer when it has one (the threaded worker), else right now."""

    def update() -> None:
        rt.router.call_ended(target, call_id)
        if outcome is not None:
            rt.router.record(outcome)

    if rt.stats_writer is not None:
        rt.stats_writer.submit(update)
    else:
        update()


def job_ended(rt: Runtime, sla_ms: float, on_time: bool) -> None:
    """The job's SLA class learns whether it met its deadline (a fleet-wide record that moves the
    class towards the operator's objective): on the stats writer when there is one."""
    at = time.time()

    def update() -> None:
        rt.router.record_job(sla_ms, on_time, at)

    if rt.stats_writer is not None:
        rt.stats_writer.submit(update)
    else:
        update()


def hedged_call(
    rt: Runtime,
    payload: CallInput,
    request: RouteRequest,
    primary: Target,
    timeout: float,
    backup: Target,
    hedge: HedgeSpec,
    decided_at: float,
    started: Started,
    in_flight: int | None = None,
) -> list[Attempt]:
    """The first call of a job (``payload`` to ``primary``, with ``timeout`` s), with a backup call to
    ``backup`` if the first has not answered ``hedge.delay_s`` after the decision and the
    hedge budget allows one.

    Returns the finished attempts, the winner (if any) last. A loser still running when the
    winner answers is returned as abandoned (``ErrorKind.CANCELLED``, its elapsed time and its price:
    the server is still working on it); its real outcome reaches the stats when it ends.
    """
    first_call = started(primary, False)
    first = _submit(call_once, rt, primary, payload, timeout, False, first_call, in_flight)
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
    try:
        second_call = started(backup, True)
    except Exception as exc:  # no call without its row; a hedge is optional, so wait for the first
        log.warning("could not record the hedge's start; not hedging", extra={"error": type(exc).__name__})
        return [first.result()]
    second = _submit(call_once, rt, backup, payload, backup_timeout, True, second_call)
    finished: list[Attempt] = []
    running = {
        first: (primary, False, first_started, first_call),
        second: (backup, True, time.perf_counter(), second_call),
    }
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


def _abandoned(target: Target, hedge: bool, started: float, call: int, *, at: datetime) -> Attempt:
    """The audit record of a call still running when the other call of its job won at ``at``
    (its row takes that time: it was abandoned the moment the winner answered)."""
    elapsed = (time.perf_counter() - started) * 1000.0
    message = "lost the hedge race; left to finish on its own"
    return Attempt(
        target.name,
        False,
        elapsed,
        ErrorKind.CANCELLED,
        message,
        cost_usd=target.cost_per_call_usd,
        hedge=hedge,
        ended_at=at,
        call=call,
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
