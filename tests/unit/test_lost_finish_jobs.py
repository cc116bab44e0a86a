"""The SQLite path of ``jobs.finish`` (dev, unit tests) keeps the Postgres statement's promise:
a terminal write that loses changes nothing and writes no terminal or ``routed`` row, but the
``attempt`` rows of its model calls are written (tests/integration/test_lost_finish_postgres.py
for Postgres)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from orchestrator import audit, jobs
from orchestrator.models import JobStatus
from tests.unit.test_worker_logic import load, submit


def test_a_lost_finish_records_its_calls_and_nothing_else(sqlite_engine):
    job_id = submit(sqlite_engine)
    now = datetime.now(UTC)
    later = now + timedelta(seconds=1)
    failed_call = audit.row("attempt", "b", at=later, target="gpu", outcome="timeout", details={"claim": 1, "call": 1})
    routed = jobs.Routed({"chosen": "gpu"}, 1.0, 2.0, audit.row("routed", "b", at=now, target="gpu"))
    with Session(sqlite_engine) as session:
        assert jobs.claim(session, job_id, worker_id="a", now=now, lease_seconds=15) is not None
        assert jobs.finish(session, job_id, JobStatus.COMPLETED, actor="a", now=now, target="edge")
        args = {"actor": "b", "now": later, "error": "x", "routed": routed, "rows": [failed_call]}
        assert not jobs.finish(session, job_id, JobStatus.FAILED, **args)
    job, trail = load(sqlite_engine, job_id)
    assert [(a.event, a.actor) for a in trail] == [
        ("submitted", "anonymous"),
        ("claimed", "a"),
        ("completed", "a"),
        ("attempt", "b"),
    ]
    assert job.status == "completed" and job.error is None and job.target == "edge" and job.decision is None
