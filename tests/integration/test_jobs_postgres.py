"""The job lifecycle on a real Postgres: one claim wins, the first terminal write wins."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from orchestrator import intake, jobs
from orchestrator.models import Audit, Job, JobStatus
from orchestrator.schemas import JobCreate

pytestmark = pytest.mark.postgres


def submit(engine, **body):
    body.setdefault("age_months", 24)
    body.setdefault("observations", "x")
    with Session(engine) as session:
        return intake.submit_screening(session, JobCreate(**body), actor="anonymous", default_sla_ms=2000).job.id


def test_concurrent_claims_of_one_job_have_exactly_one_winner(pg_engine):
    job_id = submit(pg_engine)
    factory = sessionmaker(pg_engine, expire_on_commit=False)
    barrier = threading.Barrier(8)

    def attempt(worker: int):
        barrier.wait()
        with factory() as session:
            return jobs.claim(session, job_id, worker_id=f"w{worker}", now=datetime.now(UTC), lease_seconds=15)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(attempt, range(8)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    with Session(pg_engine) as session:
        job = session.get(Job, job_id)
        assert job.status == "running" and job.claim_count == 1 and job.worker_id == winners[0].worker_id
        assert session.scalars(select(Audit.event).where(Audit.job_id == job_id)).all() == ["submitted", "claimed"]


def test_concurrent_terminal_writes_have_exactly_one_winner(pg_engine):
    job_id = submit(pg_engine)
    factory = sessionmaker(pg_engine, expire_on_commit=False)
    with factory() as session:
        jobs.claim(session, job_id, worker_id="w", now=datetime.now(UTC), lease_seconds=15)
    barrier = threading.Barrier(6)

    def finish(index: int) -> bool:
        barrier.wait()
        status = JobStatus.COMPLETED if index % 2 else JobStatus.FAILED
        with factory() as session:
            return jobs.finish(session, job_id, status, actor=f"w{index}", now=datetime.now(UTC))

    with ThreadPoolExecutor(6) as pool:
        assert sum(pool.map(finish, range(6))) == 1
    with Session(pg_engine) as session:
        events = session.scalars(select(Audit.event).where(Audit.job_id == job_id)).all()
        assert events.count("completed") + events.count("failed") == 1


def test_leases_are_renewed_only_for_the_owning_worker(pg_engine):
    mine, theirs = submit(pg_engine), submit(pg_engine)
    now = datetime.now(UTC)
    with Session(pg_engine) as session:
        jobs.claim(session, mine, worker_id="me", now=now, lease_seconds=5)
        jobs.claim(session, theirs, worker_id="them", now=now, lease_seconds=5)
        theirs_before = session.get(Job, theirs).lease_expires_at
        assert jobs.renew_leases(session, [mine, theirs], worker_id="me", lease_seconds=60) == 1
        db_now = jobs.database_now(session)
        session.expire_all()
        assert timedelta(seconds=59) < session.get(Job, mine).lease_expires_at - db_now <= timedelta(seconds=60)
        assert session.get(Job, theirs).lease_expires_at == theirs_before


def test_leases_run_on_the_database_clock_whatever_the_workers_clock_says(pg_engine):
    """A worker whose clock is an hour off (either way) still gets a lease of lease_seconds from
    the database's now, so the reconciler (on the same clock) never sees it expired early."""
    early, late = submit(pg_engine), submit(pg_engine)
    with Session(pg_engine) as session:
        skew = timedelta(hours=1)
        jobs.claim(session, early, worker_id="slow-clock", now=datetime.now(UTC) - skew, lease_seconds=15)
        jobs.claim(session, late, worker_id="fast-clock", now=datetime.now(UTC) + skew, lease_seconds=15)
        db_now = jobs.database_now(session)
        session.expire_all()
        for job_id in (early, late):
            left = session.get(Job, job_id).lease_expires_at - db_now
            assert timedelta(seconds=14) < left <= timedelta(seconds=15), left


def test_idempotency_keys_survive_a_race(pg_engine):
    body = JobCreate(age_months=5, observations="same")
    barrier = threading.Barrier(6)
    factory = sessionmaker(pg_engine, expire_on_commit=False)

    def post(_):
        barrier.wait()
        with factory() as session:
            return intake.submit_screening(
                session, body, actor="a", default_sla_ms=2000, idempotency_key="race-1"
            ).job.id

    with ThreadPoolExecutor(6) as pool:
        ids = set(pool.map(post, range(6)))
    assert len(ids) == 1
