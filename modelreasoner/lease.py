"""Keeps the Postgres lease of this process's running jobs fresh.

While a job runs, its row's ``lease_expires_at`` is pushed forward every third of the lease, on
the database's clock (``clock_timestamp()`` in the UPDATE): the reconciler judges leases on the
same clock, so no host's clock skew can recover a live job. If the process dies (SIGKILL, OOM,
node loss), renewals stop, the lease runs out, and the reconciler puts the job back on the
queue. One daemon thread per process renews every lease in one UPDATE; it starts on first use,
after any fork.

A job is held at most as long as its own plan can legitimately take (``longest_run_seconds``:
every candidate's call timeout plus the database retries around its writes), so a long but
legitimate job keeps its lease while a wedged thread loses it.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from sqlalchemy.orm import Session, sessionmaker

from modelreasoner.db_retry import retry_budget_seconds
from orchestrator import jobs
from orchestrator.errors import ConfigError
from orchestrator.routing import Target
from orchestrator.settings import Settings

log = logging.getLogger(__name__)

HOLD_MARGIN_SECONDS = 30.0
"""Slack on top of a job's computed longest run (s): routing, stats updates, thread scheduling."""
DB_STEPS_PER_CALL = 2
"""Database writes around each model call: its ``call_started`` row and its ``attempt`` row."""


def longest_run_seconds(settings: Settings, planned) -> float:
    """How long a claimed job may legitimately run (s): each candidate's call timeout in turn
    (a hedge runs beside the first call, and the stale-connection retry stays within its call's
    timeout), each DB step's retry budget, and a margin."""
    calls = []
    decision = getattr(planned, "decision", None)
    if decision is not None and decision.run:
        for candidate in decision.call_order:
            target = planned.targets.get(candidate.target)
            calls.append((target.timeout_seconds if target else None) or settings.routing_timeout_seconds)
    db_steps = DB_STEPS_PER_CALL * (len(calls) + 1) + 1  # + the hedge's rows, + the terminal write
    return sum(calls) + db_steps * retry_budget_seconds(settings) + HOLD_MARGIN_SECONDS


def check_targets_fit_the_lease(settings: Settings, targets: list[Target]) -> None:
    """At start: refuse a target whose call timeout is longer than the lease."""
    for target in targets:
        if target.timeout_seconds and target.timeout_seconds > settings.job_lease_seconds:
            raise ConfigError(
                f"JOB_LEASE_SECONDS ({settings.job_lease_seconds:g}) must be at least the timeout_seconds "
                f"({target.timeout_seconds:g}) of target {target.name!r} (TARGETS_FILE): a lease shorter than "
                "the longest call"
            )


class LeaseKeeper:
    def __init__(self, sessions: sessionmaker[Session], *, worker_id: str, lease_seconds: float) -> None:
        self._sessions = sessions
        self._worker_id = worker_id
        self._lease = lease_seconds
        self._held: dict[uuid.UUID, float] = {}
        """Job id -> monotonic time past which it is no longer renewed."""
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def add(self, job_id: uuid.UUID, *, hold_seconds: float) -> None:
        """Keep ``job_id``'s lease fresh for at most ``hold_seconds`` (its longest legitimate run)."""
        with self._lock:
            self._held[job_id] = time.monotonic() + hold_seconds
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
                self._thread.start()

    def discard(self, job_id: uuid.UUID) -> None:
        with self._lock:
            self._held.pop(job_id, None)

    def held(self) -> list[uuid.UUID]:
        """Jobs whose lease is kept. A job held past its longest legitimate run is dropped, so a
        wedged thread cannot keep its job 'running' forever."""
        now = time.monotonic()
        with self._lock:
            for job_id, until in list(self._held.items()):
                if now > until:
                    log.error("job held past its longest run; letting its lease lapse", extra={"job_id": str(job_id)})
                    del self._held[job_id]
            return list(self._held)

    def renew_once(self) -> int:
        held = self.held()
        if not held:
            return 0
        with self._sessions() as session:
            return jobs.renew_leases(session, held, worker_id=self._worker_id, lease_seconds=self._lease)

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._lease / 3):
            try:
                self.renew_once()
            except Exception as exc:  # keep renewing through a database blip
                log.warning("lease renewal failed", extra={"error": type(exc).__name__})
