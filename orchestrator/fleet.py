"""Read-only views of the backlog and the worker fleet, for metrics, readiness and the console."""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime

import redis
from rq import Queue, Worker
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from orchestrator.constants import RECONCILER_LAST_PASS_KEY, REDIS_PREFIX
from orchestrator.models import ACTIVE_STATUSES, Job, JobStatus
from orchestrator.routing.learning import at_time
from orchestrator.routing.types import CircuitState, TargetStats

CIRCUIT_GAUGE = {CircuitState.CLOSED.value: 0, CircuitState.HALF_OPEN.value: 1, CircuitState.OPEN.value: 2}


def queue_depth(queue: Queue) -> int:
    """Job ids waiting in Redis (not yet taken by a worker)."""
    return queue.count


def oldest_queued_age_seconds(engine: Engine, now: datetime | None = None) -> float:
    """Age of the oldest job queued in Postgres, in seconds; 0 when nothing is queued."""
    with engine.connect() as connection:
        oldest = connection.scalar(select(func.min(Job.created_at)).where(Job.status == JobStatus.QUEUED.value))
    if oldest is None:
        return 0.0
    if oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    return max(((now or datetime.now(UTC)) - oldest).total_seconds(), 0.0)


def jobs_by_status(engine: Engine) -> dict[str, int]:
    """How many jobs are queued and running right now (terminal ones are counters, not state)."""
    counts = {status.value: 0 for status in ACTIVE_STATUSES}
    with engine.connect() as connection:
        rows = connection.execute(
            select(Job.status, func.count()).where(Job.status.in_(list(counts))).group_by(Job.status)
        )
        counts.update({status: count for status, count in rows})
    return counts


def workers_alive(connection: redis.Redis, queue: Queue) -> int:
    """RQ workers registered (heartbeating) on the queue."""
    return Worker.count(connection=connection, queue=queue)


def reconciler_last_pass_age_seconds(connection: redis.Redis, now: float | None = None) -> float:
    """Seconds since any process last finished a reconciliation pass; +Inf when none is recorded
    (no reconciler runs anywhere, or Redis lost the key and no pass has run since)."""
    value = connection.get(RECONCILER_LAST_PASS_KEY)
    if value is None:
        return math.inf
    return max((time.time() if now is None else now) - float(value), 0.0)


def circuit_states(connection: redis.Redis) -> dict[str, int]:
    """Circuit gauge value (0 closed, 1 half-open, 2 open) of every target with shared stats."""
    prefix = REDIS_PREFIX + "stats:"
    keys = sorted(connection.scan_iter(match=prefix + "*", count=100))
    if not keys:
        return {}
    now = datetime.now(UTC).timestamp()
    states = {}
    for key, blob in zip(keys, connection.mget(keys), strict=True):
        if blob:
            stats = at_time(TargetStats.from_dict(json.loads(blob)), now)
            name = key.decode() if isinstance(key, bytes) else key
            states[name.removeprefix(prefix)] = CIRCUIT_GAUGE[stats.circuit.value]
    return states
