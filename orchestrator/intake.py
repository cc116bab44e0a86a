"""Intake: a submitted screening case or generic task becomes a ``queued`` job, durably.

On Postgres an accepted submit is ONE statement: a data-modifying CTE inserts the job (``ON
CONFLICT DO NOTHING`` on the tenant's Idempotency-Key, and only if a named ``case_id`` is the
tenant's), its new case if any, and the ``submitted`` audit row, all or nothing. On the API's
autocommit connection that statement is also its own transaction: no BEGIN, no COMMIT round
trip. The caller enqueues the id only after this returns, so a job is committed before Redis
hears of it; if the enqueue then fails, the reconciler finds the queued row missing from Redis
and enqueues it (orchestrator.reconciler, ``requeue_missing``).

Only when that statement inserts nothing is there a second round trip: the lookup that tells an
Idempotency-Key replay (the earlier job; 409 if the body differs) from a ``case_id`` that is not
the tenant's (400, exactly as one that does not exist). Other databases (SQLite, for development
and tests) run the same rows as separate INSERTs in one transaction.

A key with a ``max_in_flight`` limit (orchestrator.quotas) takes a slower, exact path: a READ
COMMITTED transaction that takes the key's advisory lock, then runs the same statement with one
more condition (the key's jobs queued or running are below the limit), then commits. Submissions
of one capped key are thus serialised from count to commit, so the limit is never overshot; an
Idempotency-Key replay still returns its job at the limit. On SQLite the transaction takes the
database's write lock before it counts.

Every job and case belongs to a tenant. An Idempotency-Key and a ``case_id`` are scoped to the
caller's tenant; another tenant's key is simply unused here (a new job, and no hint that the key
exists elsewhere).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    Integer,
    Select,
    bindparam,
    cast,
    exists,
    false,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from orchestrator import audit, quotas
from orchestrator.errors import BadRequest, IdempotencyConflict
from orchestrator.models import Audit, Case, Job, JobKind, JobStatus, utcnow
from orchestrator.principals import DEFAULT_TENANT
from orchestrator.schemas import JobCreate, TaskCreate, decode_embedding

JOBS, CASES, AUDIT = Job.__table__, Case.__table__, Audit.__table__
SUBMITTED = "submitted"


@dataclass(frozen=True)
class JobRef:
    """What the API answers about a job it accepted (or replayed)."""

    id: uuid.UUID
    kind: str
    status: str


@dataclass(frozen=True)
class Submitted:
    job: JobRef
    created: bool
    """False when an Idempotency-Key replay returned the job created earlier."""


def request_hash(payload: dict) -> str:
    """A stable digest of a request body, to tell an idempotent replay from a conflicting one."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def task_hash(body: TaskCreate) -> str:
    """The request digest of a task (its kind included, so it never matches a screening body)."""
    return request_hash({"kind": JobKind.TASK.value, **body.model_dump(mode="json")})


def submit_screening(
    session: Session,
    body: JobCreate,
    *,
    actor: str,
    default_sla_ms: int,
    idempotency_key: str | None = None,
    tenant: str = DEFAULT_TENANT,
    max_in_flight: int | None = None,
) -> Submitted:
    """Store a screening job (and its case when new) as ``queued`` for ``tenant`` and commit.

    An Idempotency-Key this tenant used before returns the earlier job if the body is the same,
    and raises IdempotencyConflict if it differs. A ``case_id`` must be one of the tenant's
    cases; another tenant's is refused exactly as one that does not exist (BadRequest). With
    ``max_in_flight``, raises QuotaExceeded if ``actor`` already has that many jobs queued or
    running (a replay is answered first).
    """
    digest = request_hash(body.model_dump(mode="json"))
    job = _queued_row(body, JobKind.SCREENING, actor, tenant, default_sla_ms, idempotency_key, digest)
    job["case_id"] = body.case_id or uuid.uuid4()
    job["age_months"] = body.age_months
    job["observations"] = body.observations
    job["embedding"] = decode_embedding(body.embedding_b64) if body.embedding_b64 else None
    shape = EXISTING_CASE if body.case_id is not None else NEW_CASE
    given = body.case_id is not None
    return _submit(session, shape, job, _audit_row(job), case_given=given, max_in_flight=max_in_flight)


def submit_task(
    session: Session,
    body: TaskCreate,
    *,
    actor: str,
    default_sla_ms: int,
    idempotency_key: str | None = None,
    tenant: str = DEFAULT_TENANT,
    max_in_flight: int | None = None,
) -> Submitted:
    """Store a generic task as a ``queued`` job of kind ``task`` for ``tenant`` and commit; the
    caller enqueues it after. The caller has checked consent. Idempotency and ``max_in_flight``
    work as for screening jobs (the kind is part of the digest, so a key reused across the two
    endpoints is a conflict)."""
    job = _queued_row(body, JobKind.TASK, actor, tenant, default_sla_ms, idempotency_key, task_hash(body))
    job["task_type"] = body.task_type
    job["payload"] = body.payload
    audit_row = _audit_row(job, consent=True)
    return _submit(session, NO_CASE, job, audit_row, case_given=False, max_in_flight=max_in_flight)


def replayed_task(session: Session, body: TaskCreate, idempotency_key: str, tenant: str) -> JobRef | None:
    """The task an earlier request of ``tenant`` with this key created, if the body is the same;
    raises IdempotencyConflict if it differs. Lets the API answer a replay before re-checking
    things (such as which targets exist) that may have changed since."""
    return _replay(session, tenant, idempotency_key, task_hash(body))


def _queued_row(
    body: JobCreate | TaskCreate,
    kind: JobKind,
    actor: str,
    tenant: str,
    default_sla_ms: int,
    idempotency_key: str | None,
    digest: str,
) -> dict[str, Any]:
    """Every column of a new job (the INSERT names them all: no ORM defaults run here)."""
    return {
        "id": uuid.uuid4(),
        "case_id": None,
        "kind": kind.value,
        "status": JobStatus.QUEUED.value,
        "age_months": None,
        "observations": None,
        "embedding": None,
        "task_type": None,
        "payload": None,
        "preferred_target": body.preferred_target,
        "sla_ms": body.sla_ms or default_sla_ms,
        "strict_sla": body.strict_sla,
        "budget_usd": body.budget_usd,
        "idempotency_key": idempotency_key,
        "request_hash": digest,
        "actor": actor,
        "created_at": utcnow(),
        "claim_count": 0,
        "attempts": 0,
        "tenant": tenant,
    }


def _audit_row(job: dict[str, Any], **details: Any) -> dict[str, Any]:
    """The ``submitted`` audit row of ``job`` (PHI-free: no observations, payload or embedding)."""
    return {
        "audit_actor": audit.fit_actor(job["actor"]),
        "details": {
            "kind": job["kind"],
            "sla_ms": job["sla_ms"],
            "preferred_target": job["preferred_target"],
            "tenant": job["tenant"],
            **details,
        },
    }


def _submit(
    session: Session, shape: str, job: dict, audit_row: dict, *, case_given: bool, max_in_flight: int | None
) -> Submitted:
    created = _write(session, shape, job, audit_row, max_in_flight)
    if created:
        return Submitted(JobRef(job["id"], job["kind"], job["status"]), created=True)
    # Nothing inserted: the tenant used this Idempotency-Key before (or a racing request with it
    # won), or the named case is not the tenant's, or the key is at its max_in_flight. A replay
    # is answered first, as it always was (a replay adds no job, so the limit does not refuse it).
    key = job["idempotency_key"]
    earlier = _replay(session, job["tenant"], key, job["request_hash"]) if key is not None else None
    if earlier is not None:
        return Submitted(earlier, created=False)
    if case_given and not _case_of_tenant(session, job["case_id"], job["tenant"]):
        raise BadRequest("case_id: no case with this id", field="case_id")
    if max_in_flight is not None:
        quotas.refuse_in_flight(job["actor"], max_in_flight)
    raise RuntimeError("the job INSERT wrote nothing, and no earlier job holds its Idempotency-Key")


def _write(session: Session, shape: str, job: dict, audit_row: dict, max_in_flight: int | None) -> bool:
    """Insert the job (and its case, and its audit row) and commit; False if nothing was written."""
    if session.get_bind().dialect.name != "postgresql":
        return _write_each(session, shape, job, audit_row, max_in_flight)
    if max_in_flight is not None:
        return _write_capped(session, shape, {**job, **audit_row, "max_in_flight": max_in_flight})
    # Core execution on the session's connection: the ORM's execute path adds nothing here.
    inserted = session.connection().execute(ONE_STATEMENT[shape], {**job, **audit_row}).first() is not None
    session.commit()  # a no-op on the API's autocommit connection: the statement committed
    return inserted


def _write_capped(session: Session, shape: str, params: dict) -> bool:
    """Postgres, a key with a max_in_flight: lock the key, insert while it is below its limit,
    commit (which releases the lock). The INSERT starts after the lock is granted, so under READ
    COMMITTED it counts every job an earlier holder committed."""
    connection = session.connection()
    lock = {"lock": quotas.in_flight_lock_id(params["actor"])}
    if not connection.connection.dbapi_connection.autocommit:  # an ordinary session's transaction
        connection.exec_driver_sql(LOCK_KEY, lock)
        inserted = connection.execute(CAPPED_STATEMENT[shape], params).first() is not None
        session.commit()
        return inserted
    # The API's autocommit connection: open the transaction by hand (psycopg2 sends BEGIN and the
    # lock as one message) and always end it, so no transaction goes back to the pool open.
    connection.exec_driver_sql(BEGIN_AND_LOCK_KEY, lock)
    try:
        inserted = connection.execute(CAPPED_STATEMENT[shape], params).first() is not None
    except BaseException:
        _roll_back(connection)
        raise
    connection.exec_driver_sql("COMMIT")
    return inserted


def _roll_back(connection: Connection) -> None:
    try:
        connection.exec_driver_sql("ROLLBACK")
    except SQLAlchemyError:  # the connection is broken: drop it rather than pool it mid-transaction
        connection.invalidate()


def _write_each(session: Session, shape: str, job: dict, audit_row: dict, max_in_flight: int | None) -> bool:
    """The same rows as separate INSERTs in one transaction (databases without data-modifying
    CTEs); a unique-key violation is the racing replay. With ``max_in_flight`` the transaction
    first takes SQLite's write lock (a write that changes nothing), so no other writer can add
    a job between the count and the INSERT."""
    if max_in_flight is not None:
        session.execute(update(JOBS).where(false()).values(id=JOBS.c.id))
        if session.scalar(quotas.in_flight_of(job["actor"])) >= max_in_flight:
            session.rollback()
            return False
    if shape == EXISTING_CASE and not _case_of_tenant(session, job["case_id"], job["tenant"]):
        session.rollback()
        return False
    try:
        if shape == NEW_CASE:
            session.execute(insert(CASES), _case_row(job))
        session.execute(insert(JOBS), job)
        audit.record(
            session, job["id"], SUBMITTED, audit_row["audit_actor"], at=job["created_at"], details=audit_row["details"]
        )
        session.commit()
    except IntegrityError:
        session.rollback()
        return False
    return True


def _case_of_tenant(session: Session, case_id: uuid.UUID, tenant: str) -> bool:
    return session.scalar(select(CASES.c.id).where(CASES.c.id == case_id, CASES.c.tenant == tenant)) is not None


def _case_row(job: dict) -> dict:
    return {"id": job["case_id"], "created_at": job["created_at"], "created_by": job["actor"], "tenant": job["tenant"]}


def _replay(session: Session, tenant: str, idempotency_key: str, digest: str) -> JobRef | None:
    """The job ``tenant`` created earlier with this Idempotency-Key; IdempotencyConflict if its
    body differed."""
    row = session.execute(
        select(JOBS.c.id, JOBS.c.kind, JOBS.c.status, JOBS.c.request_hash).where(
            JOBS.c.tenant == tenant, JOBS.c.idempotency_key == idempotency_key
        )
    ).first()
    if row is None:
        return None
    if row.request_hash != digest:
        raise IdempotencyConflict()
    return JobRef(row.id, row.kind, row.status)


# --- the one statement (Postgres), built and compiled once per shape ------------------------

NEW_CASE, EXISTING_CASE, NO_CASE = "new_case", "existing_case", "no_case"
"""A screening job with a new case, one naming an existing case, a task (no case)."""


JOB_COLUMNS = (
    *("id", "case_id", "kind", "status", "age_months", "observations", "embedding", "task_type", "payload"),
    *("preferred_target", "sla_ms", "strict_sla", "budget_usd", "idempotency_key", "request_hash", "actor"),
    *("created_at", "claim_count", "attempts", "tenant"),
)
"""The columns a new job's INSERT names: the keys of ``_queued_row`` (every other column is NULL)."""


def _param(name: str, column) -> Any:
    # INSERT ... SELECT does not coerce an untyped parameter to the column's type: cast it.
    return cast(bindparam(name, type_=column.type), column.type)


def _job_select(shape: str, capped: bool) -> Select:
    chosen = select(*(_param(name, JOBS.c[name]) for name in JOB_COLUMNS))
    if shape == EXISTING_CASE:
        ours = (CASES.c.id == _param("case_id", CASES.c.id), CASES.c.tenant == _param("tenant", CASES.c.tenant))
        chosen = chosen.where(exists().where(*ours))
    if capped:
        in_flight = quotas.in_flight_of(_param("actor", JOBS.c.actor)).scalar_subquery()
        chosen = chosen.where(in_flight < bindparam("max_in_flight", type_=Integer))
    return chosen


def _one_statement(shape: str, capped: bool = False):
    """``WITH job AS (INSERT ... ON CONFLICT DO NOTHING RETURNING id) [, case AS (INSERT ...
    FROM job)], audit AS (INSERT ... FROM job) SELECT id FROM job``: the case and the audit row
    exist only if the job was inserted (foreign keys are checked at the end of the statement).
    ``capped``: the job is inserted only while its actor has fewer than ``:max_in_flight`` jobs
    queued or running."""
    job = (
        pg_insert(JOBS)
        .from_select(list(JOB_COLUMNS), _job_select(shape, capped))
        .on_conflict_do_nothing(index_elements=[JOBS.c.tenant, JOBS.c.idempotency_key])
        .returning(JOBS.c.id)
        .cte("new_job")
    )
    parts = []
    if shape == NEW_CASE:
        case_values = select(
            _param("case_id", CASES.c.id),
            _param("created_at", CASES.c.created_at),
            _param("actor", CASES.c.created_by),
            _param("tenant", CASES.c.tenant),
        ).select_from(job)
        case_columns = ["id", "created_at", "created_by", "tenant"]
        parts.append(insert(CASES).from_select(case_columns, case_values).cte("new_case"))
    audit_values = select(
        job.c.id,
        literal_column(f"'{SUBMITTED}'"),
        _param("audit_actor", AUDIT.c.actor),
        _param("created_at", AUDIT.c.at),
        _param("details", AUDIT.c.details),
    )
    audit_columns = ["job_id", "event", "actor", "at", "details"]
    parts.append(insert(AUDIT).from_select(audit_columns, audit_values).cte("new_audit"))
    statement = select(job.c.id)
    for part in parts:
        statement = statement.add_cte(part)
    return statement


ONE_STATEMENT = {shape: _one_statement(shape) for shape in (NEW_CASE, EXISTING_CASE, NO_CASE)}
CAPPED_STATEMENT = {shape: _one_statement(shape, capped=True) for shape in (NEW_CASE, EXISTING_CASE, NO_CASE)}
LOCK_KEY = "SELECT pg_advisory_xact_lock(%(lock)s)"
BEGIN_AND_LOCK_KEY = f"BEGIN ISOLATION LEVEL READ COMMITTED; {LOCK_KEY}"
"""Raw SQL (psycopg2 interpolates ``%(lock)s``; two statements go as one message)."""
