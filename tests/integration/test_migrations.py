"""Alembic's revisions and migrations/NNN_*.sql build the same Postgres schema, which is also
exactly what the ORM models describe; each SQL file records the Alembic revision it equals, so
the two paths mix (SQL first, then `alembic upgrade head`); the audit table refuses UPDATE/DELETE.
The rule for SQL files: migrations/README.md."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import DBAPIError

from orchestrator.models import Base
from tests.support import postgres
from tests.support.env import ROOT, require

pytestmark = pytest.mark.postgres

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


def sql_files() -> list[Path]:
    """migrations/NNN_*.sql in the order they are applied."""
    return sorted((ROOT / "migrations").glob("[0-9][0-9][0-9]_*.sql"))


def alembic_chain() -> list[str]:
    """Alembic's revisions from the first to head."""
    script = ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini")))
    return [revision.revision for revision in reversed(list(script.walk_revisions()))]


def apply_sql_file(url: str, path: Path | None = None) -> None:
    engine = create_engine(url)
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cursor:
            cursor.execute((path or sql_files()[0]).read_text())
        raw.commit()
    finally:
        raw.close()
        engine.dispose()


def recorded_revisions(url: str) -> list[str]:
    engine = create_engine(url)
    with engine.connect() as connection:
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    engine.dispose()
    return list(versions)


def test_sql_files_and_alembic_build_the_same_schema(two_databases):
    from tests.conftest import migrate

    alembic_url, sql_url = two_databases
    migrate(alembic_url)
    for path in sql_files():
        apply_sql_file(sql_url, path)
    via_alembic, via_sql = describe(alembic_url), describe(sql_url)
    assert set(via_alembic) >= {"cases", "jobs", "audit", "targets", "telemetry_samples", "_triggers"}
    assert via_alembic["_triggers"], "the append-only trigger is missing"
    assert via_alembic == via_sql


def test_each_sql_file_records_the_alembic_revision_it_equals(two_databases):
    url = two_databases[0]
    files, chain = sql_files(), alembic_chain()
    assert [path.name[:3] for path in files] == [f"{n:03d}" for n in range(1, len(files) + 1)], "gap in NNN_*.sql"
    assert len(files) == len(chain), f"SQL files {[p.name for p in files]} vs Alembic revisions {chain}"
    for path, revision in zip(files, chain, strict=True):
        apply_sql_file(url, path)
        assert recorded_revisions(url) == [revision], f"{path.name} must end by recording revision {revision}"


def test_alembic_upgrade_head_continues_after_the_sql_path(two_databases):
    """The reported failure: psql -f 001_create_tables.sql, then `alembic upgrade head` died on
    DuplicateTable. It must upgrade from there (a no-op while 0001 is head) to the same schema."""
    from tests.conftest import migrate

    sql_url, alembic_url = two_databases
    apply_sql_file(sql_url, sql_files()[0])
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
