"""What the reconciler compares: the jobs Postgres says are queued (and since when, and how often
they were requeued without a claim) against the ids RQ holds in Redis. Read-only helpers of
``orchestrator.reconciler``."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from rq import Queue
from rq.executions import Execution
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
    intermediate list, or registered as started and not yet expired), with when it was taken:
    the ``created_at`` of its RQ execution, written by the worker as it takes the job
    (``prepare_execution``, the same in the stock forking ``rq worker`` and the threaded one),
    or None when that is unknown (only on the intermediate list, or the execution is gone)."""

    waiting: frozenset[str]
    taken: dict[str, datetime | None]


def rq_view(queue: Queue, now: datetime) -> RQView:
    """One consistent read of the queue list, the intermediate list and the started registry,
    then one pipelined read of when each started execution began: two round trips."""
    started_key = StartedJobRegistry(queue=queue).key
    with queue.connection.pipeline(transaction=True) as pipe:
        pipe.lrange(queue.key, 0, -1)
        pipe.lrange(queue.intermediate_queue_key, 0, -1)
        pipe.zrangebyscore(started_key, now.timestamp(), "+inf")
        waiting, intermediate, started = pipe.execute()
    taken: dict[str, datetime | None] = {_text(i): None for i in intermediate}
    for job_id, taken_at in _taken_at(queue, [_text(e) for e in started]):
        earlier = taken.get(job_id)
        taken[job_id] = taken_at if earlier is None or (taken_at is not None and taken_at > earlier) else earlier
    return RQView(frozenset(_text(i) for i in waiting), taken)


def _taken_at(queue: Queue, entries: list[str]) -> list[tuple[str, datetime | None]]:
    """(job id, start of its execution) for each started-registry entry (``job_id:execution_id``)."""
    keyed = [e for e in entries if ":" in e]
    created: list[bytes | None] = []
    if keyed:
        with queue.connection.pipeline(transaction=False) as pipe:
            for entry in keyed:
                pipe.hget(Execution.from_composite_key(entry, queue.connection).key, "created_at")
            created = pipe.execute()
    found = {e: _timestamp(c) for e, c in zip(keyed, created, strict=True)}
    return [(StartedJobRegistry.parse_job_id(e), found.get(e)) for e in entries]


def _timestamp(value: bytes | str | None) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(_text(value)), UTC) if value is not None else None
    except ValueError:
        return None


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


def missing(
    candidates: dict[uuid.UUID, datetime], view: RQView, trust_taken_after: datetime, latest_take: datetime
) -> list[uuid.UUID]:
    """The candidates on no RQ list, or taken by a worker too long ago to still be trusted: a
    taken job is trusted while it was taken (or, if that is unknown, enqueued) at or after
    ``trust_taken_after``. Judging by the take, not the enqueue, keeps a job that waited long in
    a backlog and was just taken from being enqueued a second time before its claim. A take
    time later than ``latest_take`` comes from a worker whose clock runs ahead: it is ignored,
    so such a worker dying cannot hide a job for longer than the enqueue allows."""
    found = []
    for job_id, enqueued_at in candidates.items():
        key = str(job_id)
        if key in view.waiting:
            continue
        if key in view.taken:
            taken_at = view.taken[key]
            known = taken_at is not None and taken_at <= latest_take
            since = max(enqueued_at, taken_at) if known else enqueued_at
            if since >= trust_taken_after:
                continue
        found.append(job_id)
    return found
