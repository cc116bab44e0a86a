"""Per-key quotas on submissions: requests per minute, jobs in flight, a daily cost budget.

Each principal's limits come from its API_KEYS_JSON entry (``rpm``, ``max_in_flight``,
``daily_budget_usd``), else from the QUOTA_* settings; None is no limit. Over a limit the
submission is answered 429 with ``Retry-After`` and a body naming the limit
(``QuotaExceeded``), and nothing is written.

* **rpm**: the ``limits`` library's moving window in Redis (exact: the time of each of the last
  ``rpm`` submissions, so memory per key grows with its rpm), shared by every API replica. If
  Redis does not answer, the limiter fails open: the request goes on, a WARNING is logged and
  ``pedi_redis_errors_total{component="quota"}`` counts it (an outage of the rate limiter must
  not become an outage of intake; in-flight and budget still hold).
* **max_in_flight**: the key's jobs in Postgres with status queued or running (``jobs.actor`` is
  the key id), checked by intake in the statement that inserts the job, and exact. Postgres is
  the truth: a Redis counter would drift whenever a worker dies, a job is recovered or Redis loses
  its data, and this count reads only the active jobs (index on status). Only for a key with a
  limit, intake serialises its submissions: a READ COMMITTED transaction takes
  ``pg_advisory_xact_lock(in_flight_lock_id(key))``, then the INSERT inserts only while the count
  is below the limit (the statement starts after the lock is granted, so it sees every job the
  previous holder committed), then COMMIT releases the lock: three round trips instead of one.
  Keys without the limit keep the one-statement path. On SQLite the transaction first takes the
  database's write lock, which serialises it with every other writer. An Idempotency-Key replay
  is answered with its job even at the limit (a replay adds no job).
* **daily_budget_usd**: the sum of ``jobs.cost_usd`` (the recorded cost of every model call of a
  job) of the key's jobs created since 00:00 UTC. Cost is recorded when a job ends, so jobs in
  flight are not counted yet: the budget stops new work once it is spent, it does not cap it
  exactly.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

import redis
from fastapi import Depends, Request
from limits import RateLimitItemPerMinute
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from orchestrator.app.auth import Authorize
from orchestrator.constants import RETRY_AFTER_SECONDS
from orchestrator.db import session_scope
from orchestrator.errors import QuotaExceeded
from orchestrator.metrics import QUOTA_REJECTIONS, REDIS_ERRORS
from orchestrator.models import Job, JobStatus
from orchestrator.principals import Principal, Scope
from orchestrator.settings import Settings

log = logging.getLogger(__name__)

LIMITER_KEY_PREFIX = "pedi:quota"
"""Prefix of the limiter's Redis keys: ``pedi:quota/...`` (key ids only; no PHI)."""
RPM_NAMESPACE = "submit"
IN_FLIGHT_LOCK_NAMESPACE = "pedi:in_flight:"
"""Hashed with the key id into its advisory lock id, apart from any other advisory lock."""
ACTIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)


@dataclass(frozen=True)
class Limits:
    """The effective limits of one principal (None: no limit)."""

    rpm: int | None
    max_in_flight: int | None
    daily_budget_usd: float | None


def limits_of(principal: Principal, settings: Settings) -> Limits:
    own = principal.quota

    def pick(name: str, default):
        value = getattr(own, name) if own is not None else None
        return value if value is not None else default

    return Limits(
        rpm=pick("rpm", settings.quota_rpm),
        max_in_flight=pick("max_in_flight", settings.quota_max_in_flight),
        daily_budget_usd=pick("daily_budget_usd", settings.quota_daily_budget_usd),
    )


class Quotas:
    """The quota check of one API process, over the Redis connection pool it already has."""

    def __init__(self, settings: Settings, connection: redis.Redis) -> None:
        self.settings = settings
        pool = connection.connection_pool
        storage = RedisStorage(settings.redis_url, connection_pool=pool, key_prefix=LIMITER_KEY_PREFIX)
        self._limiter = MovingWindowRateLimiter(storage)

    def check(self, session: Session, principal: Principal, limits: Limits | None = None) -> None:
        """Raise ``QuotaExceeded`` if ``principal`` is over its rate or its daily budget. The rpm
        window counts this request; the budget check only reads. Jobs in flight are checked by
        intake as it inserts the job (``refuse_in_flight``)."""
        limits = limits or limits_of(principal, self.settings)
        if limits.rpm is not None:
            self._check_rate(principal, limits.rpm)
        if limits.daily_budget_usd is None:
            return
        start = day_start(datetime.now(UTC))
        spent = spent_since(session, principal.key_id, start)
        if spent >= limits.daily_budget_usd:
            until = start + timedelta(days=1) - datetime.now(UTC)
            _reject(
                principal.key_id,
                "daily_budget_usd",
                f"{limits.daily_budget_usd:g} USD of model calls per UTC day (spent {spent:.4f})",
                until.total_seconds(),
            )

    def _check_rate(self, principal: Principal, rpm: int) -> None:
        item = RateLimitItemPerMinute(rpm)
        try:
            if self._limiter.hit(item, RPM_NAMESPACE, principal.key_id):
                return
            reset_at = self._limiter.get_window_stats(item, RPM_NAMESPACE, principal.key_id).reset_time
        except redis.RedisError as exc:
            REDIS_ERRORS.labels("quota").inc()
            log.warning("rate limiter unavailable; failing open", extra={"error": type(exc).__name__})
            return
        _reject(principal.key_id, "rpm", f"{rpm} submissions per minute", reset_at - time.time())


def _reject(key_id: str, limit: str, what: str, retry_after_s: float) -> None:
    QUOTA_REJECTIONS.labels(key_id, limit).inc()
    retry_after = max(1, math.ceil(retry_after_s))
    raise QuotaExceeded(limit, f"{key_id} is over its limit {limit} ({what})", retry_after)


def refuse_in_flight(key_id: str, max_in_flight: int) -> None:
    """Raise the ``max_in_flight`` QuotaExceeded of ``key_id`` (counted); intake calls it when
    the key's capped INSERT wrote nothing because the key was at its limit."""
    _reject(key_id, "max_in_flight", f"{max_in_flight} jobs queued or running at once", RETRY_AFTER_SECONDS)


def in_flight_lock_id(key_id: str) -> int:
    """The Postgres advisory lock (a signed 64-bit id) that serialises the capped submissions of
    ``key_id``. Two keys sharing one (a hash collision) only wait for each other."""
    digest = hashlib.blake2b(f"{IN_FLIGHT_LOCK_NAMESPACE}{key_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def in_flight_of(key_id) -> Select:
    """``SELECT count(*)`` of the key's jobs queued or running (``key_id``: a value or a bound
    parameter, so intake can put it inside its INSERT)."""
    return select(func.count()).select_from(Job).where(Job.status.in_(ACTIVE), Job.actor == key_id)


def spent_since(session: Session, key_id: str, start: datetime) -> float:
    """The recorded model-call cost in USD of the key's jobs created since ``start``."""
    spent = select(func.coalesce(func.sum(Job.cost_usd), 0.0)).where(Job.created_at >= start, Job.actor == key_id)
    return float(session.scalar(spent) or 0.0)


def day_start(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def quotas_of(request: Request) -> Quotas:
    """The app's quota checker, built on first use from its services (one per API process)."""
    state = request.app.state
    quotas = getattr(state, "quotas", None)
    if quotas is None:
        services = state.services
        quotas = state.quotas = Quotas(services.settings, services.redis)
    return quotas


_submitter = Authorize(Scope.SUBMIT)


async def submit_within_quota(request: Request, principal: Annotated[Principal, Depends(_submitter)]) -> Principal:
    """FastAPI dependency of the submit routes: the caller holds ``submit`` and is within its
    quotas (401 / 403 / 429 otherwise). With no limit for this key it does nothing more; with
    rate or a budget, the check (Redis, Postgres) runs in the thread pool on a session of its own.
    ``max_in_flight`` is not checked here: the route passes it to intake, which enforces it as it
    inserts the job (``in_flight_cap``)."""
    services = request.app.state.services
    limits = limits_of(principal, services.settings)
    if limits.rpm is not None or limits.daily_budget_usd is not None:
        await run_in_threadpool(_check_in_session, request, principal, limits)
    return principal


def in_flight_cap(principal: Principal, settings: Settings) -> int | None:
    """The ``max_in_flight`` of ``principal`` (None: no limit), for the submit routes to pass to
    intake."""
    return limits_of(principal, settings).max_in_flight


def _check_in_session(request: Request, principal: Principal, limits: Limits) -> None:
    services = request.app.state.services
    with session_scope(services.intake_sessions) as session:
        quotas_of(request).check(session, principal, limits)


QuotaDep = Annotated[Principal, Depends(submit_within_quota)]
"""``SubmitDep`` plus the quota check: what a route that creates jobs declares."""
