"""A worker's terminal write that loses to another one on real Postgres (the reconciler ended
the job first, or ends it while the worker's statement waits for the row): the job and the
terminal row stay the winner's, and the ``attempt`` rows of the loser's model calls are still
written, once, so no call that was made is left in the trail as only "started"."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.orm import Session

from modelreasoner.worker import execute
from orchestrator import audit, jobs
from orchestrator.errors import ModelCallError
from orchestrator.models import Audit, Job, JobStatus
from tests.unit.test_worker_logic import ScriptedClient, make_runtime, submit

pytestmark = pytest.mark.postgres

TERMINAL = ("completed", "failed")
LOCK_WAIT_SECONDS = 10.0
"""How long the test waits for the worker's statement to queue behind the reconciler's lock (s)."""


@pytest.fixture
def autocommit_engine(pg_url):
    engine = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


def abandon(session: Session, job_id) -> bool:
    """The reconciler's terminal write (lease expired, too many claims), in ``session``'s
    transaction: the caller commits."""
    now = jobs.database_now(session)
    cutoff = now + timedelta(hours=1)  # every lease has expired as of this cutoff
    return jobs.abandon(session, job_id, cutoff=cutoff, actor="reconciler:test", now=now, claims=3, error="abandoned")


def trail(engine, job_id) -> list[Audit]:
    with Session(engine) as session:
        return audit.trail(session, job_id)


def calls(rows: list[Audit]) -> list[tuple[str, str, int]]:
    return [(c.target, c.outcome, c.details["call"]) for c in audit.attempt_rows(rows)]


def snapshot(engine, job_id) -> dict:
    """Every column of the job as the database holds it."""
    with engine.connect() as connection:
        row = connection.execute(select(Job.__table__).where(Job.__table__.c.id == job_id)).one()
    return dict(row._mapping)


def assert_abandoned(job: dict) -> None:
    assert (job["status"], job["error_kind"], job["error"]) == ("failed", "abandoned", "abandoned")
    assert job["result"] is None and job["lease_expires_at"] is None


@pytest.mark.parametrize("gpu_answers", [True, False], ids=["last-call-served", "last-call-failed"])
def test_a_finish_after_the_reconciler_ended_the_job_still_records_its_calls(
    autocommit_engine, pg_engine, fake_redis, gpu_answers
):
    job_id = submit(autocommit_engine)
    ended: list[dict] = []

    class EndedMeanwhile(ScriptedClient):
        """The reconciler ends the job while the worker's last call is in flight."""

        def call(self, target, job, timeout_s):
            if target.name == "gpu":
                with Session(pg_engine) as session:
                    assert abandon(session, job_id)
                    session.commit()
                ended.append(snapshot(pg_engine, job_id))
            return super().call(target, job, timeout_s)

    script = {"edge": [ModelCallError("http_5xx", "HTTP 500")]}
    if not gpu_answers:
        script["gpu"] = [ModelCallError("http_5xx", "HTTP 502")]
    runtime = make_runtime(autocommit_engine, fake_redis, EndedMeanwhile(script))
    runtime.targets()
    statements: list[str] = []
    event.listen(autocommit_engine, "before_cursor_execute", lambda _c, _cur, sql, *_: statements.append(sql))
    execute(runtime, job_id)

    # The claim, two call starts, the lost finish: still one statement each.
    assert len(statements) == 4, statements
    rows = trail(autocommit_engine, job_id)
    assert [(r.event, r.actor) for r in rows if r.event in TERMINAL] == [("failed", "reconciler:test")]
    assert "routed" in [r.event for r in rows]
    gpu_outcome = "ok" if gpu_answers else "http_5xx"
    assert calls(rows) == [("edge", "http_5xx", 1), ("gpu", gpu_outcome, 2)], "no call left as only started"
    assert_abandoned(ended[0])
    assert snapshot(autocommit_engine, job_id) == ended[0], "the lost finish changed the job"


def test_a_finish_waiting_on_a_reconciler_write_records_its_calls_once_it_loses(autocommit_engine, pg_engine):
    job_id = submit(autocommit_engine)
    now = datetime.now(UTC)
    started = audit.row(audit.CALL_STARTED, "w", at=now, target="edge", details={"claim": 1, "call": 1})
    failed_call = audit.row(
        "attempt", "w", at=now + timedelta(seconds=1), target="edge", outcome="timeout", details={"claim": 1, "call": 1}
    )
    with Session(autocommit_engine) as session:
        assert jobs.claim(session, job_id, worker_id="w", now=now, lease_seconds=15) is not None
        jobs.start_call(session, job_id, started, routed=None, rows=[])

    outcome: list[bool] = []

    def worker_finish() -> None:
        with Session(autocommit_engine) as session:
            args = {"actor": "w", "now": now + timedelta(seconds=1), "error": "every target failed", "attempts": 1}
            outcome.append(jobs.finish(session, job_id, JobStatus.FAILED, rows=[failed_call], **args))

    with Session(pg_engine) as reconciler:
        assert abandon(reconciler, job_id)  # holds the job's row until it commits
        row = reconciler.execute(select(Job.__table__).where(Job.__table__.c.id == job_id)).one()
        ended = dict(row._mapping)  # the job as the reconciler commits it
        finisher = threading.Thread(target=worker_finish)
        finisher.start()
        wait_for_lock_waiter(pg_engine)
        reconciler.commit()
    finisher.join(LOCK_WAIT_SECONDS)
    assert outcome == [False]

    with Session(autocommit_engine) as session:
        # A retry of the same statement (its first answer lost) writes nothing more.
        args = {"actor": "w", "now": now + timedelta(seconds=1), "error": "every target failed", "attempts": 1}
        assert not jobs.finish(session, job_id, JobStatus.FAILED, rows=[failed_call], **args)
    rows = trail(autocommit_engine, job_id)
    assert [r.event for r in rows] == ["submitted", "claimed", "call_started", "failed", "attempt"]
    assert [r.actor for r in rows if r.event in TERMINAL] == ["reconciler:test"]
    assert calls(rows) == [("edge", "timeout", 1)]
    assert_abandoned(ended)
    assert snapshot(autocommit_engine, job_id) == ended, "the lost finish (or its retry) changed the job"


def test_a_winning_finish_sent_again_writes_each_row_once(autocommit_engine):
    job_id = submit(autocommit_engine)
    now = datetime.now(UTC)
    served = audit.row("attempt", "w", at=now, target="edge", outcome="ok", details={"claim": 1, "call": 1})
    with Session(autocommit_engine) as session:
        assert jobs.claim(session, job_id, worker_id="w", now=now, lease_seconds=15) is not None
        again = [audit.row(audit.CALL_STARTED, "w", at=now, target="edge", details={"claim": 1, "call": 1})] * 2
        for started in again:  # a call_started statement sent twice (retried after a lost answer)
            jobs.start_call(session, job_id, started, routed=None, rows=[])
        args = {"actor": "w", "now": now, "target": "edge", "result": {"risk_level": "low"}, "rows": [served]}
        assert jobs.finish(session, job_id, JobStatus.COMPLETED, **args)
        assert not jobs.finish(session, job_id, JobStatus.COMPLETED, **args)
    rows = trail(autocommit_engine, job_id)
    assert [r.event for r in rows] == ["submitted", "claimed", "call_started", "attempt", "completed"]


def wait_for_lock_waiter(engine) -> None:
    """Return once some session of this database waits for a row lock (the worker's finish
    queued behind the reconciler's uncommitted UPDATE)."""
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    with engine.connect() as connection:
        while time.monotonic() < deadline:
            if connection.execute(query).scalar():
                return
            connection.rollback()
            time.sleep(0.02)
    raise AssertionError("the worker's finish never waited for the reconciler's lock")
