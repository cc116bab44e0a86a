"""Issue 11 on real Postgres: deterministic database errors in the claim and in the terminal
write end the job failed once, naming the step and the column, never looping and never quoting
the data."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session

from modelreasoner.reasons import step_failed
from modelreasoner.worker import execute
from orchestrator.audit import INSERT_ROW
from orchestrator.models import utcnow
from tests.unit.test_worker_logic import ANSWER, ScriptedClient, load, make_runtime, submit

pytestmark = pytest.mark.postgres


def test_a_value_too_long_is_named_by_table_and_column(pg_engine):
    with Session(pg_engine) as session, pytest.raises(DataError) as raised:
        row = {"job_id": None, "event": "claimed", "actor": "w" * 80, "at": utcnow()}
        session.execute(INSERT_ROW, {**row, "target": None, "outcome": None, "latency_ms": None, "details": None})
    assert step_failed("claim", raised.value) == "claim failed: value too long for audit.actor"


@pytest.fixture
def claims_fail(pg_engine):
    """A trigger that makes every ``claimed`` audit row fail as a too-long value would."""
    ddl = [
        """CREATE FUNCTION pedi_test_poison() RETURNS trigger AS $$ BEGIN
             IF NEW.event = 'claimed' THEN RAISE EXCEPTION 'poison' USING ERRCODE = '22001'; END IF;
             RETURN NEW; END $$ LANGUAGE plpgsql""",
        "CREATE TRIGGER pedi_test_poison BEFORE INSERT ON audit FOR EACH ROW EXECUTE FUNCTION pedi_test_poison()",
    ]
    with pg_engine.begin() as connection:
        for statement in ddl:
            connection.execute(text(statement))
    yield
    with pg_engine.begin() as connection:
        connection.execute(text("DROP TRIGGER pedi_test_poison ON audit"))
        connection.execute(text("DROP FUNCTION pedi_test_poison()"))


def test_a_claim_that_always_fails_ends_the_job_at_the_first_delivery(pg_engine, fake_redis, claims_fail):
    client = ScriptedClient()
    job_id = submit(pg_engine)
    summary = execute(make_runtime(pg_engine, fake_redis, client), job_id)
    job, trail = load(pg_engine, job_id)
    assert summary["status"] == "failed" and client.calls == []
    assert job.status == "failed" and job.error_kind == "internal_error" and job.claim_count == 0
    assert job.error == "claim failed: value too long in jobs or audit"
    assert [a.event for a in trail] == ["submitted", "failed"]


@pytest.mark.parametrize("bad", ["a\u0000b", float("nan")])
def test_an_answer_postgres_cannot_store_fails_once_naming_the_persist_step(pg_engine, fake_redis, bad):
    """Defect 3's second line of defence: were an unstorable answer to get past validation, the
    job ends failed at once (the model called once), not recovered and re-run until abandoned."""
    client = ScriptedClient({"edge": [{**ANSWER, "rationale": bad}]})
    job_id = submit(pg_engine)
    execute(make_runtime(pg_engine, fake_redis, client), job_id)
    job, trail = load(pg_engine, job_id)
    assert len(client.calls) == 1
    assert job.status == "failed" and job.error.startswith("persist failed: ") and job.result is None
    assert "a\u0000b" not in job.error and job.lease_expires_at is None
    assert [a.event for a in trail].count("failed") == 1
