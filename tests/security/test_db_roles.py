"""Least-privilege database roles (migrations/roles.sql), on real Postgres, as the runtime role.

The roles are made the way an operator makes them: psql runs migrations/roles.sql, then
``alembic upgrade head`` (the real CLI) runs with MIGRATION_DATABASE_URL naming the owner and
DATABASE_URL the runtime role. Then, connected as the runtime role, every way of rewriting or
erasing the audit trail fails on privileges (not merely on the append-only trigger); the product
(API, worker, model server) completes a job connected as that role; tables the owner adds later
are granted by default privileges, and a database migrated before the roles existed is adopted.

Role names are unique per test session (roles are cluster-wide) and dropped afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from orchestrator import intake
from orchestrator.models import Audit
from orchestrator.schemas import JobCreate
from tests.support import postgres
from tests.support.env import ROOT, require
from tests.support.stack import Stack

pytestmark = [pytest.mark.security, pytest.mark.postgres]

INSUFFICIENT_PRIVILEGE = "42501"
APP_TABLES_RW = {"cases", "jobs", "targets", "telemetry_samples"}
"""Tables the runtime role reads and writes (expected_privileges says how)."""


@dataclass(frozen=True)
class Roles:
    database_url: str  # the superuser's connection, for checks and set-up only
    owner: str
    app: str
    owner_url: str
    app_url: str


def alembic_upgrade(migration_url: str, runtime_url: str) -> subprocess.CompletedProcess:
    """``alembic upgrade head`` as the migrate step runs it: both URLs set, Alembic picks the owner's."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONPATH": str(ROOT),
        "MIGRATION_DATABASE_URL": migration_url,
        "DATABASE_URL": runtime_url,
    }
    return subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def make_roles(server_url: str, prefix: str, **variables: str) -> Roles:
    database_url = postgres.create_database(server_url, prefix=prefix)
    owner, app = postgres.unique_role_names()
    owner_password, app_password = f"o-{owner[-8:]}", f"a-{app[-8:]}"
    postgres.apply_roles_sql(
        database_url, owner, app, owner_password=owner_password, app_password=app_password, **variables
    )
    return Roles(
        database_url,
        owner,
        app,
        postgres.as_role(database_url, owner, owner_password),
        postgres.as_role(database_url, app, app_password),
    )


def drop(server_url: str, roles: Roles) -> None:
    postgres.drop_database(roles.database_url)
    postgres.drop_roles(server_url, roles.app, roles.owner)


@pytest.fixture(scope="module")
def roles(pg_server_url: str | None) -> Iterator[Roles]:
    require(pg_server_url, "PostgreSQL not available (set TEST_DATABASE_URL, or install postgresql for initdb)")
    require(shutil.which("psql"), "psql not installed (Debian: postgresql-client)")
    made = make_roles(pg_server_url, "pedi_roles")
    try:
        migrated = alembic_upgrade(made.owner_url, made.app_url)
        assert migrated.returncode == 0, migrated.stderr
        yield made
    finally:
        drop(pg_server_url, made)


def scalar(url: str, sql: str, **params):
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(text(sql), params).scalar()
    finally:
        engine.dispose()


def rows(url: str, sql: str, **params) -> list[tuple]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return [tuple(r) for r in connection.execute(text(sql), params)]
    finally:
        engine.dispose()


PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


def table_privileges(url: str, role: str) -> dict[str, set[str]]:
    """table -> the privileges ``role`` holds on it, for every table of schema public."""
    found = rows(
        url,
        "SELECT c.relname, p.priv FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "CROSS JOIN unnest(CAST(:privs AS text[])) AS p(priv) "
        "WHERE n.nspname = 'public' AND c.relkind = 'r' AND has_table_privilege(:role, c.oid, p.priv)",
        privs=list(PRIVILEGES),
        role=role,
    )
    tables = rows(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    out: dict[str, set[str]] = {t: set() for (t,) in tables}
    for table, privilege in found:
        out[table].add(privilege)
    return out


def expected_privileges(table: str) -> set[str]:
    if table == "audit":
        return {"SELECT", "INSERT"}
    if table == "alembic_version":
        return {"SELECT"}
    if table in ("jobs", "cases"):  # never deleted by the app; the audit trail refers to them
        return {"SELECT", "INSERT", "UPDATE"}
    return {"SELECT", "INSERT", "UPDATE", "DELETE"}


# --- the roles themselves ------------------------------------------------------------------------


def test_the_owner_owns_the_schema_and_neither_role_has_special_powers(roles):
    owners = set(rows(roles.database_url, "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"))
    assert owners == {(roles.owner,)}, "alembic ran as MIGRATION_DATABASE_URL's role, not DATABASE_URL's"
    attributes = rows(
        roles.database_url,
        "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, rolcanlogin "
        "FROM pg_roles WHERE rolname IN (:o, :a) ORDER BY rolname = :o",
        o=roles.owner,
        a=roles.app,
    )
    assert attributes == [
        (roles.app, False, False, False, False, False, True),
        (roles.owner, False, False, False, False, False, True),
    ]
    assert not scalar(roles.database_url, "SELECT pg_has_role(:a, :o, 'MEMBER')", a=roles.app, o=roles.owner)
    assert not scalar(roles.database_url, "SELECT has_schema_privilege(:a, 'public', 'CREATE')", a=roles.app)
    assert scalar(roles.database_url, "SELECT has_schema_privilege(:o, 'public', 'CREATE')", o=roles.owner)


def test_the_runtime_role_holds_only_row_privileges(roles):
    held = table_privileges(roles.database_url, roles.app)
    assert APP_TABLES_RW | {"audit", "alembic_version"} <= set(held), held
    assert held == {table: expected_privileges(table) for table in held}
    assert scalar(roles.database_url, "SELECT has_sequence_privilege(:a, 'audit_id_seq', 'USAGE')", a=roles.app)


# --- the attacker's test: tampering with the audit trail as the runtime role ------------------------

TAMPERING = {
    "update": "UPDATE audit SET actor = 'mallory'",
    "delete": "DELETE FROM audit",
    "truncate": "TRUNCATE audit",
    "truncate-cascade": "TRUNCATE jobs, cases CASCADE",
    "disable-triggers": "ALTER TABLE audit DISABLE TRIGGER USER",
    "disable-all-triggers": "ALTER TABLE audit DISABLE TRIGGER ALL",
    "drop-trigger": "DROP TRIGGER audit_append_only ON audit",
    "replace-trigger-function": (
        "CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN OLD; END $$"
    ),
    "drop-table": "DROP TABLE audit",
    "drop-table-cascade": "DROP TABLE jobs CASCADE",
    "delete-the-audited-job": "DELETE FROM jobs",
    "replication-role": "SET session_replication_role = replica",
    "replication-role-local": "SET LOCAL session_replication_role = replica",
    "take-ownership": "ALTER TABLE audit OWNER TO CURRENT_USER",
    "grant-itself": "GRANT UPDATE, DELETE ON audit TO CURRENT_USER",
    "shadow-table": "CREATE TABLE public.audit_copy (id int)",
}


@pytest.fixture
def app_engine(roles):
    engine = create_engine(roles.app_url)
    yield engine
    engine.dispose()


def trigger_states(roles: Roles) -> list[tuple]:
    return rows(
        roles.database_url,
        "SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'audit'::regclass AND NOT tgisinternal ORDER BY 1",
    )


@pytest.mark.parametrize("statement", list(TAMPERING.values()), ids=list(TAMPERING))
def test_the_runtime_role_cannot_alter_or_erase_the_audit_trail(roles, app_engine, statement):
    with Session(app_engine) as session:  # the runtime role appends to the trail: that works
        case = JobCreate(age_months=4, observations="x")
        job_id = intake.submit_screening(session, case, actor="key-1", default_sla_ms=2000).job.id
    with Session(app_engine) as session:
        before = session.scalar(select(func.count()).select_from(Audit))
    triggers = trigger_states(roles)
    assert before >= 1 and [state for _, state in triggers] == ["O", "O"], triggers

    with pytest.raises(DBAPIError) as refused, app_engine.connect() as connection, connection.begin():
        connection.execute(text(statement))
        connection.execute(text("DELETE FROM audit"))  # reached only if the statement passed

    assert refused.value.orig.pgcode == INSUFFICIENT_PRIVILEGE, refused.value.orig.pgerror
    message = str(refused.value.orig)
    # Refused by privileges, before the append-only trigger (the second line of defence) could run.
    assert "append-only" not in message
    assert any(reason in message for reason in ("permission denied", "must be owner")), message
    with Session(app_engine) as session:
        assert session.scalar(select(func.count()).select_from(Audit)) == before
        assert session.scalar(select(func.count()).select_from(Audit).where(Audit.job_id == job_id)) == 1
    assert trigger_states(roles) == triggers
    assert scalar(roles.database_url, "SELECT to_regclass('public.audit_copy')") is None


# --- default privileges and re-runs ------------------------------------------------------------------


def test_a_table_the_owner_adds_later_is_granted_and_audit_stays_append_only(roles):
    owner = create_engine(roles.owner_url)
    try:
        with owner.begin() as connection:
            connection.execute(text("CREATE TABLE later_table (id BIGSERIAL PRIMARY KEY, note TEXT)"))
        app = create_engine(roles.app_url)
        with app.begin() as connection:
            new_id = connection.execute(text("INSERT INTO later_table (note) VALUES ('a') RETURNING id")).scalar()
            connection.execute(text("UPDATE later_table SET note = 'b' WHERE id = :i"), {"i": new_id})
            connection.execute(text("DELETE FROM later_table WHERE id = :i"), {"i": new_id})
        app.dispose()
        # Alembic again (no revision left to run): the audit limits are re-asserted, grants unchanged.
        rerun = alembic_upgrade(roles.owner_url, roles.app_url)
        assert rerun.returncode == 0, rerun.stderr
        held = table_privileges(roles.database_url, roles.app)
        assert held["later_table"] == {"SELECT", "INSERT", "UPDATE", "DELETE"}
        assert held["audit"] == {"SELECT", "INSERT"}
    finally:
        with owner.begin() as connection:
            connection.execute(text("DROP TABLE IF EXISTS later_table"))
        owner.dispose()


def test_alembic_takes_update_on_audit_back_from_any_other_role(roles):
    # An operator's stray grant (or default privileges on a re-created audit table).
    with create_engine(roles.owner_url).begin() as connection:
        connection.execute(text(f'GRANT UPDATE, DELETE, TRUNCATE ON audit TO "{roles.app}", PUBLIC'))
    assert "UPDATE" in table_privileges(roles.database_url, roles.app)["audit"]
    rerun = alembic_upgrade(roles.owner_url, roles.app_url)
    assert rerun.returncode == 0, rerun.stderr
    assert table_privileges(roles.database_url, roles.app)["audit"] == {"SELECT", "INSERT"}
    public = scalar(
        roles.database_url,
        "SELECT count(*) FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = 'audit'::regclass AND a.grantee = 0",
    )
    assert public == 0


def test_roles_sql_is_idempotent_after_migrations(roles):
    before = table_privileges(roles.database_url, roles.app)
    postgres.apply_roles_sql(roles.database_url, roles.owner, roles.app)  # no passwords: kept as they are
    assert table_privileges(roles.database_url, roles.app) == before
    assert scalar(roles.app_url, "SELECT current_user") == roles.app


def test_roles_sql_refuses_one_role_for_both(roles):
    with pytest.raises(subprocess.CalledProcessError) as refused:
        postgres.apply_roles_sql(roles.database_url, roles.app, roles.app)
    assert "must be two different" in refused.value.stderr


def test_a_database_migrated_before_the_roles_is_adopted(pg_server_url):
    """The upgrade path: a schema the superuser created (the old compose file) moves to the owner."""
    require(pg_server_url, "PostgreSQL not available")
    require(shutil.which("psql"), "psql not installed (Debian: postgresql-client)")
    database_url = postgres.create_database(pg_server_url, prefix="pedi_adopt")
    owner, app = postgres.unique_role_names("adopt")
    try:
        migrated = alembic_upgrade(database_url, database_url)
        assert migrated.returncode == 0, migrated.stderr
        postgres.apply_roles_sql(database_url, owner, app, adopt_existing="1")
        owners = rows(database_url, "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")
        assert owners == [(owner,)]
        held = table_privileges(database_url, app)
        assert held == {table: expected_privileges(table) for table in held}
        app_url = postgres.as_role(database_url, app, "")
        with pytest.raises(DBAPIError) as refused, create_engine(app_url).begin() as connection:
            connection.execute(text("ALTER TABLE audit DISABLE TRIGGER USER"))
        assert refused.value.orig.pgcode == INSUFFICIENT_PRIVILEGE
    finally:
        postgres.drop_database(database_url)
        postgres.drop_roles(pg_server_url, app, owner)


# --- the product, connected as the runtime role ----------------------------------------------------


@pytest.mark.e2e
@pytest.mark.redis
def test_the_api_and_worker_complete_a_job_as_the_runtime_role(roles, redis_url, artifacts):
    stack = Stack(roles.app_url, redis_url, artifacts)
    try:
        stack.model_server("gpu", tier="gpu", latency_ms=5, jitter=0)
        api = stack.api(api_key="runtime-role-key-0001")
        stack.worker(concurrency=2)
        job = api.submit(age_months=24, observations="Says no words yet.", sla_ms=10_000)
        done = api.wait(job["job_id"], timeout=30)
        assert done["status"] == "completed", done
        sessions = rows(
            roles.database_url,
            "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'pedi-orchestrator'",
        )
        assert sessions == [(roles.app,)], "the API and the worker are connected as the runtime role only"
        events = {
            event for (event,) in rows(roles.app_url, "SELECT event FROM audit WHERE job_id = :j", j=job["job_id"])
        }
        assert {"submitted", "completed"} <= events, events
        # Erasure (an UPDATE to NULL, never a DELETE) and export work with row privileges only.
        erased = api.http.delete(f"/api/cases/{done['case_id']}")
        assert erased.status_code == 200 and erased.json()["erased_job_ids"] == [job["job_id"]], erased.text
        assert api.http.get(f"/api/cases/{done['case_id']}/export").status_code == 200
        assert rows(roles.app_url, "SELECT observations, result FROM jobs WHERE id = :j", j=job["job_id"]) == [
            (None, None)
        ]
    finally:
        stack.close()
