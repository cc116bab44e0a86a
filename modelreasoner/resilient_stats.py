"""A StatsStore decorator that keeps jobs moving when Redis hiccups.

The shared routing stats (latency estimates, error rates, circuit state, calls in flight) make
routing better, but a job does not need them to be screened. If Redis fails, a snapshot becomes
the priors (``TargetStats()`` per target), and an update or an in-flight mark is skipped: the job
is routed on what the configuration says and goes on, instead of failing or being stranded.
Failures are logged (rate-limited, so an outage does not flood the log) and counted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import redis

from orchestrator.errors import StatsContention
from orchestrator.routing.stats import SloUpdate, StatsStore, Update
from orchestrator.routing.types import SloClassStats, TargetStats

log = logging.getLogger(__name__)

LOG_EVERY_SECONDS = 30.0
"""At most one warning per operation this often (s) while Redis stays down."""


class ResilientStatsStore:
    """Wraps a StatsStore: Redis errors become a logged, degraded answer instead of an exception.

    Methods the wrapped store has beyond the StatsStore protocol are passed through unchanged.
    """

    def __init__(self, inner: StatsStore, *, log_every_seconds: float = LOG_EVERY_SECONDS) -> None:
        self.inner = inner
        self.failures = 0
        """Redis errors absorbed since start (for tests and debugging)."""
        self._log_every = log_every_seconds
        self._last_logged: dict[str, float] = {}
        self._lock = threading.Lock()

    def snapshot(self, names: Iterable[str], now: float) -> dict[str, TargetStats]:
        names = list(names)
        try:
            return self.inner.snapshot(names, now)
        except redis.RedisError as exc:
            self._absorbed("snapshot", exc)
            return {name: TargetStats() for name in names}

    def update(self, name: str, fn: Update) -> TargetStats:
        try:
            return self.inner.update(name, fn)
        except (redis.RedisError, StatsContention) as exc:  # losing one sample beats failing a job
            self._absorbed("update", exc)
            return TargetStats()

    def call_started(self, name: str, call_id: str, now: float) -> None:
        try:
            self.inner.call_started(name, call_id, now)
        except redis.RedisError as exc:
            self._absorbed("call_started", exc)

    def call_ended(self, name: str, call_id: str) -> None:
        try:
            self.inner.call_ended(name, call_id)
        except redis.RedisError as exc:
            self._absorbed("call_ended", exc)

    def slo_record(self, label: str) -> SloClassStats:
        try:
            return self.inner.slo_record(label)
        except redis.RedisError as exc:
            self._absorbed("slo_record", exc)
            return SloClassStats()

    def update_slo(self, label: str, fn: SloUpdate) -> SloClassStats:
        try:
            return self.inner.update_slo(label, fn)
        except (redis.RedisError, StatsContention) as exc:
            self._absorbed("update_slo", exc)
            return SloClassStats()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _absorbed(self, operation: str, exc: Exception) -> None:
        now = time.monotonic()
        with self._lock:
            self.failures += 1
            last = self._last_logged.get(operation)
            if last is not None and now - last < self._log_every:
                return
            self._last_logged[operation] = now
            failures = self.failures
        log.warning(
            "shared routing stats unavailable; routing on priors",
            extra={"operation": operation, "error": type(exc).__name__, "failures": failures},
        )
