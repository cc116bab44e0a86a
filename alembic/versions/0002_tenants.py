"""Tenants: cases and jobs record the tenant whose key created them; an Idempotency-Key is
unique per tenant. Rows that exist already become tenant ``default`` (the tenant of every
``API_KEY`` key, the only kind of key there was).

Mirrors migrations/002_tenants.sql; tests/integration/test_migrations.py proves the two produce
the same Postgres schema, and that both match the ORM models.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT_TENANT = "default"
"""Frozen here (not imported): a migration must not change when the code does."""


def _add_tenant(table: str) -> None:
    # The server default fills existing rows, then goes: the application names every tenant.
    with op.batch_alter_table(table) as batch:
        batch.add_column(sa.Column("tenant", sa.String(64), nullable=False, server_default=DEFAULT_TENANT))
    with op.batch_alter_table(table) as batch:
        batch.alter_column("tenant", server_default=None, existing_type=sa.String(64), existing_nullable=False)


def upgrade() -> None:
    _add_tenant("cases")
    _add_tenant("jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint("uq_jobs_idempotency_key", type_="unique")
        batch.create_unique_constraint("uq_jobs_tenant_idempotency_key", ["tenant", "idempotency_key"])
        batch.create_index("ix_jobs_tenant_created_at_id", ["tenant", "created_at", "id"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_tenant_created_at_id")
        batch.drop_constraint("uq_jobs_tenant_idempotency_key", type_="unique")
        batch.create_unique_constraint("uq_jobs_idempotency_key", ["idempotency_key"])
        batch.drop_column("tenant")
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("tenant")
