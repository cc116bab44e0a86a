"""Alembic revision 0001 and migrations/001_create_tables.sql build the same Postgres schema,
which is also exactly what the ORM models describe; the audit table refuses UPDATE/DELETE."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
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


def apply_sql_file(url: str) -> None:
    engine = create_engine(url)
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cursor:
            cursor.execute((ROOT / "migrations" / "001_create_tables.sql").read_text())
        raw.commit()
    finally:
        raw.close()
        engine.dispose()


def test_sql_file_and_alembic_build_the_same_schema(two_databases):
    from tests.conftest import migrate

    alembic_url, sql_url = two_databases
    migrate(alembic_url)
    apply_sql_file(sql_url)
    via_alembic, via_sql = describe(alembic_url), describe(sql_url)
    assert set(via_alembic) >= {"cases", "jobs", "audit", "targets", "telemetry_samples", "_triggers"}
    assert via_alembic["_triggers"], "the append-only trigger is missing"
    assert via_alembic == via_sql


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
    from alembic.config import Config

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
