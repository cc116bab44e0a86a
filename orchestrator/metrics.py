"""Prometheus metrics. Names follow Prometheus conventions (base units, ``_total`` counters)
and every label is bounded: method, route template, status, target (``TargetLabels``), outcome,
reason. Never a job or case id; a key id (of a configured key) only on quota rejections.

Event metrics (counters, histograms) are recorded where the event happens. State metrics
(backlog, oldest queued job, workers, circuit state) are read from Postgres and Redis when
``/metrics`` is scraped, by ``StateCollector``, so every API replica reports the same truth.
Job-outcome metrics live in the worker process that ran the job; the end of this module is how
they reach Prometheus from each worker entry point (docs/observability.md).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from enum import StrEnum

import redis
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    start_http_server,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from rq import Worker

log = logging.getLogger(__name__)

# The *_created series double every counter's cardinality and no dashboard or rule uses them.
disable_created_metrics()

LATENCY_BUCKETS_SECONDS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    2.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)
"""Include the SLA boundaries users pick most (0.3 s, 2 s, 10 s) so SLA ratios are exact."""

OTHER_TARGET = "other"
"""The label value of every target name past the bound (see ``TargetLabels``)."""
PASS_THROUGH_TARGETS = frozenset({"none", "unknown", OTHER_TARGET})
"""Label values the worker uses for 'no target'; never registrable as target names."""


class TargetLabels:
    """Bounded label values for target names, so hostile or churning registrations cannot grow
    /metrics: configured names always pass; other (registered) names are admitted first come up
    to ``room`` (MAX_REGISTERED_TARGETS) per process; every later name is ``other``."""

    def __init__(self, room: int = 256) -> None:
        self._reserved: frozenset[str] = frozenset()
        self._admitted: set[str] = set()
        self._room = room
        self._lock = threading.Lock()

    def configure(self, reserved: Iterable[str], room: int) -> None:
        with self._lock:
            self._reserved = frozenset(reserved)
            self._room = room

    def __call__(self, name: object) -> str:
        value = str(name)
        if value in self._reserved or value in PASS_THROUGH_TARGETS:
            return value
        with self._lock:
            if value in self._admitted:
                return value
            if len(self._admitted) < self._room:
                self._admitted.add(value)
                return value
        return OTHER_TARGET


TARGET_LABELS = TargetLabels()


class _TargetFirst:
    """A metric whose first label is a target name, bounded through ``TARGET_LABELS``."""

    def labels(self, *values, **named):
        if values:
            values = (TARGET_LABELS(values[0]), *values[1:])
        if "target" in named:
            named["target"] = TARGET_LABELS(named["target"])
        return super().labels(*values, **named)


class TargetCounter(_TargetFirst, Counter):
    pass


class TargetHistogram(_TargetFirst, Histogram):
    pass


HTTP_REQUESTS = Counter("pedi_http_requests_total", "HTTP requests answered by the API.", ["method", "route", "status"])
HTTP_DURATION = Histogram(
    "pedi_http_request_duration_seconds",
    "Time to answer an HTTP request.",
    ["method", "route"],
    buckets=LATENCY_BUCKETS_SECONDS,
)
JOBS_SUBMITTED = Counter("pedi_jobs_submitted_total", "Jobs accepted (202) by the API.", ["kind"])
JOBS_COMPLETED = TargetCounter("pedi_jobs_completed_total", "Jobs completed, by serving target.", ["target"])
JOBS_FAILED = TargetCounter("pedi_jobs_failed_total", "Jobs failed, by last target and reason.", ["target", "reason"])
JOB_E2E_LATENCY = TargetHistogram(
    "pedi_job_e2e_latency_seconds",
    "Submit to terminal state of a job.",
    ["target"],
    buckets=LATENCY_BUCKETS_SECONDS,
)
JOB_QUEUE_WAIT = Histogram(
    "pedi_job_queue_wait_seconds", "Submit to claim by a worker.", buckets=LATENCY_BUCKETS_SECONDS
)
MODEL_CALL_DURATION = TargetHistogram(
    "pedi_model_call_duration_seconds",
    "One call to a model server, by target and outcome (ok or the error kind).",
    ["target", "outcome"],
    buckets=LATENCY_BUCKETS_SECONDS,
)
SLA_VIOLATIONS = TargetCounter("pedi_sla_violations_total", "Jobs that finished after their SLA deadline.", ["target"])
ROUTING_DECISIONS = TargetCounter(
    "pedi_routing_decisions_total",
    "Routing decisions by first-choice target; sla_unmeetable says no target fit the SLA.",
    ["target", "sla_unmeetable"],
)
FAILOVERS = TargetCounter("pedi_failovers_total", "Fail-overs away from a target after a failed call.", ["target"])
HEDGES = TargetCounter("pedi_hedges_total", "Backup (hedged) calls started, by backup target.", ["target"])
JOBS_RECOVERED = Counter("pedi_jobs_recovered_total", "Jobs the reconciler repaired, by what it found.", ["reason"])
JOBS_UNDELIVERABLE = Counter(
    "pedi_jobs_undeliverable_total",
    "Queued jobs failed as undeliverable: requeued JOB_MAX_REQUEUES times and never claimed.",
)
JOB_STEP_FAILURES = Counter(
    "pedi_job_step_failures_total",
    "Jobs a worker failed because a step (claim, route, persist) raised a non-transient error.",
    ["step"],
)
STALE_RETRIES = Counter(
    "pedi_model_call_stale_connection_retries_total",
    "Model calls sent again on a new connection: the reused one was closed by the server.",
    ["target"],
)
DB_ERRORS = Counter("pedi_db_errors_total", "Database errors, by component.", ["component"])
REDIS_ERRORS = Counter("pedi_redis_errors_total", "Redis errors caught and survived, by component.", ["component"])
QUOTA_REJECTIONS = Counter(
    "pedi_quota_rejections_total",
    "Submissions refused 429 by a quota, by key id and limit (rpm, max_in_flight, daily_budget_usd).",
    ["key_id", "limit"],
)
"""Bounded: key ids come from the configured principals only (an unknown key is 401 first)."""


def observe_http(method: str, route: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_DURATION.labels(method, route).observe(seconds)


class StateCollector(Collector):
    """Reads backlog and fleet state at scrape time. Each probe is a callable so the collector
    stays free of connection details; a probe that fails is skipped, logged and counted as a DB
    or Redis error (component ``metrics``) instead of failing the scrape."""

    def __init__(
        self,
        *,
        queue_depth: Callable[[], int],
        oldest_queued_age: Callable[[], float],
        jobs_by_status: Callable[[], dict[str, int]],
        workers_alive: Callable[[], int],
        circuit_states: Callable[[], dict[str, int]],
        reconciler_last_pass_age: Callable[[], float],
        phi_retention_overdue: Callable[[], float] | None = None,
    ) -> None:
        self._queue_depth = queue_depth
        self._oldest = oldest_queued_age
        self._by_status = jobs_by_status
        self._workers = workers_alive
        self._circuits = circuit_states
        self._reconciler_age = reconciler_last_pass_age
        self._phi_overdue = phi_retention_overdue
        """None: PHI retention is off, and its gauge is not exported."""

    def describe(self) -> Iterable:
        return []

    def collect(self) -> Iterable[GaugeMetricFamily]:
        started = time.monotonic()
        depth = self._probe("redis", self._queue_depth)
        if depth is not None:
            yield GaugeMetricFamily("pedi_queue_depth", "Job ids waiting on the pedi-screen queue.", value=depth)
        oldest = self._probe("db", self._oldest)
        if oldest is not None:
            yield GaugeMetricFamily(
                "pedi_oldest_queued_job_age_seconds",
                "Age of the oldest job still queued in Postgres (0 when none).",
                value=oldest,
            )
        by_status = self._probe("db", self._by_status)
        if by_status is not None:
            family = GaugeMetricFamily("pedi_jobs", "Jobs currently in each active status.", labels=["status"])
            for status, count in sorted(by_status.items()):
                family.add_metric([status], count)
            yield family
        workers = self._probe("redis", self._workers)
        if workers is not None:
            yield GaugeMetricFamily("pedi_workers_alive", "RQ workers registered on pedi-screen.", value=workers)
        circuits = self._probe("redis", self._circuits)
        if circuits is not None:
            family = GaugeMetricFamily(
                "pedi_circuit_state", "Circuit state per target: 0 closed, 1 half-open, 2 open.", labels=["target"]
            )
            bounded: dict[str, int] = {}
            for target, state in circuits.items():  # hostile names: bounded labels, worst state wins
                label = TARGET_LABELS(target)
                bounded[label] = max(state, bounded.get(label, 0))
            for target, state in sorted(bounded.items()):
                family.add_metric([target], state)
            yield family
        age = self._probe("redis", self._reconciler_age)
        if age is not None:
            yield GaugeMetricFamily(
                "pedi_reconciler_last_pass_age_seconds",
                "Seconds since any process finished a reconciliation pass (+Inf: none recorded).",
                value=age,
            )
        overdue = self._probe("db", self._phi_overdue) if self._phi_overdue is not None else None
        if overdue is not None:
            yield GaugeMetricFamily(
                "pedi_phi_retention_overdue_seconds",
                "How long past PHI_RETENTION_DAYS the oldest unerased PHI of a finished job is (0: up to date).",
                value=overdue,
            )
        yield GaugeMetricFamily(
            "pedi_state_scrape_duration_seconds",
            "Time spent reading backlog and fleet state for this scrape.",
            value=time.monotonic() - started,
        )

    @staticmethod
    def _probe(kind: str, probe: Callable):
        try:
            return probe()
        except Exception as exc:  # a scrape must not fail because a store is down
            (DB_ERRORS if kind == "db" else REDIS_ERRORS).labels("metrics").inc()
            log.warning(
                "metrics probe failed", extra={"probe": getattr(probe, "__name__", "?"), "error": type(exc).__name__}
            )
            return None


def register_state_collector(collector: StateCollector, registry: CollectorRegistry = REGISTRY) -> Callable[[], None]:
    """Register ``collector``; returns a function that unregisters it (app shutdown, tests)."""
    registry.register(collector)
    return lambda: registry.unregister(collector)


# --- worker export ------------------------------------------------------------------------------
#
# Job-outcome metrics are recorded by whichever process runs the job:
# * `python -m modelreasoner.worker` (threaded): in its own memory, served on METRICS_PORT.
# * `rq worker pedi-screen -w modelreasoner.worker.ForkingMetricsWorker`: each job runs in a forked
#   process that exits afterwards, so job processes write their metrics to files in a per-worker
#   multiprocess directory and the long-lived parent serves them (ForkedJobMetrics).
# * a bare `rq worker pedi-screen`: nobody can serve them; the first job logs a WARNING saying so.

MULTIPROC_DIR_PREFIX = "pedi-worker-metrics-"
"""Prefix of the directory a forking worker creates (under PROMETHEUS_MULTIPROC_DIR if set, else
the system temp dir) and removes at exit."""
PARENT_FILE_ID = "parent"
JOB_FILE_ID = "job"
"""Multiprocess file suffixes (counter_parent.db, counter_job.db, histogram_job.db). An RQ worker
runs one job process at a time, so every job process of a worker reuses the same files: their
number stays constant however many jobs run, and a scrape reads two or three small files."""
EXPORT_WARNING_FIELD = "pedi_metrics_warning"
"""Field set on the RQ worker's own hash (rq:worker:<name>) once its job processes warned that
their metrics are not exported, so a bare forking worker warns once, not once per job."""


class WorkerExport(StrEnum):
    IN_PROCESS = "in_process"
    MULTIPROCESS = "multiprocess"
    OFF = "off"
    """METRICS_PORT unset: metrics deliberately not served."""


_worker_export: WorkerExport | None = None


def worker_export() -> WorkerExport | None:
    """How this process's job metrics reach Prometheus; None: nobody set it up."""
    return _worker_export


def serve_worker_metrics(port: int | None) -> None:
    """Non-forking worker: metrics stay in this process; serve them on ``port`` (None: don't)."""
    global _worker_export
    if port:
        start_http_server(port)
    _worker_export = WorkerExport.IN_PROCESS if port else WorkerExport.OFF


def _use_multiprocess_files(path: str) -> None:
    """Back every metric value of this process and its forks by mmap files in ``path``.

    The value class is switched after metrics were defined (importing the worker class imports
    them), so metrics already holding values are re-initialised: labelled ones drop their
    (unused) children, unlabelled ones get a file-backed value. Relies on prometheus_client
    internals (pinned; tests/observability run a real forking worker and scrape it)."""
    owner = os.getpid()
    values.ValueClass = values.MultiProcessValue(lambda: PARENT_FILE_ID if os.getpid() == owner else JOB_FILE_ID)
    metrics = [c for c in list(getattr(REGISTRY, "_collector_to_names", {})) if isinstance(c, MetricWrapperBase)]
    for metric in metrics:
        if metric._labelnames:
            metric.clear()  # before the variable is set: clear() warns in multiprocess mode
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path  # job processes inherit it
    for metric in metrics:
        if not metric._labelnames:
            metric._metric_init()


class ForkedJobMetrics:
    """Serves the metrics of a forking worker's job processes on ``port`` from the parent, out of
    a multiprocess directory this object creates and removes (``close``)."""

    def __init__(self, port: int) -> None:
        global _worker_export
        self.dir = tempfile.mkdtemp(prefix=MULTIPROC_DIR_PREFIX, dir=os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self._owner = os.getpid()
        _use_multiprocess_files(self.dir)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.dir)
        self._server, _ = start_http_server(port, registry=registry)
        _worker_export = WorkerExport.MULTIPROCESS
        atexit.register(self.close)
        log.info("serving job-process metrics", extra={"port": port, "multiprocess_dir": self.dir})

    def close(self) -> None:
        """Stop serving and remove the directory (idempotent; only in the process that made it)."""
        if os.getpid() != self._owner or self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None
        values.close_all_multiprocess_files()
        shutil.rmtree(self.dir, ignore_errors=True)


def mark_worker_metrics_off() -> None:
    global _worker_export
    _worker_export = WorkerExport.OFF


def warn_if_job_metrics_unexported(rq_job) -> None:
    """Log one WARNING per worker when jobs run where no one exports their metrics (a bare
    forking ``rq worker``), instead of losing them silently."""
    if _worker_export is not None or rq_job is None or not rq_job.worker_name:
        return
    try:
        key = Worker.redis_worker_namespace_prefix + rq_job.worker_name
        first = bool(rq_job.connection.hsetnx(key, EXPORT_WARNING_FIELD, 1))
    except redis.RedisError:
        REDIS_ERRORS.labels("worker").inc()
        first = True
    if first:
        log.warning(
            "per-job metrics of this worker are not exported (a bare `rq worker` runs each job in a "
            "forked process whose metrics die with it). Run `rq worker pedi-screen -w "
            "modelreasoner.worker.ForkingMetricsWorker` (or set RQ_WORKER_CLASS to it) with METRICS_PORT "
            "set, or the threaded `python -m modelreasoner.worker`; see docs/observability.md",
            extra={"worker": rq_job.worker_name},
        )
