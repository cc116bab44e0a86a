"""The reconciler: Postgres is the truth, Redis is a conveyor belt that may drop things.

One pass (``reconcile_once``) repairs what a crash or a Redis loss leaves behind:

* a job ``running`` whose lease expired (its worker was killed, lost the node, or lost the
  database) goes back to ``queued`` and onto the queue (audit ``recovered``), or, once it has been
  claimed JOB_MAX_CLAIMS times, ends ``failed`` with error_kind ``abandoned``, so a job's model
  call runs a bounded number of times;
* a job ``queued`` in Postgres that is on no RQ list (Redis restarted or was flushed, the API's
  enqueue failed), or that a worker took more than grace + lease ago and never claimed (it died
  or hung in between), is enqueued again (audit
  ``requeued``), or, once it has been requeued JOB_MAX_REQUEUES times since its last claim
  (every delivery failed before a worker could claim it: a poison job), ends ``failed`` with
  error_kind ``undeliverable``, counted by pedi_jobs_undeliverable_total.

Every change is a conditional UPDATE (written by orchestrator.jobs, the one writer of job state)
or an enqueue the worker's claim makes idempotent, so two passes overlapping, or racing a worker,
are safe. ``Reconciler`` runs passes in a daemon thread inside the API and every ``python -m
modelreasoner.worker``; a Redis lock keeps it to about one pass per interval across the fleet.
``python -m orchestrator.reconciler`` runs it on its own.
docs/reliability.md explains the detection times.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

import click
import redis
from rq import Queue
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from orchestrator import audit, jobs
from orchestrator.constants import RECONCILER_LAST_PASS_KEY, RECONCILER_LOCK_KEY
from orchestrator.db import make_engine, make_session_factory, session_scope
from orchestrator.error_kinds import ErrorKind
from orchestrator.jobs import database_now
from orchestrator.metrics import JOBS_FAILED, JOBS_RECOVERED, JOBS_UNDELIVERABLE
from orchestrator.models import Job, JobStatus
from orchestrator.queue_rq import enqueue_job, get_queue, make_redis
from orchestrator.queue_view import BATCH, missing, queued_before, requeues_since_claim, rq_view
from orchestrator.settings import Settings
from orchestrator.startup import start_command

log = logging.getLogger(__name__)

CONFIRM_SECONDS = 1.0
"""Pause before re-reading a job that looked missing from Redis (s). A worker takes a job from the
list and claims it in Postgres within milliseconds; a job still queued and still on no list after
this pause is really lost."""
LOCK_TTL_FRACTION = 0.8
"""The fleet-wide lock lives this fraction of the interval, so whichever process ran the last
pass can always run the next one on time: passes are 0.8 to 1 interval apart."""

REASON_REQUEUED = "missing_from_queue"
"""Why a queued job was put on the queue again (its ``requeued`` audit row, the metric's label)."""
REASON_RECOVERED = "lease_expired"
"""Why a running job went back to queued (its ``recovered`` audit row, the metric's label)."""


@dataclass
class ReconcileReport:
    """What one pass did, by job id (ids are not PHI)."""

    requeued: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    abandoned: list[str] = field(default_factory=list)
    undeliverable: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.requeued) + len(self.recovered) + len(self.abandoned) + len(self.undeliverable)

    def counts(self) -> dict[str, int]:
        return {
            "requeued": len(self.requeued),
            "recovered": len(self.recovered),
            "abandoned": len(self.abandoned),
            "undeliverable": len(self.undeliverable),
        }

    def to_dict(self) -> dict[str, list[str]]:
        return asdict(self)


def reconcile_once(
    sessions: sessionmaker[Session],
    queue: Queue,
    *,
    settings: Settings,
    now: datetime | None = None,
    actor: str = "reconciler",
    confirm_seconds: float = CONFIRM_SECONDS,
) -> ReconcileReport:
    """One reconciliation pass as of ``now`` (aware UTC; default: the database's clock, the one
    leases are written on, so no host's clock skew recovers a live job). Raises
    DatabaseUnavailable or a Redis error when a store is down; whatever was repaired before
    that stays repaired."""
    if now is None:
        with session_scope(sessions) as session:
            now = database_now(session)
    one = _Pass(sessions, queue, now, settings, audit.fit_actor(actor), confirm_seconds)
    one.recover_expired()
    one.requeue_missing()
    return one.report


@dataclass
class _Pass:
    sessions: sessionmaker[Session]
    queue: Queue
    now: datetime
    settings: Settings
    actor: str
    confirm_seconds: float
    report: ReconcileReport = field(default_factory=ReconcileReport)

    @property
    def cutoff(self) -> datetime:
        """Leases expired and enqueues older than this are acted on (now - grace)."""
        return self.now - timedelta(seconds=self.settings.reconciler_grace_seconds)

    # --- running jobs whose lease expired -------------------------------------------------------

    def recover_expired(self) -> None:
        with session_scope(self.sessions) as session:
            rows = session.execute(
                select(Job.id, Job.claim_count, Job.worker_id)
                .where(jobs.lease_expired(self.cutoff))
                .order_by(Job.lease_expires_at)
                .limit(BATCH)
            ).all()
        for job_id, claims, worker_id in rows:
            if claims >= self.settings.job_max_claims:
                if self._abandon(job_id, claims):
                    self.report.abandoned.append(str(job_id))
            elif self._recover(job_id, claims, worker_id):
                self.report.recovered.append(str(job_id))
                _enqueue_quietly(self.queue, job_id)

    def _recover(self, job_id: uuid.UUID, claims: int, worker_id: str | None) -> bool:
        """running -> queued, only if the lease is still expired (the worker may have just renewed)."""
        details = {"reason": REASON_RECOVERED, "claims": claims, "previous_worker": worker_id}
        with session_scope(self.sessions) as session:
            if not jobs.recover(session, job_id, cutoff=self.cutoff, actor=self.actor, now=self.now, details=details):
                return False
        JOBS_RECOVERED.labels(REASON_RECOVERED).inc()
        log.warning("lease expired; job queued again", extra={"job_id": str(job_id), "claims": claims})
        return True

    def _abandon(self, job_id: uuid.UUID, claims: int) -> bool:
        """running -> failed (abandoned): its model call already ran ``claims`` times."""
        message = (
            f"abandoned after {claims} claims (JOB_MAX_CLAIMS={self.settings.job_max_claims}): each time, the "
            "worker stopped renewing its lease before finishing (killed, crashed, or cut off from the database)"
        )
        with session_scope(self.sessions) as session:
            done = jobs.abandon(
                session, job_id, cutoff=self.cutoff, actor=self.actor, now=self.now, claims=claims, error=message
            )
        if not done:
            return False
        JOBS_RECOVERED.labels(ErrorKind.ABANDONED).inc()
        JOBS_FAILED.labels("none", ErrorKind.ABANDONED).inc()
        log.error("job abandoned after its last claim", extra={"job_id": str(job_id), "claims": claims})
        return True

    def _undeliverable(self, job_id: uuid.UUID, requeues: int) -> bool:
        """queued -> failed (undeliverable): it was put on the queue ``requeues`` times since its
        last claim and no worker could claim it (each delivery failed before the claim)."""
        limit = self.settings.job_max_requeues
        message = (
            f"undeliverable: requeued {requeues} times without a claim (JOB_MAX_REQUEUES={limit}); every "
            "delivery failed before a worker could claim it (see the workers' logs for the job id)"
        )
        with session_scope(self.sessions) as session:
            done = jobs.fail_undeliverable(
                session, job_id, actor=self.actor, now=self.now, requeues=requeues, error=message
            )
        if not done:
            return False
        JOBS_UNDELIVERABLE.inc()
        JOBS_FAILED.labels("none", ErrorKind.UNDELIVERABLE).inc()
        log.error(
            "job undeliverable: requeued too often without a claim", extra={"job_id": str(job_id), "requeues": requeues}
        )
        return True

    # --- queued jobs that Redis lost ------------------------------------------------------------

    def requeue_missing(self) -> None:
        # A worker that took a job but has not claimed it yet is trusted this long after it took
        # it (after the enqueue when the take time is unknown); past it, it hung or died between
        # the two (RQ itself notices only after ~15 minutes). A job that waited in a backlog
        # longer than this and was just taken is not enqueued a second time.
        # The take time is on the worker's clock: one further ahead than the allowed skew is ignored.
        trust = (
            self.cutoff - timedelta(seconds=self.settings.job_lease_seconds),
            self.now + timedelta(seconds=self.settings.max_clock_skew_seconds),
        )
        candidates = queued_before(self.sessions, self.cutoff)
        suspects = missing(candidates, rq_view(self.queue, self.now), *trust) if candidates else []
        if not suspects:
            return
        time.sleep(self.confirm_seconds)
        suspects = missing({j: candidates[j] for j in suspects}, rq_view(self.queue, self.now), *trust)
        with session_scope(self.sessions) as session:
            still_queued = set(
                session.scalars(select(Job.id).where(Job.id.in_(suspects), Job.status == JobStatus.QUEUED.value))
            )
        requeues = requeues_since_claim(self.sessions, list(still_queued))
        done, failure = [], None
        for job_id in (j for j in suspects if j in still_queued):
            if requeues.get(job_id, 0) >= self.settings.job_max_requeues:
                if self._undeliverable(job_id, requeues[job_id]):
                    self.report.undeliverable.append(str(job_id))
                continue
            try:
                enqueue_job(self.queue, str(job_id))
            except redis.RedisError as exc:
                failure = exc
                break
            done.append(job_id)
        if done:
            with session_scope(self.sessions) as session:
                jobs.record_requeued(session, done, actor=self.actor, now=self.now, reason=REASON_REQUEUED)
            self.report.requeued.extend(str(j) for j in done)
            JOBS_RECOVERED.labels(REASON_REQUEUED).inc(len(done))
            log.warning("jobs missing from Redis queued again", extra={"count": len(done)})
        if failure is not None:
            raise failure


def record_pass(connection: redis.Redis) -> None:
    """Note that a pass finished: the fleet-wide liveness the API exports as
    pedi_reconciler_last_pass_age_seconds (docs/runbooks/pedi-reconciler-stalled.md)."""
    connection.set(RECONCILER_LAST_PASS_KEY, f"{time.time():.3f}")


def _enqueue_quietly(queue: Queue, job_id: uuid.UUID) -> None:
    """Enqueue a job just put back to queued; if Redis is down a later pass requeues it."""
    try:
        enqueue_job(queue, str(job_id))
    except redis.RedisError as exc:
        log.warning("enqueue of a recovered job failed; a later pass retries", extra={"error": type(exc).__name__})


# --- the runner -------------------------------------------------------------------------------


def actor_name(role: str) -> str:
    """``reconciler:<role>:<host>:<pid>``, cut to fit the audit's actor column."""
    return audit.fit_actor(f"reconciler:{role}:{socket.gethostname()}:{os.getpid()}")


class Reconciler:
    """Runs ``reconcile_once`` every ``interval`` seconds in a daemon thread, but only in the
    process that wins the fleet-wide Redis lock (SET NX PX), so one pass runs per interval however
    many API and worker processes there are. A store being down is logged and retried next time."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        queue: Queue,
        settings: Settings,
        *,
        actor: str,
        interval: float | None = None,
    ) -> None:
        self.sessions = sessions
        self.queue = queue
        self.settings = settings
        self.actor = audit.fit_actor(actor)
        self.interval = interval or settings.reconciler_interval_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        """Take the fleet-wide lock for this interval; False if another process holds it."""
        ttl_ms = max(1, int(self.interval * LOCK_TTL_FRACTION * 1000))
        return bool(self.queue.connection.set(RECONCILER_LOCK_KEY, self.actor, nx=True, px=ttl_ms))

    def run_pass(self, now: datetime | None = None) -> ReconcileReport | None:
        """One pass if this process gets the lock, else None."""
        if not self.acquire():
            return None
        report = reconcile_once(self.sessions, self.queue, now=now, settings=self.settings, actor=self.actor)
        record_pass(self.queue.connection)
        if report.total:
            log.info("reconciliation pass repaired jobs", extra=report.counts())
        return report

    def run_forever(self) -> None:
        """Pass, sleep, repeat until ``stop()``."""
        while not self._stop.is_set():
            try:
                self.run_pass()
            except Exception as exc:  # a store is down: the next pass retries
                log.warning("reconciliation pass failed", extra={"error": type(exc).__name__})
            self._stop.wait(self.interval)

    def start(self) -> Reconciler:
        self._thread = threading.Thread(target=self.run_forever, name="reconciler", daemon=True)
        self._thread.start()
        log.info("reconciler started", extra={"interval_s": self.interval, "actor": self.actor})
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


# --- python -m orchestrator.reconciler ------------------------------------------------------------


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--once", is_flag=True, help="Run one pass now (no lock), print what it did as JSON, and exit.")
@click.option(
    "--interval",
    type=click.FloatRange(0.1, 3600),
    default=None,
    help="Seconds between passes [RECONCILER_INTERVAL_SECONDS].",
)
def main(once: bool, interval: float | None) -> None:
    """Repair jobs that a crash or a Redis loss left behind (see docs/reliability.md).

    Runs even when RECONCILER_ENABLED=false, which only turns off the threads inside the API and
    the workers.
    """
    settings = start_command("reconciler")
    engine = make_engine(settings, pool_size=2)
    connection = make_redis(settings)
    sessions, queue = make_session_factory(engine), get_queue(connection)
    try:
        if once:
            report = reconcile_once(sessions, queue, settings=settings, actor=actor_name("cli"))
            try:
                record_pass(connection)
            except redis.RedisError as exc:  # the pass itself may not have needed Redis
                log.warning("could not record the pass in Redis", extra={"error": type(exc).__name__})
            click.echo(json.dumps({**report.counts(), "job_ids": report.to_dict()}))
            return
        reconciler = Reconciler(sessions, queue, settings, actor=actor_name("standalone"), interval=interval)
        signal.signal(signal.SIGTERM, lambda *_: reconciler.stop(timeout=0))
        signal.signal(signal.SIGINT, lambda *_: reconciler.stop(timeout=0))
        log.info("reconciler running", extra={"interval_s": reconciler.interval})
        reconciler.run_forever()
        log.info("reconciler stopped")
    finally:
        connection.close()
        engine.dispose()


if __name__ == "__main__":
    main()
