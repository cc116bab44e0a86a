"""Initial schema: cases, jobs, audit (append-only), targets, telemetry_samples.

Mirrors migrations/001_create_tables.sql; tests/integration/test_migrations.py proves the two
produce the same Postgres schema, and that both match the ORM models.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)
JSONB = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

PG_APPEND_ONLY = [
    """CREATE FUNCTION audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$""",
    """CREATE TRIGGER audit_append_only
    BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only()""",
    """CREATE TRIGGER audit_no_truncate
    BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()""",
]
SQLITE_APPEND_ONLY = [
    "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'audit is append-only: UPDATE is not allowed'); END",
    "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'audit is append-only: DELETE is not allowed'); END",
]


def upgrade() -> None:
    op.create_table(
        "cases",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cases")),
    )
    op.create_table(
        "targets",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("url", sa.String(512), nullable=False),
        sa.Column("contract", sa.String(16), nullable=False),
        sa.Column("cost_per_call_usd", sa.Float(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=True),
        sa.Column("prior_latency_ms", sa.Float(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("registered_by", sa.String(64), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_targets")),
        sa.CheckConstraint("tier IN ('edge', 'cloud', 'gpu')", name=op.f("ck_targets_tier")),
        sa.CheckConstraint("contract IN ('infer', 'run')", name=op.f("ck_targets_contract")),
    )
    op.create_table(
        "telemetry_samples",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("at", TZ, nullable=False),
        sa.Column("received_at", TZ, nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("utilization", sa.Float(), nullable=True),
        sa.Column("queue_depth", sa.Integer(), nullable=True),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.Column("up", sa.Boolean(), nullable=True),
        sa.Column("source", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_telemetry_samples")),
    )
    op.create_index("ix_telemetry_target_at", "telemetry_samples", ["target", "at"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("case_id", sa.Uuid(), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("age_months", sa.Integer(), nullable=True),
        sa.Column("observations", sa.Text(), nullable=True),
        sa.Column("embedding", sa.LargeBinary(), nullable=True),
        sa.Column("task_type", sa.String(64), nullable=True),
        sa.Column("payload", JSONB, nullable=True),
        sa.Column("preferred_target", sa.String(64), nullable=False),
        sa.Column("sla_ms", sa.Integer(), nullable=False),
        sa.Column("strict_sla", sa.Boolean(), nullable=False),
        sa.Column("budget_usd", sa.Float(), nullable=True),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=True),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("started_at", TZ, nullable=True),
        sa.Column("finished_at", TZ, nullable=True),
        sa.Column("lease_expires_at", TZ, nullable=True),
        sa.Column("claim_count", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(128), nullable=True),
        sa.Column("target", sa.String(64), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("predicted_ms", sa.Float(), nullable=True),
        sa.Column("predicted_p95_ms", sa.Float(), nullable=True),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.Column("sla_met", sa.Boolean(), nullable=True),
        sa.Column("result", JSONB, nullable=True),
        sa.Column("decision", JSONB, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("error_kind", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.CheckConstraint("status IN ('queued', 'running', 'completed', 'failed')", name=op.f("ck_jobs_status")),
        sa.CheckConstraint("kind IN ('screening', 'task')", name=op.f("ck_jobs_kind")),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], name=op.f("fk_jobs_case_id_cases")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_jobs_idempotency_key")),
    )
    op.create_index("ix_jobs_case_id", "jobs", ["case_id"])
    op.create_index("ix_jobs_created_at_id", "jobs", ["created_at", "id"])
    op.create_index("ix_jobs_status_created_at", "jobs", ["status", "created_at"])
    op.create_index("ix_jobs_target_created_at", "jobs", ["target", "created_at"])
    op.create_table(
        "audit",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("at", TZ, nullable=False),
        sa.Column("target", sa.String(64), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("details", JSONB, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit")),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_audit_job_id_jobs")),
    )
    op.create_index("ix_audit_job_id_at", "audit", ["job_id", "at"])
    dialect = op.get_bind().dialect.name
    for statement in PG_APPEND_ONLY if dialect == "postgresql" else SQLITE_APPEND_ONLY if dialect == "sqlite" else []:
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_append_only ON audit")
        op.execute("DROP TRIGGER IF EXISTS audit_no_truncate ON audit")
        op.execute("DROP FUNCTION IF EXISTS audit_append_only()")
    op.drop_table("audit")
    op.drop_table("jobs")
    op.drop_table("telemetry_samples")
    op.drop_table("targets")
    op.drop_table("cases")
