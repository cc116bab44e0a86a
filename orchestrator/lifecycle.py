"""The PHI lifecycle: erase a case, erase expired jobs, export a case.

PHI lives in four columns of ``jobs``: ``observations``, ``embedding`` (the inputs of a
screening job), ``payload`` (a task's input) and ``result`` (what the model said), plus
``age_months``. Erasing a job sets all of them to NULL with one UPDATE; ids, times, targets,
latencies, costs, the routing decision and the PHI-free error stay, so the fleet's history and
its bills still add up. The audit trail is never edited (it never held PHI); each erased job
gains an ``erased`` row: who, when, why (``request`` or ``retention``) and its case.

A job is *erased* when its input is gone: a screening job always has observations and a task
always has a payload until they are erased (the API refuses empty ones), so no extra column is
needed to tell.

Jobs still queued or running when their case is erased are cancelled first (``failed``, error
kind ``erased``) in the same transaction: the worker's terminal write is conditional on an
active status, so a model call already in flight ends with its answer discarded, never stored.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, null, or_, select, update
from sqlalchemy.orm import Session

from orchestrator import audit, jobs
from orchestrator.errors import NotFound
from orchestrator.models import TERMINAL_STATUSES, Audit, Case, Job, JobKind
from orchestrator.principals import Principal, Scope

ERASED = "erased"
"""The audit event of an erasure (a job cancelled by one fails with ``ErrorKind.ERASED``)."""
EXPORTED = "exported"
REQUEST, RETENTION = "request", "retention"
"""Why PHI was erased, as the ``erased`` audit row says."""

_TABLE = Job.__table__
PHI_COLUMNS = ("observations", "embedding", "payload", "result", "age_months")
"""The columns an erasure sets to NULL."""
HOLDS_PHI = or_(*(_TABLE.c[name].isnot(None) for name in PHI_COLUMNS))
"""True for a job that still holds some PHI."""
_TERMINAL_VALUES = [s.value for s in TERMINAL_STATUSES]


def is_erased(job: Job) -> bool:
    """Whether the job's PHI was erased (its input is gone; see the module docstring)."""
    if job.kind == JobKind.TASK.value:
        return job.payload is None
    return job.observations is None


@dataclass(frozen=True)
class Erasure:
    """What one erase request did."""

    case_id: uuid.UUID
    erased_job_ids: list[uuid.UUID]
    """Jobs whose PHI this request erased."""
    already_erased_job_ids: list[uuid.UUID]
    """Jobs of the case whose PHI was gone before (an earlier erase, or retention)."""
    cancelled_job_ids: list[uuid.UUID] = field(default_factory=list)
    """Jobs still queued or running that this request ended (``failed``, error kind ``erased``)."""


def owned_case(session: Session, case_id: uuid.UUID, principal: Principal, *, lock: bool = False) -> Case:
    """The case if ``principal`` owns it (its tenant) or is an administrator; NotFound otherwise,
    with the same message whether it does not exist or is another tenant's. Operators, who read
    every tenant's jobs, do not qualify: erasure and export are about the child's data."""
    stmt = select(Case).where(Case.id == case_id)
    if lock and session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()  # two erasures of one case run one after the other
    case = session.scalar(stmt)
    if case is None or (case.tenant != principal.tenant and not principal.allows(Scope.ADMIN)):
        raise NotFound(f"No case with id {case_id}")
    return case


def erase_jobs(
    session: Session, job_ids: list[uuid.UUID], *, actor: str, now: datetime, reason: str
) -> list[uuid.UUID]:
    """Set the PHI of every job of ``job_ids`` that still holds some to NULL, and write one
    ``erased`` audit row per job, in the caller's transaction; returns the ids erased."""
    if not job_ids:
        return []
    rows = session.execute(
        update(_TABLE)
        .where(_TABLE.c.id.in_(job_ids), HOLDS_PHI)
        .values({name: null() for name in PHI_COLUMNS})  # null(): SQL NULL, not JSON null
        .returning(_TABLE.c.id, _TABLE.c.case_id)
    ).all()
    for job_id, case_id in rows:
        details = {"reason": reason, "case_id": str(case_id) if case_id else None}
        audit.record(session, job_id, ERASED, actor, at=now, details=details)
    return [job_id for job_id, _ in rows]


def erase_case(session: Session, case_id: uuid.UUID, principal: Principal, *, now: datetime) -> Erasure:
    """Erase every job of a case the principal owns (or any case, for an administrator) and
    commit: active jobs are cancelled first, then all PHI is set to NULL. Idempotent: a second
    call erases nothing and lists the jobs already erased."""
    owned_case(session, case_id, principal, lock=True)
    job_ids = list(session.scalars(select(Job.id).where(Job.case_id == case_id).order_by(Job.created_at, Job.id)))
    cancelled = jobs.cancel_for_erasure(session, job_ids, actor=principal.key_id, now=now)
    erased = erase_jobs(session, job_ids, actor=principal.key_id, now=now, reason=REQUEST)
    session.commit()
    fresh = set(erased)
    return Erasure(case_id, erased, [j for j in job_ids if j not in fresh], cancelled)


def expired_job_ids(session: Session, *, cutoff: datetime, limit: int) -> list[uuid.UUID]:
    """Up to ``limit`` terminal jobs that finished before ``cutoff`` and still hold PHI, oldest
    first (a pass that stops early resumes where it left off)."""
    stmt = (
        select(Job.id)
        .where(and_(Job.status.in_(_TERMINAL_VALUES), Job.finished_at < cutoff, HOLDS_PHI))
        .order_by(Job.finished_at, Job.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def oldest_expired_finish(session: Session, *, cutoff: datetime) -> datetime | None:
    """When the oldest terminal job that should have been erased by ``cutoff`` finished; None:
    retention is up to date."""
    stmt = select(Job.finished_at).where(Job.status.in_(_TERMINAL_VALUES), Job.finished_at < cutoff, HOLDS_PHI)
    return session.scalar(stmt.order_by(Job.finished_at).limit(1))


def export_case(session: Session, case_id: uuid.UUID, principal: Principal, *, now: datetime) -> dict[str, Any]:
    """Everything stored about a case, as one JSON-ready document: the case, every job (inputs,
    result, routing decision, times, costs) and every audit row of its jobs. Writes an
    ``exported`` audit row per job (who and when) and commits."""
    case = owned_case(session, case_id, principal)
    case_jobs = list(session.scalars(select(Job).where(Job.case_id == case_id).order_by(Job.created_at, Job.id)))
    job_ids = [job.id for job in case_jobs]
    rows = list(session.scalars(select(Audit).where(Audit.job_id.in_(job_ids)).order_by(Audit.at, Audit.id)))
    document = {
        "case": {
            "case_id": str(case.id),
            "tenant": case.tenant,
            "created_at": case.created_at.isoformat(),
            "created_by": case.created_by,
        },
        "jobs": [_job_document(job) for job in case_jobs],
        "audit": [_audit_document(row) for row in rows],
        "exported_at": now.isoformat(),
        "exported_by": principal.key_id,
    }
    for job_id in job_ids:
        audit.record(session, job_id, EXPORTED, principal.key_id, at=now, details={"case_id": str(case_id)})
    session.commit()
    return document


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _job_document(job: Job) -> dict[str, Any]:
    return {
        "job_id": str(job.id),
        "kind": job.kind,
        "status": job.status,
        "erased": is_erased(job),
        "age_months": job.age_months,
        "observations": job.observations,
        "embedding_b64": _b64(job.embedding),
        "task_type": job.task_type,
        "payload": job.payload,
        "result": job.result,
        "routing": job.decision,
        "preferred_target": job.preferred_target,
        "sla_ms": job.sla_ms,
        "strict_sla": job.strict_sla,
        "budget_usd": job.budget_usd,
        "target": job.target,
        "attempts": job.attempts,
        "latency_ms": job.latency_ms,
        "cost_usd": job.cost_usd,
        "sla_met": job.sla_met,
        "error": job.error,
        "error_kind": job.error_kind,
        "actor": job.actor,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
    }


def _b64(raw: bytes | None) -> str | None:
    return base64.b64encode(raw).decode() if raw is not None else None


def _audit_document(row: Audit) -> dict[str, Any]:
    return {
        "job_id": str(row.job_id) if row.job_id else None,
        "event": row.event,
        "actor": row.actor,
        "at": row.at.isoformat(),
        "target": row.target,
        "outcome": row.outcome,
        "latency_ms": row.latency_ms,
        "details": row.details,
    }
