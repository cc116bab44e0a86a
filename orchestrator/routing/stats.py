"""Where learned TargetStats live: a small store interface with two implementations.

``InMemoryStatsStore`` serves simulations and tests; ``RedisStatsStore`` is shared by every
worker. Both apply the same pure update functions (``learning.observe``/``with_telemetry``)
through ``update(name, fn)``, atomically: a lock in memory, WATCH/MULTI in Redis.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Protocol

import redis

from orchestrator.constants import INFLIGHT_KEY, INFLIGHT_STALE_SECONDS, SLO_CLASS_KEY, STATS_KEY
from orchestrator.errors import StatsContention
from orchestrator.routing.types import SloClassStats, TargetStats

Update = Callable[[TargetStats], TargetStats]
SloUpdate = Callable[[SloClassStats], SloClassStats]

_NEVER = TargetStats()

REDIS_UPDATE_RETRIES = 50
"""Optimistic-transaction retries before giving up on one stats update (contention is brief)."""


def _stored(stats: TargetStats) -> TargetStats:
    """``stats`` without the fields a snapshot fills in from the calls in flight."""
    if stats.in_flight or stats.oldest_in_flight_at:
        return replace(stats, in_flight=0, oldest_in_flight_at=0.0)
    return stats


class StatsStore(Protocol):
    """Shared, atomic storage of per-target statistics and in-flight calls."""

    def snapshot(self, names: Iterable[str], now: float) -> dict[str, TargetStats]:
        """Current stats of each named target, with ``in_flight`` and ``oldest_in_flight_at``
        filled in."""
        ...

    def update(self, name: str, fn: Update) -> TargetStats:
        """Atomically replace the stats of ``name`` with ``fn(current)``; return the result."""
        ...

    def call_started(self, name: str, call_id: str, now: float) -> None: ...

    def call_ended(self, name: str, call_id: str) -> None: ...

    # Optional (a store without them leaves objectives below 1 at their static bar):
    # ``slo_record(label) -> SloClassStats`` and ``update_slo(label, fn) -> SloClassStats``.


class InMemoryStatsStore:
    """A StatsStore for one process: simulations, tests and the dry-run of a single worker."""

    def __init__(self) -> None:
        self._stats: dict[str, TargetStats] = {}
        self._inflight: dict[str, dict[str, float]] = {}
        self._slo: dict[str, SloClassStats] = {}
        self._lock = threading.Lock()

    def snapshot(self, names: Iterable[str], now: float) -> dict[str, TargetStats]:
        with self._lock:
            result = {}
            for name in names:
                live = [
                    started
                    for started in self._inflight.get(name, {}).values()
                    if now - started < INFLIGHT_STALE_SECONDS
                ]
                stats = self._stats.get(name, _NEVER)
                if live:
                    stats = replace(stats, in_flight=len(live), oldest_in_flight_at=min(live))
                result[name] = stats
            return result

    def update(self, name: str, fn: Update) -> TargetStats:
        with self._lock:
            new = _stored(fn(self._stats.get(name, _NEVER)))
            self._stats[name] = new
            return new

    def slo_record(self, label: str) -> SloClassStats:
        """How the SLA class ``label`` is doing."""
        with self._lock:
            return self._slo.get(label, SloClassStats())

    def update_slo(self, label: str, fn: SloUpdate) -> SloClassStats:
        with self._lock:
            new = self._slo[label] = fn(self._slo.get(label, SloClassStats()))
            return new

    def call_started(self, name: str, call_id: str, now: float) -> None:
        with self._lock:
            self._inflight.setdefault(name, {})[call_id] = now

    def call_ended(self, name: str, call_id: str) -> None:
        with self._lock:
            self._inflight.get(name, {}).pop(call_id, None)


class RedisStatsStore:
    """A StatsStore shared by every worker through Redis.

    Stats are one JSON string per target (``pedi:stats:<name>``); in-flight calls are a sorted
    set of call ids scored by start time (``pedi:inflight:<name>``), so a worker that dies
    mid-call stops counting after INFLIGHT_STALE_SECONDS instead of leaking forever.
    """

    def __init__(self, connection: redis.Redis) -> None:
        self._redis = connection

    def snapshot(self, names: Iterable[str], now: float) -> dict[str, TargetStats]:
        names = list(names)
        since = now - INFLIGHT_STALE_SECONDS
        with self._redis.pipeline(transaction=False) as pipe:
            for name in names:
                key = INFLIGHT_KEY.format(target=name)
                pipe.get(STATS_KEY.format(target=name))
                pipe.zcount(key, since, "+inf")
                pipe.zrangebyscore(key, since, "+inf", start=0, num=1, withscores=True)
            raw = pipe.execute()
        result = {}
        for index, name in enumerate(names):
            blob, live, oldest = raw[3 * index : 3 * index + 3]
            stats = TargetStats.from_dict(json.loads(blob)) if blob else TargetStats()
            result[name] = replace(stats, in_flight=int(live), oldest_in_flight_at=oldest[0][1] if oldest else 0.0)
        return result

    def update(self, name: str, fn: Update) -> TargetStats:
        return self._update(STATS_KEY.format(target=name), TargetStats, lambda s: _stored(fn(s)))

    def slo_record(self, label: str) -> SloClassStats:
        """How the SLA class ``label`` is doing, fleet-wide."""
        blob = self._redis.get(SLO_CLASS_KEY.format(label=label))
        return SloClassStats.from_dict(json.loads(blob)) if blob else SloClassStats()

    def update_slo(self, label: str, fn: SloUpdate) -> SloClassStats:
        return self._update(SLO_CLASS_KEY.format(label=label), SloClassStats, fn)

    def _update(self, key: str, kind, fn):
        """Optimistic read-modify-write of one JSON record (WATCH/MULTI, retried on a race)."""
        with self._redis.pipeline() as pipe:
            for _ in range(REDIS_UPDATE_RETRIES):
                try:
                    pipe.watch(key)
                    blob = pipe.get(key)
                    new = fn(kind.from_dict(json.loads(blob)) if blob else kind())
                    pipe.multi()
                    pipe.set(key, json.dumps(new.to_dict()))
                    pipe.execute()
                    return new
                except redis.WatchError:
                    continue
        raise StatsContention(f"stats update of {key} lost {REDIS_UPDATE_RETRIES} races in a row")

    def call_started(self, name: str, call_id: str, now: float) -> None:
        key = INFLIGHT_KEY.format(target=name)
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(key, {call_id: now})
            pipe.zremrangebyscore(key, "-inf", now - INFLIGHT_STALE_SECONDS)
            pipe.execute()

    def call_ended(self, name: str, call_id: str) -> None:
        self._redis.zrem(INFLIGHT_KEY.format(target=name), call_id)
