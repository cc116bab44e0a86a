"""What the reconciler compares: the jobs Postgres says are queued (and since when, and how often
they were requeued without a claim) against the ids RQ holds in Redis. Read-only helpers of
``orchestrator.reconciler``."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from rq import Queue
from rq.registry import StartedJobRegistry
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.db import session_scope
from orchestrator.models import Audit, Job, JobStatus

BATCH = 500
"""Jobs read from Postgres per query (rows): passes stay short and memory flat with any backlog."""
ENQUEUE_EVENTS = ("submitted", "requeued", "recovered")
"""Audit events after which a job is (supposed to be) on the queue."""


@dataclass(frozen=True)
class RQView:
    """Where RQ has job ids: ``waiting`` on the queue list; ``taken`` by a worker (moved to the
    intermediate list, or registered as started and not yet expired)."""

    waiting: frozenset[str]
    taken: frozenset[str]


def rq_view(queue: Queue, now: datetime) -> RQView:
    """One consistent read of the queue list, the intermediate list and the started registry."""
    started_key = StartedJobRegistry(queue=queue).key
    with queue.connection.pipeline(transaction=True) as pipe:
        pipe.lrange(queue.key, 0, -1)
        pipe.lrange(queue.intermediate_queue_key, 0, -1)
        pipe.zrangebyscore(started_key, now.timestamp(), "+inf")
        waiting, intermediate, started = pipe.execute()
    taken = {_text(i) for i in intermediate} | {StartedJobRegistry.parse_job_id(_text(e)) for e in started}
    return RQView(frozenset(_text(i) for i in waiting), frozenset(taken))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def queued_before(sessions: sessionmaker[Session], cutoff: datetime) -> dict[uuid.UUID, datetime]:
    """Jobs queued in Postgres whose last enqueue (submit, requeue, recovery) is older than
    ``cutoff``, with that time. Reads every such job, BATCH rows at a time."""
    found: dict[uuid.UUID, datetime] = {}
    after: tuple[datetime, uuid.UUID] | None = None
    with session_scope(sessions) as session:
        while True:
            stmt = select(Job.id, Job.created_at).where(Job.status == JobStatus.QUEUED.value, Job.created_at < cutoff)
            if after is not None:
                stmt = stmt.where(or_(Job.created_at > after[0], and_(Job.created_at == after[0], Job.id > after[1])))
            page = session.execute(stmt.order_by(Job.created_at, Job.id).limit(BATCH)).all()
            if not page:
                return found
            last = _last_enqueue(session, [job_id for job_id, _ in page])
            for job_id, created_at in page:
                enqueued_at = last.get(job_id, created_at)
                if enqueued_at < cutoff:
                    found[job_id] = enqueued_at
            after = (page[-1].created_at, page[-1].id)


def _last_enqueue(session: Session, job_ids: list[uuid.UUID]) -> dict[uuid.UUID, datetime]:
    rows = session.execute(
        select(Audit.job_id, func.max(Audit.at))
        .where(Audit.job_id.in_(job_ids), Audit.event.in_(ENQUEUE_EVENTS))
        .group_by(Audit.job_id)
    ).all()
    return dict(rows)


def requeues_since_claim(sessions: sessionmaker[Session], job_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    """``requeued`` audit rows of each job after its last ``claimed`` row: deliveries that never
    reached a claim. The audit is the counter, so no column is needed."""
    if not job_ids:
        return {}
    with session_scope(sessions) as session:
        rows = session.execute(
            select(Audit.job_id, Audit.event)
            .where(Audit.job_id.in_(job_ids), Audit.event.in_(("claimed", "requeued")))
            .order_by(Audit.job_id, Audit.at, Audit.id)
        ).all()
    counts: dict[uuid.UUID, int] = {}
    for job_id, event in rows:
        counts[job_id] = 0 if event == "claimed" else counts.get(job_id, 0) + 1
    return counts


def missing(candidates: dict[uuid.UUID, datetime], view: RQView, trust_taken_after: datetime) -> list[uuid.UUID]:
    missing = []
    for job_id, enqueued_at in candidates.items():
        key = str(job_id)
        if key in view.waiting:
            continue
        if key in view.taken and enqueued_at >= trust_taken_after:
            continue
        missing.append(job_id)
    return missing
