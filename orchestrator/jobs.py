"""The job lifecycle in Postgres, shared by the API, the worker and the reconciler: the one
module that writes a job's state and the audit rows of its transitions (a job is created by
``orchestrator.intake``; every change after that is made here).

    intake ──▶ queued ──claim──▶ running ──finish──▶ completed | failed
                │  ▲                │ ╲
                │  └──── recover ───┘  abandon ──▶ failed   (lease expired; bounded by max claims)
                ├──── requeue (Redis lost it)
                └──── undeliverable / give_up ──▶ failed     (cancel_for_erasure: any active job)

Every transition is a conditional UPDATE, so concurrent workers, duplicate deliveries and late
finishers are safe: a claim succeeds once per delivery, and the first terminal write wins. On
Postgres the worker's transitions are one statement each (``orchestrator.job_sql``), their
audit rows written only if the UPDATE changed the job, except the ``attempt`` rows of model
calls, which are written whoever won; elsewhere (SQLite) the same rows are separate statements.

Every job and case belongs to a tenant. An Idempotency-Key, a ``case_id`` and a read are scoped
to the caller's tenant; another tenant's job is "not found", exactly as a job that does not
exist, so that existence does not leak.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, func, or_, select, text, update
from sqlalchemy.orm import Session

from orchestrator import audit, job_sql
from orchestrator.error_kinds import ErrorKind
from orchestrator.errors import BadRequest, NotFound
from orchestrator.models import ACTIVE_STATUSES, Job, JobStatus, utcnow

_ACTIVE_VALUES = [s.value for s in ACTIVE_STATUSES]
_TABLE = Job.__table__
"""Transitions use Core, not the ORM: nothing reads the row back, so the unit of work is pure cost."""


def get_job(session: Session, job_id: uuid.UUID, *, tenant: str | None) -> Job:
    """The job with this id if ``tenant`` may read it (None: any tenant, for operators);
    NotFound otherwise, with the same message whether it does not exist or is another's."""
    job = session.get(Job, job_id)
    if job is None or (tenant is not None and job.tenant != tenant):
        raise NotFound(f"No job with id {job_id}")
    return job


@dataclass(frozen=True)
class JobFilter:
    tenant: str | None
    """Only this tenant's jobs; None: every tenant's (operators). Required: no default, so no
    caller lists every tenant by forgetting it."""
    status: str | None = None
    target: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    kind: str | None = None


def list_jobs(session: Session, *, limit: int, cursor: str | None, where: JobFilter) -> tuple[list[Job], str | None]:
    """Jobs newest first, ``limit`` at a time; returns the page and the cursor of the next one."""
    stmt = select(Job)
    if where.tenant is not None:
        stmt = stmt.where(Job.tenant == where.tenant)
    if where.status:
        stmt = stmt.where(Job.status == where.status)
    if where.target:
        stmt = stmt.where(Job.target == where.target)
    if where.kind:
        stmt = stmt.where(Job.kind == where.kind)
    if where.since:
        stmt = stmt.where(Job.created_at >= where.since)
    if where.until:
        stmt = stmt.where(Job.created_at < where.until)
    if cursor:
        created_at, job_id = _decode_cursor(cursor)
        stmt = stmt.where(or_(Job.created_at < created_at, and_(Job.created_at == created_at, Job.id < job_id)))
    rows = list(session.scalars(stmt.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)))
    page, more = rows[:limit], len(rows) > limit
    return page, (_encode_cursor(page[-1]) if more else None)


def _encode_cursor(job: Job) -> str:
    created = job.created_at if job.created_at.tzinfo else job.created_at.replace(tzinfo=UTC)  # SQLite: naive UTC
    raw = f"{created.isoformat()}|{job.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The (created_at, id) a cursor from ``_encode_cursor`` holds. Anything else, a forged one
    included (a time without a zone, or one that does not exist in UTC), is a 422 naming
    ``cursor``: it must never reach the database as a value it cannot compare."""
    try:
        raw = base64.urlsafe_b64decode(cursor.encode("ascii") + b"=" * (-len(cursor) % 4)).decode()
        created, job_id = raw.split("|", 1)
        moment = datetime.fromisoformat(created)
        if moment.tzinfo is None:
            raise ValueError("a cursor's time always has a zone")
        return moment.astimezone(UTC), uuid.UUID(job_id)
    except (ValueError, UnicodeError, OverflowError):
        raise BadRequest("cursor: not a cursor returned by this API", field="cursor") from None


# --- worker side -----------------------------------------------------------------------------


def database_now(session: Session) -> datetime:
    """The database's clock (aware UTC): leases are set and judged on it, so a worker's or the
    reconciler's clock skew cannot recover a live job. SQLite (dev, unit tests): this host's."""
    if session.get_bind().dialect.name == "postgresql":
        return session.scalar(text("SELECT clock_timestamp()"))
    return utcnow()


def _lease_until(session: Session, lease_seconds: float, fallback: datetime):
    """``lease_seconds`` from now on the database's clock, as an SQL expression on Postgres."""
    if session.get_bind().dialect.name == "postgresql":
        return func.clock_timestamp() + timedelta(seconds=lease_seconds)
    return fallback + timedelta(seconds=lease_seconds)


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def claim(
    session: Session, job_id: uuid.UUID, *, worker_id: str, now: datetime, lease_seconds: float, commit: bool = True
) -> Job | None:
    """Atomically move a queued job to running for this worker, with its ``claimed`` audit row
    (and commit, unless ``commit`` is False: the caller adds to the transaction). Returns the
    job (not attached to ``session``), or None when it is not queued (already claimed,
    finished, or unknown): a duplicate delivery. The lease runs on the database's clock;
    ``now`` (this host's) is the job's start time in its record. On Postgres: one statement."""
    if _postgres(session):
        params = {"job_id": job_id, "now": now, "lease": timedelta(seconds=lease_seconds), "worker_id": worker_id}
        row = session.connection().execute(job_sql.CLAIM, {**params, "audit_actor": audit.fit_actor(worker_id)}).first()
        if row is None:
            return None
        if commit:
            session.commit()  # a no-op on the worker's autocommit connection: the statement committed
        return Job(**row._mapping)
    job = session.scalars(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED.value)
        .values(
            status=JobStatus.RUNNING.value,
            started_at=now,
            claim_count=Job.claim_count + 1,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            worker_id=worker_id,
        )
        .returning(Job)
        .execution_options(synchronize_session=False, populate_existing=True)
    ).one_or_none()
    if job is None:
        session.rollback()
        return None
    audit.record(session, job_id, "claimed", worker_id, at=now, details={"claim": job.claim_count})
    if commit:
        session.commit()
    return job


@dataclass(frozen=True)
class Routed:
    """A routing decision as stored on the job and in its ``routed`` audit row."""

    decision: dict
    predicted_ms: float | None
    predicted_p95_ms: float | None
    row: dict
    """The ``routed`` audit row (``audit.row``)."""
    worker_id: str = ""
    """The claim this decision belongs to: it is stored on the job only while that worker still
    holds the job (a stalled worker whose job was recovered and claimed again cannot overwrite the
    new claim's decision; its ``routed`` row is still written, as the record of its own call)."""

    def columns(self) -> dict:
        return {"decision": self.decision, "predicted_ms": self.predicted_ms, "predicted_p95_ms": self.predicted_p95_ms}

    def params(self) -> dict:
        return {**self.columns(), "claim_worker": self.worker_id}


def start_call(
    session: Session, job_id: uuid.UUID, call_started: dict, *, routed: Routed | None, rows: list[dict]
) -> None:
    """Write a model call's ``call_started`` row (``audit.row``), after ``rows`` (audit rows
    not yet written: earlier calls' ``attempt`` rows), with the decision and its ``routed`` row
    first when ``routed`` is given (the first call of a claim), and commit: before any byte of
    the request leaves. The rows are written whatever the job's state by then (the call is
    made either way). On Postgres: one statement, its own transaction on the worker's
    autocommit connection, and each row is written once even if the statement is sent again
    (a retry after a commit whose answer was lost)."""
    trail = [routed.row] if routed is not None else []
    trail += [*rows, call_started]
    if _postgres(session):
        statement = job_sql.START_CALL if routed is None else job_sql.START_CALL_DECIDED
        params = {
            "job_id": job_id,
            "rows": job_sql.rows_param(trail),
            **(routed.params() if routed else {}),
        }
        session.connection().execute(statement, params)
    else:
        if routed is not None:
            mine = (
                _TABLE.c.id == job_id,
                _TABLE.c.status == JobStatus.RUNNING.value,
                _TABLE.c.worker_id == routed.worker_id,
            )
            session.execute(update(_TABLE).where(*mine).values(**routed.columns()))
        audit.record_rows(session, job_id, trail)
    session.commit()


def renew_leases(session: Session, job_ids: list[uuid.UUID], *, worker_id: str, lease_seconds: float) -> int:
    """Extend the lease of this worker's running jobs to ``lease_seconds`` from now on the
    database's clock; returns how many were extended."""
    if not job_ids:
        return 0
    result = session.execute(
        update(Job)
        .where(Job.id.in_(job_ids), Job.status == JobStatus.RUNNING.value, Job.worker_id == worker_id)
        .values(lease_expires_at=_lease_until(session, lease_seconds, utcnow()))
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return result.rowcount


def give_up(
    session: Session, job_id: uuid.UUID, *, worker_id: str, now: datetime, error_kind: ErrorKind, error: str
) -> bool:
    """Fail a job this worker could not run (a step raised), and commit: only if it is still
    queued (the claim was rolled back) or running under ``worker_id``, so a job another worker
    claimed meanwhile is left alone. ``error`` must be PHI-free. False when nothing changed."""
    failed_row = _failed_row(worker_id, now, {"error_kind": error_kind})
    if _postgres(session):
        params = {"job_id": job_id, "me": worker_id, "now": now, "error_kind": error_kind, "error": error}
        return _won(session, job_sql.GIVE_UP, {**params, "rows": job_sql.rows_param([failed_row])})
    mine = or_(
        _TABLE.c.status == JobStatus.QUEUED.value,
        and_(_TABLE.c.status == JobStatus.RUNNING.value, _TABLE.c.worker_id == worker_id),
    )
    result = session.execute(
        update(_TABLE)
        .where(_TABLE.c.id == job_id, mine)
        .values(
            status=JobStatus.FAILED.value, finished_at=now, lease_expires_at=None, error_kind=error_kind, error=error
        )
    )
    if result.rowcount != 1:
        session.rollback()
        return False
    audit.record_rows(session, job_id, [failed_row])
    session.commit()
    return True


def _won(session: Session, statement, params: dict) -> bool:
    """Run a ``job_sql`` transition and commit; True if its UPDATE changed the job."""
    won = session.connection().execute(statement, params).first() is not None
    session.commit()  # a no-op on the worker's autocommit connection: the statement committed
    return won


def finish(
    session: Session,
    job_id: uuid.UUID,
    status: JobStatus,
    *,
    actor: str,
    now: datetime,
    error_kind: ErrorKind | None = None,
    error: str | None = None,
    target: str | None = None,
    result: dict | None = None,
    latency_ms: float | None = None,
    cost_usd: float | None = None,
    attempts: int | None = None,
    sla_met: bool | None = None,
    decision: dict | None = None,
    routed: Routed | None = None,
    rows: list[dict] | None = None,
) -> bool:
    """Write the terminal state of a job (the columns given; None leaves one as it is, such as
    the decision stored with the first call) and commit, with its audit rows: ``routed``'s
    decision and row when it was never written (no call was made), then ``rows`` (``attempt``
    rows not yet written), then the terminal row. On Postgres: one statement.

    Idempotent: only a job still queued or running is changed, so the first terminal write wins
    and a late duplicate (a recovered job finished twice, a job the reconciler or an erasure
    ended) returns False, changes nothing and writes no ``routed`` or terminal row. ``rows``
    are written either way: they record model calls that were made, whoever ended the job. On
    Postgres each of them is written once even if the statement is sent again (a retry after
    a commit whose answer was lost).
    """
    if status not in (JobStatus.COMPLETED, JobStatus.FAILED):
        raise ValueError(f"{status} is not a terminal status")
    given = {
        **({"decision": decision} if routed is None else routed.columns()),
        **{"error_kind": error_kind, "error": error, "target": target, "result": result},
        **{"latency_ms": latency_ms, "cost_usd": cost_usd, "attempts": attempts, "sla_met": sla_met},
    }
    details = {"error_kind": error_kind} if status is JobStatus.FAILED else None
    terminal = audit.row(
        status.value, actor, at=now, target=target, outcome=status.value, latency_ms=latency_ms, details=details
    )
    head, calls = [routed.row] if routed is not None else [], rows or []
    trail = [*head, *calls, terminal]
    if _postgres(session):
        params = {name: given.get(name) for name in job_sql.FINISH_COLUMNS}
        always = range(len(head), len(head) + len(calls))
        params.update(job_id=job_id, status=status.value, now=now, rows=job_sql.rows_param(trail, always=always))
        return _won(session, job_sql.FINISH, params)
    columns = {name: value for name, value in given.items() if value is not None}
    written = session.execute(
        update(_TABLE)
        .where(_TABLE.c.id == job_id, _TABLE.c.status.in_(_ACTIVE_VALUES))
        .values(status=status.value, finished_at=now, lease_expires_at=None, **columns)
    )
    if written.rowcount != 1:
        session.rollback()
        audit.record_rows(session, job_id, calls)
        session.commit()
        return False
    audit.record_rows(session, job_id, trail)
    session.commit()
    return True


def _failed_row(actor: str, now: datetime, details: dict) -> dict:
    return audit.row(JobStatus.FAILED.value, actor, at=now, outcome="failed", details=details)


def _audit_failed(session: Session, job_id: uuid.UUID, actor: str, now: datetime, details: dict) -> None:
    audit.record_rows(session, job_id, [_failed_row(actor, now, details)])


# --- reconciler side (each in the caller's transaction; False: the job moved on meanwhile) ----


def lease_expired(cutoff: datetime):
    """The SQL condition of a running job whose lease ran out before ``cutoff`` (or that has none)."""
    expired = or_(_TABLE.c.lease_expires_at.is_(None), _TABLE.c.lease_expires_at < cutoff)
    return and_(_TABLE.c.status == JobStatus.RUNNING.value, expired)


def recover(session: Session, job_id: uuid.UUID, *, cutoff: datetime, actor: str, now: datetime, details: dict) -> bool:
    """running -> queued (audit ``recovered``), only if its lease is still expired: the worker
    may have renewed it since the job was read."""
    values = {"status": JobStatus.QUEUED.value, "worker_id": None, "lease_expires_at": None}
    result = session.execute(update(_TABLE).where(_TABLE.c.id == job_id, lease_expired(cutoff)).values(**values))
    if result.rowcount != 1:
        return False
    audit.record(session, job_id, "recovered", actor, at=now, details=details)
    return True


def abandon(
    session: Session, job_id: uuid.UUID, *, cutoff: datetime, actor: str, now: datetime, claims: int, error: str
) -> bool:
    """running -> failed (``abandoned``), only if its lease is still expired: its model call
    already ran ``claims`` times. ``error`` must be PHI-free."""
    kind = ErrorKind.ABANDONED
    values = {"status": JobStatus.FAILED.value, "finished_at": now, "lease_expires_at": None}
    result = session.execute(
        update(_TABLE)
        .where(_TABLE.c.id == job_id, lease_expired(cutoff))
        .values(**values, error_kind=kind, error=error)
    )
    if result.rowcount != 1:
        return False
    _audit_failed(session, job_id, actor, now, {"error_kind": kind, "claims": claims})
    return True


def fail_undeliverable(
    session: Session, job_id: uuid.UUID, *, actor: str, now: datetime, requeues: int, error: str
) -> bool:
    """queued -> failed (``undeliverable``): requeued ``requeues`` times since its last claim,
    and no worker could claim it. ``error`` must be PHI-free."""
    kind = ErrorKind.UNDELIVERABLE
    result = session.execute(
        update(_TABLE)
        .where(_TABLE.c.id == job_id, _TABLE.c.status == JobStatus.QUEUED.value)
        .values(status=JobStatus.FAILED.value, finished_at=now, error_kind=kind, error=error)
    )
    if result.rowcount != 1:
        return False
    _audit_failed(session, job_id, actor, now, {"error_kind": kind, "requeues": requeues})
    return True


def record_requeued(session: Session, job_ids: list[uuid.UUID], *, actor: str, now: datetime, reason: str) -> None:
    """The ``requeued`` rows of queued jobs put on the queue again (their state is unchanged)."""
    for job_id in job_ids:
        audit.record(session, job_id, "requeued", actor, at=now, details={"reason": reason})


def cancel_for_erasure(session: Session, job_ids: list[uuid.UUID], *, actor: str, now: datetime) -> list[uuid.UUID]:
    """End every still-active job of ``job_ids`` as ``failed`` (error_kind ``erased``) in the
    caller's transaction (the erasure commits it, together with the erasure itself); returns the
    ids it cancelled. The same conditional UPDATE as ``finish``: a worker's later terminal write
    finds the job no longer active and changes nothing, so no result is written after an erase."""
    if not job_ids:
        return []
    cancelled = list(
        session.scalars(
            update(_TABLE)
            .where(_TABLE.c.id.in_(job_ids), _TABLE.c.status.in_(_ACTIVE_VALUES))
            .values(
                status=JobStatus.FAILED.value,
                finished_at=now,
                lease_expires_at=None,
                error_kind=ErrorKind.ERASED,
                error="cancelled: the case was erased",
            )
            .returning(_TABLE.c.id)
        )
    )
    for job_id in cancelled:
        _audit_failed(session, job_id, actor, now, {"error_kind": ErrorKind.ERASED})
    return cancelled
