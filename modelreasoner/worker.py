"""The worker: ``process_job`` and the entry points that run it.

Two ways to run it, both on the ``pedi-screen`` queue, both keeping RQ's job lifecycle
(registries, ``rq info``, per-job status) intact:

* ``rq worker pedi-screen -w modelreasoner.worker.ForkingMetricsWorker`` (from the repo root, or
  ``RQ_WORKER_CLASS`` set to it): stock forking RQ, one job per process, with JSON logs, tracing
  and per-job metrics served on ``METRICS_PORT`` by the parent. A bare ``rq worker pedi-screen``
  runs jobs too, but logs one WARNING: its job processes' metrics die with them. Either way,
  ``RQ_CONFIG=modelreasoner.rq_settings`` does the set-up once in the parent, not in every job.
* ``python -m modelreasoner.worker``: the fast entry. A non-forking ``ThreadedWorker`` keeps
  ``WORKER_CONCURRENCY`` jobs in flight in one process (model calls are I/O waits), serves
  Prometheus metrics on ``METRICS_PORT``, and refuses to start with no model server configured.

``process_job(job_id)``: claim the job in Postgres (a duplicate delivery is a no-op), route it,
call targets with failover, and write the terminal state, result and audit trail. Every error
path ends the job ``failed`` with a reason, or (if Postgres itself is gone) leaves its lease to
lapse so the reconciler runs it again; no path leaves it ``running`` for good.
"""

from __future__ import annotations

import logging
import sys
import uuid
from datetime import UTC, datetime

import click
from rq import Worker, get_current_job
from sqlalchemy import select

from modelreasoner import bootstrap, calls, dispatch
from modelreasoner.db_retry import database_down, with_db_retry
from modelreasoner.lease import longest_run_seconds
from modelreasoner.reasons import step_failed
from modelreasoner.rq_adapter import JobFailed, ScrubbedFailures, crashed, stack_summary
from modelreasoner.runtime import Runtime
from modelreasoner.threaded_worker import ThreadedWorker
from orchestrator import jobs, tracing
from orchestrator.constants import QUEUE_NAME
from orchestrator.db import make_engine, make_session_factory, session_scope
from orchestrator.error_kinds import ErrorKind
from orchestrator.errors import ConfigError
from orchestrator.logs import job_context
from orchestrator.metrics import (
    JOB_E2E_LATENCY,
    JOB_QUEUE_WAIT,
    JOB_STEP_FAILURES,
    JOBS_COMPLETED,
    JOBS_FAILED,
    SLA_VIOLATIONS,
    ForkedJobMetrics,
    mark_worker_metrics_off,
    serve_worker_metrics,
    warn_if_job_metrics_unexported,
)
from orchestrator.models import Job, JobStatus
from orchestrator.queue_rq import get_queue
from orchestrator.reconciler import Reconciler, actor_name
from orchestrator.settings import get_settings
from orchestrator.startup import refuse

log = logging.getLogger("modelreasoner.worker")


def process_job(job_id: str) -> dict[str, str | None]:
    """RQ entry point. Returns a PHI-free summary; the result itself is in Postgres. Runs in a
    consumer span continuing the trace whose context the enqueue put in the RQ job's meta.

    A job that ends ``failed`` raises ``JobFailed(error_kind)``, so RQ's own tools count it as
    failed; any other exception is replaced by ``JobCrashed`` naming only its type, since RQ
    stores and logs an exception's text and a database error can quote the job's data
    (modelreasoner.rq_adapter)."""
    rt = bootstrap.job_context()
    rq_job = get_current_job()
    _prepare_job_process(rt, rq_job)
    try:
        with job_context(job_id), tracing.consumer_span(QUEUE_NAME, job_id, rq_job.meta if rq_job else None) as span:
            try:
                summary = execute(rt, uuid.UUID(job_id))
            except Exception as exc:
                log.error(
                    "job raised in the worker; RQ records it as failed",
                    extra={"error": type(exc).__name__, "stack": stack_summary(exc)},
                )
                raise crashed(exc) from None
            tracing.set_job_status(span, summary["status"])
            if summary["status"] == JobStatus.FAILED.value:
                failed, kind = _failed_in_postgres(rt, job_id)
                if failed:
                    raise JobFailed(kind)
            return summary
    finally:
        tracing.flush_if_process_ends_with_job()


def _failed_in_postgres(rt: Runtime, job_id: str) -> tuple[bool, str | None]:
    """Whether the job's stored state is ``failed`` (another worker's terminal write may have
    won), and its error kind. Unreadable: trust the run's own outcome, kind unknown."""
    try:
        with session_scope(rt.sessions) as session:
            row = session.execute(select(Job.status, Job.error_kind).where(Job.id == uuid.UUID(job_id))).one_or_none()
    except Exception as exc:
        log.warning("could not read the failed job's error kind", extra={"error": type(exc).__name__})
        return True, None
    if row is None:
        return True, None
    return row.status == JobStatus.FAILED.value, row.error_kind


def _prepare_job_process(rt: Runtime, rq_job) -> None:
    """No-ops in our own workers and under RQ_CONFIG. A job forked by a bare ``rq worker`` sets
    up JSON logs and tracing for itself, and warns (once per worker) that its metrics are not
    exported."""
    bootstrap.start_observability(rt.settings, per_job_process=True)
    warn_if_job_metrics_unexported(rq_job)


class Step:
    """The step a job is in, named in the reason if it raises: claim, route, call, persist."""

    def __init__(self) -> None:
        self.name = "claim"


Claimed = tuple[Job | None, dispatch.Plan | dispatch.Terminal | None]


def execute(rt: Runtime, job_id: uuid.UUID) -> dict[str, str | None]:
    """Claim, route, call and persist one job. Any step that raises a non-transient error ends
    the job ``failed`` with ``internal_error: <step> failed: <reason>`` at once (a poison job
    must not loop); only an unreachable database leaves it to the reconciler. Database retries
    wrap database steps only, never a model call."""
    step = Step()
    try:
        job, planned = with_db_retry(rt.settings, lambda: _claim_and_route(rt, job_id, step))
        if isinstance(planned, dispatch.Terminal) and planned.error_kind is ErrorKind.NO_TARGETS:
            planned = with_db_retry(rt.settings, lambda: _route_again(rt, job))
    except Exception as exc:
        if database_down(exc):
            raise  # still queued in Postgres: the reconciler delivers it again (bounded by JOB_MAX_REQUEUES)
        return _give_up(rt, job_id, step.name, exc)
    if job is None:
        log.info("job not claimable (duplicate delivery or already finished); skipped")
        return {"status": "skipped", "target": None}
    if job.started_at and job.claim_count == 1:
        JOB_QUEUE_WAIT.observe((job.started_at - job.created_at).total_seconds())
    rt.leases.add(job_id, hold_seconds=longest_run_seconds(rt.settings, planned))
    try:
        terminal = _run(rt, job, planned)
        try:
            persist(rt, job, terminal, planned.unwritten if isinstance(planned, dispatch.Plan) else None)
        except Exception as exc:
            if database_down(exc):
                raise  # the lease lapses and the reconciler runs it again (bounded by JOB_MAX_CLAIMS)
            return _give_up(rt, job_id, "persist", exc)
    finally:
        rt.leases.discard(job_id)
    return {"status": terminal.status.value, "target": terminal.target}


def _claim_and_route(rt: Runtime, job_id: uuid.UUID, step: Step) -> Claimed:
    """The claim (one statement, with its audit row), then the route, in memory: the decision
    is written with the first call's ``call_started`` row, before the request leaves, or with
    the terminal state when no call is made (``dispatch.Unwritten``). The target catalogue is
    read first."""
    step.name = "claim"
    catalogue = rt.targets()
    with session_scope(rt.sessions) as session:
        now = datetime.now(UTC)
        lease = rt.settings.job_lease_seconds
        job = jobs.claim(session, job_id, worker_id=rt.worker_id, now=now, lease_seconds=lease)
    if job is None:
        return None, None
    step.name = "route"
    try:
        planned = dispatch.plan(rt, job, catalogue, refresh=False)
    except Exception as exc:  # a routing bug must not undo the claim
        planned = _crashed(rt, exc, "route")
    if isinstance(planned, dispatch.Plan):
        planned.unwritten.routed = dispatch.record_decision(rt, job, planned.decision)
    return job, planned


def _route_again(rt: Runtime, job: Job) -> dispatch.Plan | dispatch.Terminal:
    """Nothing in the cached catalogue could take the job: one may have been registered since."""
    planned = dispatch.plan(rt, job, rt.targets(refresh=True), refresh=False)
    if isinstance(planned, dispatch.Plan):
        planned.unwritten.routed = dispatch.record_decision(rt, job, planned.decision)
    return planned


def _run(rt: Runtime, job: Job, planned: dispatch.Plan | dispatch.Terminal) -> dispatch.Terminal:
    """The model calls of a claimed job (no DB retry around them: only their writes retry)."""
    if isinstance(planned, dispatch.Terminal):
        return planned
    try:
        return dispatch.execute_plan(rt, job, planned)
    except Exception as exc:
        return _crashed(rt, exc, "call")


def _crashed(rt: Runtime, exc: Exception, step: str) -> dispatch.Terminal:
    """The terminal state of a job whose run raised: a reason, never the exception's text (it
    may quote the job's data)."""
    if database_down(exc):
        attempts = rt.settings.db_retry_attempts
        log.error("database unavailable through every retry; failing the job", extra={"attempts": attempts})
        return dispatch.failed(ErrorKind.DATABASE_UNAVAILABLE, f"the database was unreachable on {attempts} attempts")
    log.exception("job crashed in the worker; failing it", extra={"step": step})
    return dispatch.failed(ErrorKind.INTERNAL_ERROR, step_failed(step, exc))


def _give_up(rt: Runtime, job_id: uuid.UUID, step: str, exc: Exception) -> dict[str, str | None]:
    """End a job whose ``step`` raised a deterministic error: ``failed`` now, with the step and a
    PHI-free reason, instead of leaving it to be delivered (or recovered) again and again."""
    reason = step_failed(step, exc)
    log.error("job step failed; failing the job", extra={"step": step, "reason": reason})
    JOB_STEP_FAILURES.labels(step).inc()

    def write() -> bool:
        with session_scope(rt.sessions) as session:
            now = datetime.now(UTC)
            kind = ErrorKind.INTERNAL_ERROR
            return jobs.give_up(session, job_id, worker_id=rt.worker_id, now=now, error_kind=kind, error=reason)

    if not with_db_retry(rt.settings, write):
        log.info("job already taken or finished elsewhere; left alone")
        return {"status": "skipped", "target": None}
    JOBS_FAILED.labels("none", ErrorKind.INTERNAL_ERROR).inc()
    return {"status": JobStatus.FAILED.value, "target": None}


def persist(rt: Runtime, job: Job, terminal: dispatch.Terminal, unwritten: dispatch.Unwritten | None = None) -> bool:
    """Write the terminal state (first terminal write wins) with the audit rows not yet
    written (``unwritten``, then the winning call's), and record its metrics."""
    now = datetime.now(UTC)
    total_s = (now - job.created_at).total_seconds()
    completed = terminal.status is JobStatus.COMPLETED
    sla_met = total_s * 1000.0 <= job.sla_ms if completed else None
    unwritten = unwritten or dispatch.Unwritten()
    rows = list(unwritten.rows)
    if terminal.winner is not None:
        rows.append(dispatch.attempt_row(job, rt.worker_id, terminal.winner, terminal.attempts or 1))

    def write() -> bool:
        with session_scope(rt.sessions) as session:
            return _finish(session, rt.worker_id, now, job.id, terminal, sla_met, unwritten.routed, rows)

    if not with_db_retry(rt.settings, write):
        log.info("job already finished elsewhere; this result is discarded")
        return False
    target = terminal.target or "none"
    calls.job_ended(rt, job.sla_ms, completed and bool(sla_met))
    JOB_E2E_LATENCY.labels(target).observe(total_s)
    if completed:
        JOBS_COMPLETED.labels(target).inc()
        if not sla_met:
            SLA_VIOLATIONS.labels(target).inc()
        log.info("job completed", extra={"target": target, "total_ms": round(total_s * 1000, 1)})
    else:
        JOBS_FAILED.labels(target, terminal.error_kind or "unknown").inc()
        log.warning("job failed", extra={"target": target, "error_kind": terminal.error_kind})
    return True


def _finish(
    session,
    actor: str,
    now: datetime,
    job_id: uuid.UUID,
    terminal: dispatch.Terminal,
    sla_met: bool | None,
    routed: jobs.Routed | None,
    rows: list[dict],
) -> bool:
    return jobs.finish(
        session,
        job_id,
        terminal.status,
        actor=actor,
        now=now,
        error_kind=terminal.error_kind,
        error=terminal.error,
        target=terminal.target,
        result=terminal.result,
        latency_ms=terminal.latency_ms,
        cost_usd=terminal.cost_usd,
        attempts=terminal.attempts,
        sla_met=sla_met,
        decision=terminal.decision,
        routed=routed,
        rows=rows,
    )


class ForkingMetricsWorker(ScrubbedFailures, Worker):
    """Stock forking RQ worker (one process per job) for ``rq worker pedi-screen -w
    modelreasoner.worker.ForkingMetricsWorker``: JSON logs, tracing, no job descriptions in
    logs, and, with METRICS_PORT set, per-job metrics written by each job process to a per-worker
    multiprocess directory that this parent creates, serves on METRICS_PORT and removes at exit."""

    def __init__(self, *args, **kwargs) -> None:
        try:
            settings = bootstrap.prepare_forking_parent()
        except ConfigError as exc:
            raise SystemExit(f"worker: {exc.message}") from None
        self._log_level = settings.log_level
        kwargs["log_job_description"] = False
        super().__init__(*args, **kwargs)
        self._metrics = ForkedJobMetrics(settings.metrics_port) if settings.metrics_port else None
        if self._metrics is None:
            mark_worker_metrics_off()

    def work(self, *args, **kwargs) -> bool:
        if kwargs.get("logging_level") is None:  # `rq worker` without --logging_level: follow LOG_LEVEL
            kwargs["logging_level"] = self._log_level
        return super().work(*args, **kwargs)

    def execute_job(self, job, queue) -> None:
        with job_context(job.id):  # the parent's and the job process's RQ lines carry the job id
            super().execute_job(job, queue)

    def teardown(self) -> None:
        super().teardown()
        if self._metrics is not None:
            self._metrics.close()


class ScrubbedThreadedWorker(ScrubbedFailures, ThreadedWorker):
    """The ``python -m modelreasoner.worker`` worker: RQ records only PHI-free failures."""


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--concurrency", type=click.IntRange(1, 512), default=None, help="Jobs in flight [WORKER_CONCURRENCY].")
@click.option("--burst", is_flag=True, help="Exit once the queue is empty and in-flight jobs are done.")
@click.option("--simulate", is_flag=True, help="Use in-process simulated targets [WORKER_SIMULATE].")
@click.option("--name", default=None, help="Worker name shown by `rq info` (default: generated).")
def main(concurrency: int | None, burst: bool, simulate: bool, name: str | None) -> None:
    """Process pedi-screen jobs with several in flight per process."""
    try:
        settings = get_settings()
        if simulate:
            settings = settings.model_copy(update={"worker_simulate": True})
        rt = bootstrap.start_threaded_worker(settings, concurrency=concurrency)
    except ConfigError as exc:
        refuse("worker", exc)
    serve_worker_metrics(settings.metrics_port)
    slots = concurrency or settings.worker_concurrency
    worker = ScrubbedThreadedWorker(
        [QUEUE_NAME], connection=rt.redis, name=name, log_job_description=False, concurrency=slots
    )
    log.info(
        "worker starting",
        extra={"concurrency": slots, "targets": [t.name for t in rt.static_targets], "simulate": rt.simulate},
    )
    reconciler = reconciler_engine = None
    if settings.reconciler_enabled and not burst:
        # Its own (transactional) engine: the jobs' engine autocommits, and a sweep's reads and
        # conditional writes must be one transaction.
        reconciler_engine = make_engine(settings, pool_size=1)
        sessions = make_session_factory(reconciler_engine)
        reconciler = Reconciler(sessions, get_queue(rt.redis), settings, actor=actor_name("worker")).start()
    try:
        worker.work(burst=burst, logging_level=settings.log_level)
    finally:
        if reconciler is not None:
            reconciler.stop()
        if reconciler_engine is not None:
            reconciler_engine.dispose()
    if not burst and not worker.stop_signalled:
        # RQ's loop ended on an error it could not handle: exit non-zero so a supervisor restarts us.
        log.error("worker loop ended unexpectedly; exiting with status 1")
        sys.exit(1)


if __name__ == "__main__":
    main()
