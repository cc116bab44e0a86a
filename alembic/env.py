"""Alembic environment: migrates the database as the schema owner.

The URL is MIGRATION_DATABASE_URL (the owner role of migrations/roles.sql), else DATABASE_URL
(dev, SQLite, or a single-role setup). The API, worker and reconciler never need the owner's URL.

On Postgres, every upgrade ends by re-asserting the privilege limits of the schema: default
privileges (roles.sql) give the runtime role SELECT, INSERT, UPDATE and DELETE on each new table,
and a default grant cannot tell an append-only table from the others. So whatever was granted,
no role but the owner keeps UPDATE, DELETE, TRUNCATE, REFERENCES or TRIGGER on ``audit``, DELETE
on ``jobs`` or ``cases``, nor any write on ``alembic_version`` (OWNER_ONLY_PRIVILEGES).
Idempotent; it names no role, so it holds for any role names.
"""

from __future__ import annotations

import sys
from logging.config import fileConfig

from sqlalchemy import create_engine, pool, text

from alembic import context
from orchestrator.errors import ConfigError
from orchestrator.models import Base
from orchestrator.settings import get_settings

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name)

target_metadata = Base.metadata

OWNER_ONLY_PRIVILEGES = {
    "audit": "UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER",
    "jobs": "DELETE, TRUNCATE, REFERENCES, TRIGGER",
    "cases": "DELETE, TRUNCATE, REFERENCES, TRIGGER",
    "alembic_version": "INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER",
}
"""Table -> privileges no role but its owner may hold. The runtime role keeps SELECT and INSERT
on audit (append-only, by privilege as well as by trigger), no DELETE of jobs and cases (the app
never deletes one; the audit trail refers to them), SELECT on alembic_version. Mirrors the
grants of migrations/roles.sql."""


def revoke_from_non_owners(table: str, privileges: str) -> str:
    """A DO block revoking ``privileges`` on ``table`` from every grantee but its owner (PUBLIC
    included). Both arguments are the constants above, never input."""
    return f"""
DO $$
DECLARE
    grantee text;
BEGIN
    FOR grantee IN
        SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.oid = to_regclass('{table}') AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('REVOKE {privileges} ON TABLE {table} FROM %s', grantee);
    END LOOP;
END
$$
"""


def enforce_owner_only_privileges(connection) -> None:
    """Revoke OWNER_ONLY_PRIVILEGES from every non-owner grantee (Postgres only)."""
    if connection.dialect.name != "postgresql":
        return
    for table, privileges in OWNER_ONLY_PRIVILEGES.items():
        connection.execute(text(revoke_from_non_owners(table, privileges)))


def database_url() -> str:
    explicit = config.attributes.get("database_url")
    if explicit:
        return explicit
    try:
        settings = get_settings()
    except ConfigError as exc:
        sys.exit(f"alembic: {exc.message}")
    return settings.migration_database_url or settings.database_url


def run_migrations_offline() -> None:
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
            enforce_owner_only_privileges(connection)
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
