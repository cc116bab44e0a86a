"""The audit trail is append-only on real Postgres, by its trigger: no UPDATE, no DELETE, and no
TRUNCATE (which skips row triggers), directly or by cascade, even for a connection that owns the
table (here the test's superuser, which is more than the schema owner).

This is the second line of defence. The first is privileges: the API and the worker connect as
the runtime role of migrations/roles.sql, which holds only SELECT and INSERT on audit and owns
nothing, so it cannot turn the trigger off either (tests/security/test_db_roles.py)."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from orchestrator import intake
from orchestrator.db import make_engine
from orchestrator.models import Audit
from orchestrator.schemas import JobCreate
from orchestrator.settings import load_settings

pytestmark = [pytest.mark.security, pytest.mark.postgres]


@pytest.fixture
def app_engine(pg_url, monkeypatch):
    """An engine built exactly as the API and the worker build theirs."""
    monkeypatch.setenv("DATABASE_URL", pg_url)
    engine = make_engine(load_settings())
    yield engine
    engine.dispose()


def audit_rows(engine) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(Audit))


@pytest.mark.parametrize(
    "statement",
    [
        update(Audit).values(actor="mallory"),
        delete(Audit),
        text("TRUNCATE audit"),
        text("TRUNCATE jobs, cases CASCADE"),
    ],
    ids=["update", "delete", "truncate", "truncate-cascade"],
)
def test_the_app_cannot_rewrite_or_erase_the_audit_trail(app_engine, statement):
    with Session(app_engine) as session:
        intake.submit_screening(session, JobCreate(age_months=4, observations="x"), actor="key-1", default_sla_ms=2000)
    before = audit_rows(app_engine)
    assert before == 1
    with pytest.raises(DBAPIError, match="append-only"), Session(app_engine) as session:
        session.execute(statement)
        session.commit()
    assert audit_rows(app_engine) == before
    with Session(app_engine) as session:
        assert session.scalar(select(Audit.actor)) == "key-1"
