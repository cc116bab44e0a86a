"""Writing and reading the append-only audit trail of a job.

Events: submitted, claimed, routed, attempt, failover, hedge, completed, failed, recovered,
requeued. Rows hold the actor (an API key id, ``anonymous``, or a worker id), a UTC time, the job
id, and PHI-free details; never observations or embeddings.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator.models import Audit, utcnow


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
) -> Audit:
    """Add one audit row to ``session`` (the caller commits, in the same transaction as the
    state change it describes)."""
    row = Audit(
        job_id=job_id,
        event=event,
        actor=actor,
        at=at or utcnow(),
        target=target,
        outcome=outcome,
        latency_ms=latency_ms,
        details=details,
    )
    session.add(row)
    return row


def trail(session: Session, job_id: uuid.UUID) -> list[Audit]:
    """Every audit row of a job, oldest first."""
    stmt = select(Audit).where(Audit.job_id == job_id).order_by(Audit.at, Audit.id)
    return list(session.scalars(stmt))
