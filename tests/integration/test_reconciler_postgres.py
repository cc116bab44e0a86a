"""The reconciler on real Postgres and Redis: conditional transitions under concurrent passes."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from orchestrator import intake, jobs
from orchestrator.models import Audit, Job
from orchestrator.reconciler import reconcile_once
from orchestrator.schemas import JobCreate
from orchestrator.settings import load_settings

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def submit_many(sessions, count: int) -> list[uuid.UUID]:
    with sessions() as session:
        body = JobCreate(age_months=24, observations="x")
        return [intake.submit_screening(session, body, actor="t", default_sla_ms=2000).job.id for _ in range(count)]


def events(sessions, event: str) -> dict[uuid.UUID, int]:
    with sessions() as session:
        rows = session.execute(
            select(Audit.job_id, func.count()).where(Audit.event == event).group_by(Audit.job_id)
        ).all()
    return dict(rows)


def test_concurrent_passes_recover_each_expired_job_exactly_once(sessions, queue):
    settings = load_settings()
    ids = submit_many(sessions, 40)
    with sessions() as session:
        for job_id in ids:
            jobs.claim(session, job_id, worker_id="dead", now=datetime.now(UTC), lease_seconds=15)
    reports, start = [], threading.Barrier(4)
    later = datetime.now(UTC) + timedelta(minutes=5)  # leases run on the database's clock: move the pass

    def one_pass():
        start.wait()
        reports.append(reconcile_once(sessions, queue, now=later, settings=settings, confirm_seconds=0))

    threads = [threading.Thread(target=one_pass) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    recovered = [job_id for report in reports for job_id in report.recovered]
    assert sorted(recovered) == sorted(str(j) for j in ids), "each job recovered by exactly one pass"
    assert set(events(sessions, "recovered").values()) == {1}
    with sessions() as session:
        statuses = set(session.scalars(select(Job.status).where(Job.id.in_(ids))))
    assert statuses == {"queued"}
    on_queue = {i.decode() for i in queue.connection.lrange(queue.key, 0, -1)}
    assert on_queue == {str(j) for j in ids}


def test_a_flushed_redis_is_refilled_from_postgres(sessions, queue):
    settings = load_settings()
    ids = submit_many(sessions, 25)
    queue.connection.flushall()
    report = reconcile_once(
        sessions, queue, now=datetime.now(UTC) + timedelta(seconds=60), settings=settings, confirm_seconds=0
    )
    assert sorted(report.requeued) == sorted(str(j) for j in ids)
    assert {i.decode() for i in queue.connection.lrange(queue.key, 0, -1)} == {str(j) for j in ids}
    assert set(events(sessions, "requeued").values()) == {1}


def test_abandoning_on_postgres_writes_one_terminal_row(sessions, queue):
    settings = load_settings().model_copy(update={"job_max_claims": 1})
    (job_id,) = submit_many(sessions, 1)
    with sessions() as session:
        jobs.claim(session, job_id, worker_id="dead", now=datetime.now(UTC), lease_seconds=15)
    later = datetime.now(UTC) + timedelta(minutes=5)
    report = reconcile_once(sessions, queue, now=later, settings=settings, confirm_seconds=0)
    assert report.abandoned == [str(job_id)]
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job.status == "failed" and job.error_kind == "abandoned" and job.finished_at is not None
    assert events(sessions, "failed") == {job_id: 1}
