"""Keeps the Postgres lease of this process's running jobs fresh.

While a job runs, its row's ``lease_expires_at`` is pushed forward every third of the lease.
If the process dies (SIGKILL, OOM, node loss), renewals stop, the lease runs out, and the
reconciler puts the job back on the queue. One daemon thread per process renews every lease in
one UPDATE; it starts on first use, after any fork.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from orchestrator import jobs
from orchestrator.constants import RQ_JOB_TIMEOUT_SECONDS

log = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(self, sessions: sessionmaker[Session], *, worker_id: str, lease_seconds: float) -> None:
        self._sessions = sessions
        self._worker_id = worker_id
        self._lease = lease_seconds
        self._held: dict[uuid.UUID, float] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def add(self, job_id: uuid.UUID) -> None:
        with self._lock:
            self._held[job_id] = time.monotonic()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
                self._thread.start()

    def discard(self, job_id: uuid.UUID) -> None:
        with self._lock:
            self._held.pop(job_id, None)

    def held(self) -> list[uuid.UUID]:
        """Jobs whose lease is kept. A job held longer than RQ's hard timeout is dropped, so a
        wedged thread cannot keep its job 'running' forever."""
        now = time.monotonic()
        with self._lock:
            for job_id, since in list(self._held.items()):
                if now - since > RQ_JOB_TIMEOUT_SECONDS:
                    log.error("job held past the hard timeout; letting its lease lapse", extra={"job_id": str(job_id)})
                    del self._held[job_id]
            return list(self._held)

    def renew_once(self) -> int:
        held = self.held()
        if not held:
            return 0
        until = datetime.now(UTC) + timedelta(seconds=self._lease)
        with self._sessions() as session:
            return jobs.renew_leases(session, held, worker_id=self._worker_id, until=until)

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._lease / 3):
            try:
                self.renew_once()
            except Exception as exc:  # keep renewing through a database blip
                log.warning("lease renewal failed", extra={"error": type(exc).__name__})
