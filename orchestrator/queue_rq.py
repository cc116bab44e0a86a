"""The RQ side of the conveyor belt: the Redis connection, the ``pedi-screen`` queue, and enqueueing.

Redis carries the job id and nothing else: the RQ job's only argument is the id, its id equals
the Postgres job id, and its return value is a PHI-free summary. Postgres stays the truth.
"""

from __future__ import annotations

import logging

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry
from rq import Queue
from rq.job import Job as RQJob

from orchestrator.constants import (
    PROCESS_JOB_FUNC,
    QUEUE_NAME,
    RQ_FAILURE_TTL_SECONDS,
    RQ_JOB_TIMEOUT_SECONDS,
    RQ_RESULT_TTL_SECONDS,
)
from orchestrator.metrics import REDIS_ERRORS
from orchestrator.settings import Settings
from orchestrator.tracing import producer_span

log = logging.getLogger(__name__)

REDIS_RETRY_BACKOFF_BASE_SECONDS = 0.05
REDIS_RETRY_BACKOFF_CAP_SECONDS = 0.5
"""Backoff between tries of a Redis command whose connection dropped (s): long enough to ride
out a restart's reconnect, short enough that a request still fails fast when Redis is gone."""


def make_redis(settings: Settings) -> redis.Redis:
    """A Redis client for ``settings.redis_url`` with timeouts (REDIS_SOCKET_TIMEOUT_SECONDS per
    command, REDIS_CONNECT_TIMEOUT_SECONDS per connect), so a dead or hung Redis fails fast, and
    REDIS_RETRY_ATTEMPTS tries on a dropped connection (a restart, a reset), so a blip does not.
    Timeouts are not retried: a hung Redis already cost a full socket timeout."""
    backoff = ExponentialWithJitterBackoff(base=REDIS_RETRY_BACKOFF_BASE_SECONDS, cap=REDIS_RETRY_BACKOFF_CAP_SECONDS)
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_socket_timeout_seconds,
        socket_connect_timeout=settings.redis_connect_timeout_seconds,
        socket_keepalive=True,
        health_check_interval=30,
        retry=Retry(backoff, settings.redis_retry_attempts - 1, supported_errors=(redis.ConnectionError,)),
        retry_on_error=[redis.ConnectionError],
    )


def get_queue(connection: redis.Redis) -> Queue:
    """The ``pedi-screen`` queue on ``connection``."""
    return Queue(QUEUE_NAME, connection=connection, default_timeout=RQ_JOB_TIMEOUT_SECONDS)


def enqueue_job(queue: Queue, job_id: str, meta: dict[str, str] | None = None) -> RQJob:
    """Put job ``job_id`` on the queue for ``process_job``. ``meta`` may carry trace context
    (never PHI). Enqueueing an id again replaces RQ's record; the worker's claim makes a
    duplicate delivery a no-op. When tracing is on, the enqueue is a producer span and its W3C
    trace context joins ``meta`` so the worker's span continues the trace."""
    with producer_span(queue.name, job_id) as trace_context:
        return queue.enqueue(
            PROCESS_JOB_FUNC,
            job_id,
            job_id=job_id,
            description=f"process_job({job_id})",
            job_timeout=RQ_JOB_TIMEOUT_SECONDS,
            result_ttl=RQ_RESULT_TTL_SECONDS,
            failure_ttl=RQ_FAILURE_TTL_SECONDS,
            meta={**(meta or {}), **trace_context},
        )


def enqueue_after_commit(
    queue: Queue, job_id: str, meta: dict[str, str] | None = None, *, component: str = "api_enqueue"
) -> bool:
    """Enqueue a job whose row is already committed as queued. If Redis is down the job is not
    lost: it stays queued in Postgres and the reconciler enqueues it when Redis is back.
    Returns whether the enqueue reached Redis; a failure counts in pedi_redis_errors_total{component}."""
    try:
        enqueue_job(queue, job_id, meta)
        return True
    except redis.RedisError as exc:
        REDIS_ERRORS.labels(component).inc()
        log.warning(
            "enqueue failed; the reconciler will enqueue the job when Redis is back",
            extra={"job_id": job_id, "error": type(exc).__name__},
        )
        return False
