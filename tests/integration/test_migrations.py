"""Alembic's revisions and migrations/NNN_*.sql build the same Postgres schema, which is also
exactly what the ORM models describe; each SQL file records the Alembic revision it equals, so
the two paths mix (SQL first, then `alembic upgrade head`); the audit table refuses UPDATE/DELETE;
revision 0002 (tenants) keeps every existing row, as tenant ``default``, and its SQL is safe to
apply twice. The rule for SQL files: migrations/README.md."""

from __future__ import annotations

import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from orchestrator.models import Base
from tests.support import postgres
from tests.support.env import ROOT, require

pytestmark = pytest.mark.postgres

CASE, JOB = uuid.UUID(int=1), uuid.UUID(int=2)

TRIGGERS_SQL = """
SELECT c.relname AS table, t.tgname AS trigger, pg_get_triggerdef(t.oid) AS definition
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
WHERE NOT t.tgisinternal ORDER BY 1, 2
"""
FUNCTIONS_SQL = """
SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' ORDER BY 1
"""


def describe(url: str) -> dict:
    """Everything that defines the schema, in a comparable form."""
    engine = create_engine(url)
    inspector = inspect(engine)
    schema: dict = {}
    for table in sorted(inspector.get_table_names()):
        if table == "alembic_version":
            continue
        schema[table] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"], str(c.get("default"))) for c in inspector.get_columns(table)
            ],
            "pk": inspector.get_pk_constraint(table),
            "fks": sorted(inspector.get_foreign_keys(table), key=lambda f: f["name"]),
            "uniques": sorted(inspector.get_unique_constraints(table), key=lambda u: u["name"]),
            "checks": sorted(inspector.get_check_constraints(table), key=lambda c: c["name"]),
            "indexes": sorted(inspector.get_indexes(table), key=lambda i: i["name"]),
        }
    with engine.connect() as connection:
        schema["_triggers"] = [tuple(row) for row in connection.execute(text(TRIGGERS_SQL))]
        # Whitespace inside a function body carries no meaning: compare it normalized.
        schema["_functions"] = [
            (name, " ".join(body.split())) for name, body in connection.execute(text(FUNCTIONS_SQL))
        ]
    engine.dispose()
    return schema


@pytest.fixture
def two_databases(pg_server_url):
    require(pg_server_url, "PostgreSQL not available")
    urls = [postgres.create_database(pg_server_url, prefix="pedi_mig") for _ in range(2)]
    yield urls
    for url in urls:
        postgres.drop_database(url)


SQL_FILES = sorted((ROOT / "migrations").glob("[0-9][0-9][0-9]_*.sql"))
"""Every plain-SQL migration, in the order a DBA applies them."""


def apply_sql_file(url: str, files: list | None = None) -> None:
    """Apply ``files`` (default: every migrations/NNN_*.sql, in order) as psql would."""
    engine = create_engine(url)
    raw = engine.raw_connection()
    try:
        for path in SQL_FILES if files is None else files:
            with raw.cursor() as cursor:
                cursor.execute(path.read_text())
            raw.commit()
    finally:
        raw.close()
        engine.dispose()


def alembic_chain() -> list[str]:
    """Alembic's revisions from the first to head."""
    script = ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini")))
    return [revision.revision for revision in reversed(list(script.walk_revisions()))]


def alembic_to(url: str, revision: str) -> None:
    from alembic import command

    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = url
    config.attributes["configure_logger"] = False
    command.upgrade(config, revision)


def recorded_revisions(url: str) -> list[str]:
    engine = create_engine(url)
    with engine.connect() as connection:
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    engine.dispose()
    return list(versions)


def test_each_sql_file_matches_an_alembic_revision_in_order():
    revisions = alembic_chain()
    numbers = [path.name[:3] for path in SQL_FILES]
    assert numbers == [f"{n:03d}" for n in range(1, len(SQL_FILES) + 1)], "no gap, no duplicate"
    assert sorted(revisions) == [f"0{number}" for number in numbers]


def test_sql_file_and_alembic_build_the_same_schema(two_databases):
    from tests.conftest import migrate

    alembic_url, sql_url = two_databases
    migrate(alembic_url)
    apply_sql_file(sql_url)
    via_alembic, via_sql = describe(alembic_url), describe(sql_url)
    assert set(via_alembic) >= {"cases", "jobs", "audit", "targets", "telemetry_samples", "_triggers"}
    assert via_alembic["_triggers"], "the append-only trigger is missing"
    assert via_alembic == via_sql


def test_sql_files_are_safe_to_apply_twice_and_record_the_alembic_revision(two_databases):
    url = two_databases[0]
    apply_sql_file(url)
    before = describe(url)
    apply_sql_file(url, [path for path in SQL_FILES if path.name != "001_create_tables.sql"])
    assert describe(url) == before
    engine = create_engine(url)
    with engine.connect() as connection:
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    engine.dispose()
    assert versions == [f"0{SQL_FILES[-1].name[:3]}"]


@pytest.mark.parametrize("path", ["alembic", "sql"])
def test_rows_from_before_tenants_become_tenant_default_and_keep_their_idempotency_keys(two_databases, path):
    """Rows written under revision 0001 survive 0002: tenant ``default``; then the same
    Idempotency-Key may be used once per tenant, and only once within one."""
    url = two_databases[0]
    if path == "alembic":
        alembic_to(url, "0001")
    else:
        apply_sql_file(url, [ROOT / "migrations" / "001_create_tables.sql"])
    engine = create_engine(url)
    job = """INSERT INTO jobs (id, case_id, kind, status, preferred_target, sla_ms, strict_sla,
        idempotency_key, actor, created_at, claim_count, attempts{tenant_column})
        VALUES (:id, :case_id, 'screening', 'queued', 'auto', 2000, false, :key, 'key-1', now(), 0, 0{tenant_value})"""
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO cases (id, created_at, created_by) VALUES (:id, now(), 'key-1')"), {"id": CASE}
        )
        connection.execute(
            text(job.format(tenant_column="", tenant_value="")), {"id": JOB, "case_id": CASE, "key": "k"}
        )
    if path == "alembic":
        alembic_to(url, "0002")
    else:
        apply_sql_file(url, [ROOT / "migrations" / "002_tenants.sql"])
    insert = text(job.format(tenant_column=", tenant", tenant_value=", :tenant"))
    with engine.begin() as connection:
        assert connection.execute(text("SELECT tenant FROM cases")).scalars().all() == ["default"]
        assert connection.execute(text("SELECT tenant FROM jobs")).scalars().all() == ["default"]
        connection.execute(insert, {"id": uuid.uuid4(), "case_id": None, "key": "k", "tenant": "clinic-b"})
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(insert, {"id": uuid.uuid4(), "case_id": None, "key": "k", "tenant": "default"})
    with pytest.raises(IntegrityError), engine.begin() as connection:  # the application names every tenant
        connection.execute(
            text(job.format(tenant_column="", tenant_value="")), {"id": uuid.uuid4(), "case_id": None, "key": "new"}
        )
    engine.dispose()


def test_each_sql_file_records_the_alembic_revision_it_equals(two_databases):
    url = two_databases[0]
    chain = alembic_chain()
    assert len(SQL_FILES) == len(chain), f"SQL files {[p.name for p in SQL_FILES]} vs Alembic revisions {chain}"
    for path, revision in zip(SQL_FILES, chain, strict=True):
        apply_sql_file(url, [path])
        assert recorded_revisions(url) == [revision], f"{path.name} must end by recording revision {revision}"


def test_alembic_upgrade_head_continues_after_the_sql_path(two_databases):
    """The reported failure: psql -f 001_create_tables.sql, then `alembic upgrade head` died on
    DuplicateTable. It must upgrade from there to the same schema as Alembic alone."""
    from tests.conftest import migrate

    sql_url, alembic_url = two_databases
    apply_sql_file(sql_url, SQL_FILES[:1])
    migrate(sql_url)
    migrate(sql_url)  # and again: at head, nothing to do
    migrate(alembic_url)
    assert recorded_revisions(sql_url) == recorded_revisions(alembic_url) == [alembic_chain()[-1]]
    assert describe(sql_url) == describe(alembic_url)


def test_init_db_on_postgres_builds_the_same_schema_as_alembic(two_databases):
    from orchestrator.models import init_db
    from tests.conftest import migrate

    alembic_url, orm_url = two_databases
    migrate(alembic_url)
    engine = create_engine(orm_url)
    init_db(engine)
    engine.dispose()
    assert describe(orm_url) == describe(alembic_url)


def test_alembic_schema_matches_the_orm_models(two_databases):
    from tests.conftest import migrate

    url = two_databases[0]
    migrate(url)
    engine = create_engine(url)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert diff == []


def test_alembic_downgrade_removes_everything(two_databases):
    from alembic import command

    url = two_databases[0]
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = url
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")
    command.downgrade(config, "base")
    assert set(inspect(create_engine(url)).get_table_names()) <= {"alembic_version"}


def test_audit_rows_cannot_be_updated_or_deleted(pg_engine):
    with pg_engine.begin() as connection:
        connection.execute(text("INSERT INTO audit (event, actor, at) VALUES ('submitted', 'anonymous', now())"))
    for statement in ("UPDATE audit SET actor = 'mallory'", "DELETE FROM audit"):
        with pytest.raises(DBAPIError, match="append-only"), pg_engine.begin() as connection:
            connection.execute(text(statement))
    with pg_engine.connect() as connection:
        assert connection.execute(text("SELECT actor FROM audit")).scalars().all() == ["anonymous"]
