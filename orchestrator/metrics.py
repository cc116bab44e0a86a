"""Prometheus metrics. Names follow Prometheus conventions (base units, ``_total`` counters)
and every label is bounded: method, route template, status, target, outcome, reason. Never a
job, case or key id.

Event metrics (counters, histograms) are recorded where the event happens. State metrics
(backlog, oldest queued job, workers, circuit state) are read from Postgres and Redis when
``/metrics`` is scraped, by ``StateCollector``, so every API replica reports the same truth.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

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

HTTP_REQUESTS = Counter("pedi_http_requests_total", "HTTP requests answered by the API.", ["method", "route", "status"])
HTTP_DURATION = Histogram(
    "pedi_http_request_duration_seconds",
    "Time to answer an HTTP request.",
    ["method", "route"],
    buckets=LATENCY_BUCKETS_SECONDS,
)
JOBS_SUBMITTED = Counter("pedi_jobs_submitted_total", "Jobs accepted (202) by the API.", ["kind"])
JOBS_COMPLETED = Counter("pedi_jobs_completed_total", "Jobs completed, by serving target.", ["target"])
JOBS_FAILED = Counter("pedi_jobs_failed_total", "Jobs failed, by last target and reason.", ["target", "reason"])
JOB_E2E_LATENCY = Histogram(
    "pedi_job_e2e_latency_seconds",
    "Submit to terminal state of a job.",
    ["target"],
    buckets=LATENCY_BUCKETS_SECONDS,
)
JOB_QUEUE_WAIT = Histogram(
    "pedi_job_queue_wait_seconds", "Submit to claim by a worker.", buckets=LATENCY_BUCKETS_SECONDS
)
MODEL_CALL_DURATION = Histogram(
    "pedi_model_call_duration_seconds",
    "One call to a model server, by target and outcome (ok or the error kind).",
    ["target", "outcome"],
    buckets=LATENCY_BUCKETS_SECONDS,
)
SLA_VIOLATIONS = Counter("pedi_sla_violations_total", "Jobs that finished after their SLA deadline.", ["target"])
ROUTING_DECISIONS = Counter(
    "pedi_routing_decisions_total",
    "Routing decisions by first-choice target; sla_unmeetable says no target fit the SLA.",
    ["target", "sla_unmeetable"],
)
FAILOVERS = Counter("pedi_failovers_total", "Fail-overs away from a target after a failed call.", ["target"])
HEDGES = Counter("pedi_hedges_total", "Backup (hedged) calls started, by backup target.", ["target"])
JOBS_RECOVERED = Counter("pedi_jobs_recovered_total", "Jobs the reconciler repaired, by what it found.", ["reason"])
DB_ERRORS = Counter("pedi_db_errors_total", "Database errors, by component.", ["component"])


def observe_http(method: str, route: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_DURATION.labels(method, route).observe(seconds)


class StateCollector(Collector):
    """Reads backlog and fleet state at scrape time. Each probe is a callable so the collector
    stays free of connection details; a probe that fails is skipped and counted as a DB error
    (or logged, for Redis) instead of failing the scrape."""

    def __init__(
        self,
        *,
        queue_depth: Callable[[], int],
        oldest_queued_age: Callable[[], float],
        jobs_by_status: Callable[[], dict[str, int]],
        workers_alive: Callable[[], int],
        circuit_states: Callable[[], dict[str, int]],
    ) -> None:
        self._queue_depth = queue_depth
        self._oldest = oldest_queued_age
        self._by_status = jobs_by_status
        self._workers = workers_alive
        self._circuits = circuit_states

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
            for target, state in sorted(circuits.items()):
                family.add_metric([target], state)
            yield family
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
            if kind == "db":
                DB_ERRORS.labels("metrics").inc()
            log.warning(
                "metrics probe failed", extra={"probe": getattr(probe, "__name__", "?"), "error": type(exc).__name__}
            )
            return None


def register_state_collector(collector: StateCollector, registry: CollectorRegistry = REGISTRY) -> Callable[[], None]:
    """Register ``collector``; returns a function that unregisters it (app shutdown, tests)."""
    registry.register(collector)
    return lambda: registry.unregister(collector)
