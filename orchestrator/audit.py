"""Writing and reading the append-only audit trail of a job.

Events: submitted, claimed, routed, call_started, attempt, failover, hedge, completed, failed,
recovered, requeued. Rows hold the actor (an API key id, ``anonymous``, or a worker id), a UTC
time, the job id, and PHI-free details; never observations or embeddings.

A model call writes two rows: ``call_started`` before the request leaves (target, time, and
``details.claim``/``details.call`` numbering the call), and ``attempt`` when it ends (same
numbers). A ``call_started`` row with no ``attempt`` row is a call whose answer was lost (the
worker died mid-call); ``attempt_rows`` shows it as outcome ``started``.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from orchestrator.models import Audit, utcnow

ACTOR_MAX_CHARS = Audit.__table__.c.actor.type.length
"""Longest actor the audit column holds (characters): VARCHAR(64)."""
_DIGEST_CHARS = 10
"""Hex digits of the sha256 suffix that keeps two long names that share a prefix apart."""
CALL_STARTED = "call_started"
STARTED = "started"
"""The outcome ``attempt_rows`` gives a call that started and never ended."""


def fit_actor(name: str) -> str:
    """``name`` unchanged when it fits the actor column, else its head, ``~`` and a digest of
    the whole: the ONE place a worker id, reconciler name or key id is made to fit (a long pod
    name must never make an audit INSERT fail). Idempotent, and distinct names stay distinct."""
    if len(name) <= ACTOR_MAX_CHARS:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:_DIGEST_CHARS]
    return f"{name[: ACTOR_MAX_CHARS - _DIGEST_CHARS - 1]}~{digest}"


INSERT_ROW = insert(Audit.__table__)
"""Built once, on the table rather than the mapped class: a prebuilt Core INSERT with a parameter
dict skips both per-row statement building and the ORM's bulk-insert path (measured on
Postgres: 0.15 ms of CPU per row, against 0.23 ms for ``insert(Audit)``)."""


def record(
    session: Session,
    job_id: uuid.UUID | None,
    event: str,
    actor: str,
    *,
    at: datetime | None = None,
    target: str | None = None,
    outcome: str | None = None,
    latency_ms: float | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Insert one audit row in ``session``'s transaction (the caller commits, together with the
    state change it describes). A plain INSERT, not an ORM object: the trail is append-only and
    nothing reads the row back in the same transaction, so the unit of work is pure cost."""
    values = row(event, actor, at=at, target=target, outcome=outcome, latency_ms=latency_ms, details=details)
    session.execute(INSERT_ROW, {"job_id": job_id, **values})


def row(
    event: str,
    actor: str,
    *,
    at: datetime | None = None,
    target: str | None = None,
    outcome: str | None = None,
    latency_ms: float | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One audit row of a job, not yet written (its job id is given where it is written): the
    worker builds the rows of a transition first and writes them with its next statement
    (``orchestrator.jobs``)."""
    return {
        "event": event,
        "actor": fit_actor(actor),
        "at": at or utcnow(),
        "target": target,
        "outcome": outcome,
        "latency_ms": latency_ms,
        "details": details,
    }


def record_rows(session: Session, job_id: uuid.UUID, rows: list[dict[str, Any]]) -> None:
    """Insert rows made by ``row``, in order, in ``session``'s transaction, one INSERT each
    (databases without data-modifying CTEs; on Postgres ``orchestrator.job_sql`` writes them)."""
    for values in rows:
        event, actor = values["event"], values["actor"]
        record(session, job_id, event, actor, **{k: v for k, v in values.items() if k not in ("event", "actor")})


def trail(session: Session, job_id: uuid.UUID) -> list[Audit]:
    """Every audit row of a job, oldest first."""
    stmt = select(Audit).where(Audit.job_id == job_id).order_by(Audit.at, Audit.id)
    return list(session.scalars(stmt))


@dataclass(frozen=True)
class AttemptRow:
    """One model call as the status view lists it."""

    target: str | None
    outcome: str | None
    latency_ms: float | None
    at: datetime
    details: dict[str, Any] | None


def attempt_rows(rows: list[Audit]) -> list[AttemptRow]:
    """The model calls of a trail, oldest first: each ``attempt`` row, plus every
    ``call_started`` row whose call never ended (outcome ``started``): a call in flight, or one
    whose answer a crash lost (billed, but never written)."""
    ended = {_call_key(r) for r in rows if r.event == "attempt"}
    calls = []
    for row in rows:
        if row.event == "attempt":
            calls.append(AttemptRow(row.target, row.outcome, row.latency_ms, row.at, row.details))
        elif row.event == CALL_STARTED and _call_key(row) not in ended:
            calls.append(AttemptRow(row.target, STARTED, None, row.at, row.details))
    return calls


def _call_key(row: Audit) -> tuple[Any, Any, Any]:
    details = row.details or {}
    return (details.get("claim"), details.get("call"), row.target)
