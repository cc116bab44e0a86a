"""SQLAlchemy tables: the durable truth of every case, job and audit event.

Postgres in production (schema from Alembic revisions 0001.. or migrations/NNN_*.sql, which a
test proves identical), SQLite for the embedded dev default (``init_db``).

Cases and jobs (tasks are jobs of kind ``task``) record their tenant: the clinic or app whose key
created them. Every read the API answers is filtered by it (orchestrator.jobs).
Pydantic request/response schemas live apart, in ``orchestrator.schemas``.
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    DDL,
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    event,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from orchestrator.principals import DEFAULT_TENANT

TENANT_LENGTH = 64
"""Longest tenant name (characters), as PrincipalSpec allows it."""


class JobStatus(enum.StrEnum):
    """Where a job is in its life. ``completed`` and ``failed`` are terminal and final."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


TERMINAL_STATUSES = (JobStatus.COMPLETED, JobStatus.FAILED)
ACTIVE_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING)


class JobKind(enum.StrEnum):
    SCREENING = "screening"
    TASK = "task"


class UTCDateTime(TypeDecorator):
    """A timestamp that is always timezone-aware UTC in Python, on Postgres and on SQLite."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")
BigIntId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


NAMING_CONVENTION = {
    "pk": "pk_%(table_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
}
"""Explicit constraint names, identical in the ORM, Alembic and migrations/NNN_*.sql."""


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Case(Base):
    """A child's case: groups the screening jobs submitted for it. Holds no clinical text."""

    __tablename__ = "cases"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64))
    tenant: Mapped[str] = mapped_column(String(TENANT_LENGTH), default=DEFAULT_TENANT)
    """The tenant whose key created the case (revision 0002); a job may name only its own."""


class Job(Base):
    """One screening (or generic task) request and everything that happened to it."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint("status IN ('queued', 'running', 'completed', 'failed')", name="status"),
        CheckConstraint("kind IN ('screening', 'task')", name="kind"),
        Index("ix_jobs_status_created_at", "status", "created_at"),
        Index("ix_jobs_created_at_id", "created_at", "id"),
        Index("ix_jobs_case_id", "case_id"),
        Index("ix_jobs_target_created_at", "target", "created_at"),
        Index("ix_jobs_tenant_created_at_id", "tenant", "created_at", "id"),
        # An Idempotency-Key belongs to its tenant: another tenant's replay is a new job.
        UniqueConstraint("tenant", "idempotency_key", name="uq_jobs_tenant_idempotency_key"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    case_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("cases.id"), nullable=True)
    kind: Mapped[str] = mapped_column(String(16), default=JobKind.SCREENING.value)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED.value)

    # inputs (PHI: never leaves Postgres except to the chosen model server)
    age_months: Mapped[int | None] = mapped_column(Integer, nullable=True)
    observations: Mapped[str | None] = mapped_column(Text, nullable=True)
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    task_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    payload: Mapped[Any | None] = mapped_column(JSONType, nullable=True)

    # routing request
    preferred_target: Mapped[str] = mapped_column(String(64), default="auto")
    sla_ms: Mapped[int] = mapped_column(Integer)
    strict_sla: Mapped[bool] = mapped_column(Boolean, default=False)
    budget_usd: Mapped[float | None] = mapped_column(Float, nullable=True)

    # submission
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    actor: Mapped[str] = mapped_column(String(64))

    # lifecycle
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    claim_count: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[str | None] = mapped_column(String(128), nullable=True)

    # outcome
    target: Mapped[str | None] = mapped_column(String(64), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    predicted_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    predicted_p95_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    cost_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    sla_met: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    result: Mapped[Any | None] = mapped_column(JSONType, nullable=True)
    decision: Mapped[Any | None] = mapped_column(JSONType, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_kind: Mapped[str | None] = mapped_column(String(64), nullable=True)

    # ownership (revision 0002: added last, so the ORM's column order is the migrated one)
    tenant: Mapped[str] = mapped_column(String(TENANT_LENGTH), default=DEFAULT_TENANT)


class Audit(Base):
    """An append-only record of something that happened to a job. Never holds observations.

    On Postgres triggers reject UPDATE, DELETE and TRUNCATE on this table.
    """

    __tablename__ = "audit"
    __table_args__ = (Index("ix_audit_job_id_at", "job_id", "at"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("jobs.id"), nullable=True)
    event: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    target: Mapped[str | None] = mapped_column(String(64), nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(32), nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    details: Mapped[Any | None] = mapped_column(JSONType, nullable=True)


class RegisteredTarget(Base):
    """A model server or agent registered at run time (POST /register_agent)."""

    __tablename__ = "targets"
    __table_args__ = (
        CheckConstraint("tier IN ('edge', 'cloud', 'gpu')", name="tier"),
        CheckConstraint("contract IN ('infer', 'run')", name="contract"),
    )

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    tier: Mapped[str] = mapped_column(String(16))
    url: Mapped[str] = mapped_column(String(512))
    contract: Mapped[str] = mapped_column(String(16), default="infer")
    cost_per_call_usd: Mapped[float] = mapped_column(Float)
    capacity: Mapped[int | None] = mapped_column(Integer, nullable=True)
    prior_latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    registered_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TelemetrySample(Base):
    """One normalized telemetry sample pushed by a target or agent (ms, 0-1, USD)."""

    __tablename__ = "telemetry_samples"
    __table_args__ = (Index("ix_telemetry_target_at", "target", "at"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    target: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    utilization: Mapped[float | None] = mapped_column(Float, nullable=True)
    queue_depth: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cost_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    up: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    source: Mapped[str] = mapped_column(String(64))


APPEND_ONLY_DDL = {
    "postgresql": [
        "CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE EXCEPTION 'audit is append-only: % is not allowed', TG_OP "
        "USING ERRCODE = 'insufficient_privilege'; END; $$",
        "CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit "
        "FOR EACH ROW EXECUTE FUNCTION audit_append_only()",
        "CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()",
    ],
    "sqlite": [
        "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit "
        "BEGIN SELECT RAISE(ABORT, 'audit is append-only: UPDATE is not allowed'); END",
        "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit "
        "BEGIN SELECT RAISE(ABORT, 'audit is append-only: DELETE is not allowed'); END",
    ],
}
"""The append-only guard on ``audit``, installed with the table (create_all and migrations)."""

for _dialect, _statements in APPEND_ONLY_DDL.items():
    for _statement in _statements:
        # DDL() formats its text with %: the plpgsql placeholder must be escaped.
        ddl = DDL(_statement.replace("%", "%%")).execute_if(dialect=_dialect)
        event.listen(Audit.__table__, "after_create", ddl)
event.listen(
    Audit.__table__,
    "before_drop",
    DDL("DROP FUNCTION IF EXISTS audit_append_only() CASCADE").execute_if(dialect="postgresql"),
)


def init_db(engine: Engine) -> None:
    """Create every table that does not exist yet (the SQLite dev default and unit tests).

    Postgres deployments run ``alembic upgrade head`` instead, which also installs the
    append-only trigger on ``audit``.
    """
    Base.metadata.create_all(engine)
