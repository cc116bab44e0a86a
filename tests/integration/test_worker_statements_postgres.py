"""The worker's job transitions on real Postgres, on an autocommit engine as the worker runs
them: one statement per state change (orchestrator.job_sql), the same trail as before, the
``call_started`` row committed before its call, and the terminal row only from the write that
won (a call's ``attempt`` row is written either way: tests/integration/test_lost_finish_postgres.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, event, func, select
from sqlalchemy.orm import Session

from modelreasoner.worker import execute
from orchestrator import audit, jobs
from orchestrator.errors import ModelCallError
from orchestrator.models import Audit, Job, JobStatus
from tests.unit.test_worker_logic import ANSWER, ScriptedClient, load, make_runtime, submit

pytestmark = pytest.mark.postgres


@pytest.fixture
def autocommit_engine(pg_url):
    engine = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


def count_statements(engine) -> list[str]:
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda _c, _cur, statement, *_: seen.append(statement))
    return seen


def test_a_failed_over_job_is_one_statement_per_transition_with_the_full_trail(autocommit_engine, fake_redis):
    client = ScriptedClient({"edge": [ModelCallError("http_5xx", "HTTP 500")]})
    runtime = make_runtime(autocommit_engine, fake_redis, client)
    job_id = submit(autocommit_engine)
    runtime.targets()  # the registered-target cache, read once every few seconds, not per job
    statements = count_statements(autocommit_engine)
    summary = execute(runtime, job_id)
    assert summary == {"status": "completed", "target": "gpu"}
    # The claim; the first call's start (with the decision); the second's (with the first's
    # attempt row); the terminal state (with the winner's attempt row). No BEGIN, no COMMIT.
    assert len(statements) == 4, statements
    assert all(s.lstrip().upper().startswith(("WITH", "INSERT")) for s in statements), statements
    job, _ = load(autocommit_engine, job_id)
    with Session(autocommit_engine) as session:
        trail = audit.trail(session, job_id)
    assert [a.event for a in trail] == [
        *("submitted", "claimed", "routed", "call_started", "attempt", "call_started", "attempt", "completed")
    ]
    assert trail[1].details == {"claim": 1} and trail[2].target == "edge" and trail[2].outcome == "ok"
    assert [(c.target, c.outcome, c.details["call"]) for c in audit.attempt_rows(trail)] == [
        ("edge", "http_5xx", 1),
        ("gpu", "ok", 2),
    ]
    assert job.status == "completed" and job.result == ANSWER and job.attempts == 2
    assert job.decision["chosen"] == "edge" and job.predicted_ms is not None and job.lease_expires_at is None


def test_the_decision_and_call_started_row_are_committed_before_the_call(autocommit_engine, pg_engine, fake_redis):
    seen = []

    class Watching(ScriptedClient):
        def call(self, target, job, timeout_s):
            with Session(pg_engine) as session:  # another connection: only committed rows
                stored = session.get(Job, job_id)
                events = session.scalars(select(Audit.event).where(Audit.job_id == job_id).order_by(Audit.id)).all()
                seen.append((stored.decision is not None, list(events)))
            return super().call(target, job, timeout_s)

    job_id = submit(autocommit_engine)
    execute(make_runtime(autocommit_engine, fake_redis, Watching()), job_id)
    assert seen == [(True, ["submitted", "claimed", "routed", "call_started"])]


def test_a_late_finish_changes_nothing_but_records_its_calls(autocommit_engine):
    job_id = submit(autocommit_engine)
    now = datetime.now(UTC)
    attempt = audit.row("attempt", "w", at=now, target="edge", outcome="ok", details={"call": 1})
    with Session(autocommit_engine) as session:
        assert jobs.claim(session, job_id, worker_id="w", now=now, lease_seconds=15) is not None
        assert jobs.finish(session, job_id, JobStatus.COMPLETED, actor="w", now=now, target="edge", rows=[attempt])
        late = [audit.row("attempt", "late", at=now, target="gpu", outcome="ok")]
        routed = jobs.Routed({"chosen": "gpu"}, 1.0, 2.0, audit.row("routed", "late", at=now, target="gpu"))
        args = {"actor": "late", "now": now, "error": "x", "routed": routed, "rows": late}
        assert not jobs.finish(session, job_id, JobStatus.FAILED, **args)
        events = session.execute(select(Audit.event, Audit.actor).where(Audit.job_id == job_id).order_by(Audit.id))
        # Its call happened: its attempt row is the truth. Its routed and terminal rows are not.
        assert [tuple(e) for e in events] == [
            ("submitted", "anonymous"),
            ("claimed", "w"),
            ("attempt", "w"),
            ("completed", "w"),
            ("attempt", "late"),
        ]
        job = session.get(Job, job_id)
        assert job.status == "completed" and job.error is None and job.target == "edge" and job.decision is None


def test_a_worker_gives_up_only_a_job_it_holds(autocommit_engine):
    job_id = submit(autocommit_engine)
    now = datetime.now(UTC)
    kind = jobs.ErrorKind.INTERNAL_ERROR
    with Session(autocommit_engine) as session:
        jobs.claim(session, job_id, worker_id="them", now=now, lease_seconds=15)
        assert not jobs.give_up(session, job_id, worker_id="me", now=now, error_kind=kind, error="route failed: X")
        assert session.scalar(select(func.count()).where(Audit.job_id == job_id)) == 2
        later = now + timedelta(seconds=1)
        assert jobs.give_up(session, job_id, worker_id="them", now=later, error_kind=kind, error="route failed: X")
        failed = session.scalars(select(Audit).where(Audit.job_id == job_id).order_by(Audit.id.desc())).first()
        assert (failed.event, failed.actor, failed.outcome) == ("failed", "them", "failed")
        assert failed.details == {"error_kind": "internal_error"} and failed.at == later
        job = session.get(Job, job_id)
        assert job.status == "failed" and job.error == "route failed: X" and job.worker_id == "them"


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_a_stalled_worker_cannot_overwrite_the_decision_of_the_claim_that_replaced_it(autocommit_engine, backend):
    engine = autocommit_engine if backend == "postgres" else create_engine("sqlite://")
    if backend == "sqlite":
        from orchestrator.models import Base

        Base.metadata.create_all(engine)
    job_id = submit(engine)
    now = datetime.now(UTC)

    def routed(worker: str, chosen: str) -> jobs.Routed:
        row = audit.row("routed", worker, at=now, target=chosen)
        return jobs.Routed({"chosen": chosen}, 1.0, 2.0, row, worker_id=worker)

    def started(worker: str, target: str) -> dict:
        return audit.row(audit.CALL_STARTED, worker, at=now, target=target, details={"call": 1})

    with Session(engine) as session:
        jobs.claim(session, job_id, worker_id="stalled", now=now, lease_seconds=15)
        # The stalled worker's job is recovered and claimed again before its first call starts.
        session.execute(Job.__table__.update().where(Job.id == job_id).values(status="queued"))
        session.commit()
        jobs.claim(session, job_id, worker_id="new", now=now, lease_seconds=15)
        jobs.start_call(session, job_id, started("new", "gpu"), routed=routed("new", "gpu"), rows=[])
        jobs.start_call(session, job_id, started("stalled", "edge"), routed=routed("stalled", "edge"), rows=[])
        job = session.get(Job, job_id)
        session.refresh(job)
        assert job.decision == {"chosen": "gpu"} and job.worker_id == "new"
        events = session.execute(select(Audit.event, Audit.actor).where(Audit.job_id == job_id).order_by(Audit.id))
        # The stalled worker's call still happens and is recorded, with its own routed row.
        assert ("routed", "stalled") in [tuple(e) for e in events]
