"""Retention passes with an injected clock (SQLite): which jobs expire, batching, resuming."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, select

from orchestrator.db import make_session_factory
from orchestrator.lifecycle import is_erased
from orchestrator.models import Audit, Case, Job, JobKind, JobStatus, init_db
from orchestrator.retention import overdue_seconds, run_pass
from tests.support.env import ROOT

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DAYS = 30
CLI = [sys.executable, "-m", "orchestrator.retention", "--once"]


def add_job(session, *, finished_days_ago: float | None, status: str = "completed", kind: str = "screening") -> Job:
    case = Case(created_by="t", tenant="default")
    session.add(case)
    session.flush()
    finished = NOW - timedelta(days=finished_days_ago) if finished_days_ago is not None else None
    job = Job(
        case_id=case.id if kind == "screening" else None,
        kind=kind,
        status=status,
        age_months=20 if kind == "screening" else None,
        observations="secret words" if kind == "screening" else None,
        embedding=b"\x00\x01" if kind == "screening" else None,
        task_type="summarize" if kind == "task" else None,
        payload={"text": "secret"} if kind == "task" else None,
        result={"risk": "high"} if status == "completed" else None,
        sla_ms=1000,
        actor="t",
        created_at=NOW - timedelta(days=(finished_days_ago or 0) + 1),
        finished_at=finished,
        target="gpu",
        cost_usd=0.01,
        decision={"chosen": "gpu"},
    )
    session.add(job)
    session.commit()
    return job


@pytest.fixture
def sessions(sqlite_engine):
    return make_session_factory(sqlite_engine)


def test_only_terminal_jobs_past_the_period_are_erased(sessions):
    with sessions() as session:
        old = add_job(session, finished_days_ago=DAYS + 1).id
        old_failed = add_job(session, finished_days_ago=DAYS + 2, status="failed").id
        old_task = add_job(session, finished_days_ago=DAYS + 3, kind="task").id
        young = add_job(session, finished_days_ago=DAYS - 1).id
        running = add_job(session, finished_days_ago=None, status="running").id

    report = run_pass(sessions, days=DAYS, batch_size=10, now=NOW)
    assert (report.erased, report.complete, report.overdue_seconds) == (3, True, 0.0)
    with sessions() as session:
        by_id = {job.id: job for job in session.scalars(select(Job))}
        for job_id in (old, old_failed, old_task):
            job = by_id[job_id]
            assert is_erased(job)
            assert (job.observations, job.embedding, job.payload, job.result, job.age_months) == (None,) * 5
            assert (job.target, job.cost_usd, job.decision) == ("gpu", 0.01, {"chosen": "gpu"})
        assert not is_erased(by_id[young]) and not is_erased(by_id[running])
        rows = list(session.scalars(select(Audit).where(Audit.event == "erased")))
    assert {row.job_id for row in rows} == {old, old_failed, old_task}
    assert all(row.actor == "retention" and row.details["reason"] == "retention" for row in rows)
    assert run_pass(sessions, days=DAYS, batch_size=10, now=NOW).erased == 0, "a second pass finds nothing"


def test_a_bounded_pass_reports_what_is_left_and_the_next_resumes(sessions):
    with sessions() as session:
        ids = [add_job(session, finished_days_ago=DAYS + 10 - n).id for n in range(5)]
        assert overdue_seconds(session, now=NOW, days=DAYS) == pytest.approx(10 * 86400)

    first = run_pass(sessions, days=DAYS, batch_size=2, now=NOW, max_batches=1)
    assert (first.erased, first.batches, first.complete) == (2, 1, False)
    assert first.overdue_seconds == pytest.approx(8 * 86400), "the two oldest went first"
    second = run_pass(sessions, days=DAYS, batch_size=2, now=NOW)
    assert (second.erased, second.batches, second.complete, second.overdue_seconds) == (3, 2, True, 0.0)
    with sessions() as session:
        assert all(is_erased(session.get(Job, job_id)) for job_id in ids)


def test_is_erased_reads_the_input_of_each_kind():
    screening = Job(kind=JobKind.SCREENING.value, observations=None, payload=None, status=JobStatus.COMPLETED.value)
    task = Job(kind=JobKind.TASK.value, observations=None, payload={"a": 1}, id=uuid.uuid4())
    assert is_erased(screening) and not is_erased(task)


def test_the_cli_runs_one_pass_and_prints_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'pedi.db'}"
    engine = create_engine(url)
    init_db(engine)
    with make_session_factory(engine)() as session:
        old = add_job(session, finished_days_ago=400).id  # NOW is mid-2026: long past 30 days at any real time
    engine.dispose()
    env = {**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(ROOT)}

    off = subprocess.run(CLI, env=env, capture_output=True, text=True, timeout=60)
    assert off.returncode == 0 and json.loads(off.stdout) == {"enabled": False}
    assert "PHI_RETENTION_DAYS is not set" in off.stderr

    env["PHI_RETENTION_DAYS"] = "30"
    done = subprocess.run(CLI, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert (report["enabled"], report["erased"], report["complete"]) == (True, 1, True)
    engine = create_engine(url)
    with make_session_factory(engine)() as session:
        assert is_erased(session.get(Job, old))
    engine.dispose()

    env["PHI_RETENTION_DAYS"] = "-1"
    bad = subprocess.run(CLI, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "PHI_RETENTION_DAYS" in bad.stderr
