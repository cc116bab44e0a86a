"""ThreadedWorker: an RQ worker that keeps several jobs in flight in one process.

Model calls are I/O waits of 50 ms to seconds, so one process holding one job at a time would
need hundreds of processes for modest traffic. This worker is RQ's non-forking ``SimpleWorker``
plus a thread pool: RQ's lifecycle (registries, executions, results, ``rq info``) stays intact.
What it needs of RQ's private parts goes through modelreasoner.rq_adapter.
Its main thread only dequeues, so every Redis round trip it saves raises the dequeue rate.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import redis
from rq import SimpleWorker
from rq.timeouts import BaseDeathPenalty
from rq.worker import WorkerStatus
from rq.worker_registration import REDIS_WORKER_KEYS

from modelreasoner.rq_adapter import WarmShutdownHook, last_state, request_stop, stop_requested
from orchestrator.logs import job_context

log = logging.getLogger("modelreasoner.worker")


class BoundedByTheJob(BaseDeathPenalty):
    """No timer thread per job. RQ's thread-based penalty starts an OS thread for every job and,
    when it fires, raises inside whatever the job was doing (a commit, a socket read). Our jobs
    bound themselves instead: every model call has a timeout (min of ROUTING_TIMEOUT_SECONDS and
    the time left), database retries are bounded (DB_RETRY_ATTEMPTS), and a job still held past
    RQ's hard timeout loses its lease (modelreasoner.lease), so the reconciler runs it again."""

    def setup_death_penalty(self) -> None:
        return None

    def cancel_death_penalty(self) -> None:
        return None


SLOT_WAIT_SECONDS = 5.0
"""While every slot is busy the main loop wakes this often (s) to heartbeat and check for stop."""
HEARTBEAT_EVERY_SECONDS = 5.0
"""Shortest gap between two plain worker heartbeats (s); RQ's worker key lives 480 s."""
SUSPENSION_CHECK_EVERY_SECONDS = 1.0
"""How often the work loop asks Redis whether `rq suspend` was run (s); RQ asks once per job."""
DEQUEUE_WAIT_SECONDS = 2
"""Longest blocking wait for a job id (s): how long a warm shutdown may wait before it starts."""
REDIS_OUTAGE_PAUSE_SECONDS = 1.0
"""How long the main loop pauses after a Redis error outside RQ's own retry loop (s)."""


class ThreadedWorker(WarmShutdownHook, SimpleWorker):
    """An RQ worker that keeps up to ``concurrency`` jobs in flight on a thread pool.

    A slot is taken before a job is dequeued, so jobs this process cannot start stay in Redis
    for other workers. Warm shutdown (first SIGTERM/SIGINT) only sets a flag: the dequeue waits
    at most DEQUEUE_WAIT_SECONDS, so a job id Redis has already handed over is always run, never
    stranded (RQ's stock handler raises inside the blocking dequeue); then the worker stops
    dequeuing and waits for the jobs in flight. A second signal is a cold shutdown. Each job
    still goes through RQ's ``perform_job`` (registries, executions, results, ``rq info``).
    """

    death_penalty_class = BoundedByTheJob
    _last_beat = 0.0
    _last_suspension_check = 0.0

    def __init__(self, *args, concurrency: int = 16, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.concurrency = concurrency
        self._slots = threading.BoundedSemaphore(concurrency)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="job")
        self.stop_signalled = False
        """Set by SIGTERM/SIGINT: the work loop ended because it was asked to."""

    def heartbeat(self, timeout=None, pipeline=None):
        """RQ heartbeats three times per job (three round trips each); the worker's key lives
        for minutes, so one heartbeat per HEARTBEAT_EVERY_SECONDS keeps it alive at a fraction
        of the cost. Explicit-TTL heartbeats (job start/finish bookkeeping) always go through.

        A plain heartbeat also rides out a Redis outage (RQ's loop would quit on the error) and
        registers the worker again when a Redis restart or flush wiped its registration."""
        now = time.monotonic()
        if timeout is None and pipeline is None and now - self._last_beat < HEARTBEAT_EVERY_SECONDS:
            return
        self._last_beat = now
        if timeout is not None or pipeline is not None:
            return super().heartbeat(timeout, pipeline)
        try:
            if not self.connection.sismember(REDIS_WORKER_KEYS, self.key):
                log.warning("worker registration lost (Redis restarted or flushed); registering again")
                self.connection.delete(self.key)  # a job's own heartbeat may have left a partial hash
                self.register_birth()
            return super().heartbeat(timeout, pipeline)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._redis_trouble("heartbeat", exc)

    def set_state(self, state: str, pipeline=None) -> None:
        """A concurrent worker is busy while any job is in flight. Writing only changes saves
        RQ's per-dequeue HSET, one of the round trips that bound the dequeue rate."""
        if state == WorkerStatus.IDLE and self.executions:
            state = WorkerStatus.BUSY
        if pipeline is None and state == last_state(self):
            return
        super().set_state(state, pipeline)

    def warm_shutdown(self) -> None:
        self.stop_signalled = True
        request_stop(self)
        log.info("warm shutdown: finishing the jobs in flight; signal again to stop at once")

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        while not self._slots.acquire(timeout=SLOT_WAIT_SECONDS):
            self.heartbeat()
            if stop_requested(self):
                return None
        try:
            result = self._dequeue_until_stopped(timeout, max_idle_time)
        except BaseException:
            self._slots.release()
            raise
        if result is None:
            self._slots.release()
        return result

    def _dequeue_until_stopped(self, timeout, max_idle_time):
        if timeout is None:  # burst mode: one non-blocking attempt
            return super().dequeue_job_and_maintain_ttl(None, max_idle_time)
        idle_since = time.monotonic()
        while not stop_requested(self):
            wait = DEQUEUE_WAIT_SECONDS
            if max_idle_time is not None:
                wait = min(wait, max(1, int(max_idle_time - (time.monotonic() - idle_since))))
            result = super().dequeue_job_and_maintain_ttl(min(timeout, wait), wait)
            if result is not None:
                return result
            if max_idle_time is not None and time.monotonic() - idle_since >= max_idle_time:
                return None
        return None

    def execute_job(self, job, queue) -> None:
        try:
            execution = self.prepare_execution(job)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # The job is still queued in Postgres: the reconciler enqueues it again.
            self._slots.release()
            self._redis_trouble("start a job", exc)
            return
        self._pool.submit(self._perform, job, queue, execution)

    # RQ's work loop quits on a Redis error raised outside its dequeue retry (heartbeat,
    # suspension check, maintenance). A worker must ride out a Redis restart instead.
    def check_for_suspension(self, burst: bool) -> None:
        now = time.monotonic()
        if now - self._last_suspension_check < SUSPENSION_CHECK_EVERY_SECONDS:
            return
        self._last_suspension_check = now
        try:
            super().check_for_suspension(burst)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._redis_trouble("check for suspension", exc)

    def run_maintenance_tasks(self) -> None:
        try:
            super().run_maintenance_tasks()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._redis_trouble("run maintenance", exc)

    def _redis_trouble(self, action: str, exc: Exception) -> None:
        log.warning("Redis unavailable; carrying on", extra={"action": action, "error": type(exc).__name__})
        time.sleep(REDIS_OUTAGE_PAUSE_SECONDS)

    def _perform(self, job, queue, execution) -> None:
        try:
            with job_context(job.id):  # RQ's own lines about this job carry its id too
                self.perform_job(job, queue, execution)
        except BaseException:
            log.exception("RQ bookkeeping failed for a job", extra={"job_id": job.id})
        finally:
            self._slots.release()

    def teardown(self) -> None:
        self._pool.shutdown(wait=True)
        super().teardown()
