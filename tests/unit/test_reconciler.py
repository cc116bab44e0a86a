"""The reconciler's repairs on SQLite and fakeredis, with the clock passed in."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis
from click.testing import CliRunner
from sqlalchemy import create_engine, select

from orchestrator import intake, jobs
from orchestrator import reconciler as reconciler_module
from orchestrator.constants import RECONCILER_LAST_PASS_KEY, RECONCILER_LOCK_KEY
from orchestrator.db import make_session_factory
from orchestrator.metrics import JOBS_RECOVERED
from orchestrator.models import Audit, Job, init_db
from orchestrator.queue_rq import enqueue_job, get_queue
from orchestrator.reconciler import Reconciler, reconcile_once
from orchestrator.schemas import JobCreate
from orchestrator.settings import load_settings

LEASE_S, GRACE_S, MAX_CLAIMS = 15.0, 5.0, 3


@pytest.fixture
def settings():
    return load_settings().model_copy(
        update={"job_lease_seconds": LEASE_S, "reconciler_grace_seconds": GRACE_S, "job_max_claims": MAX_CLAIMS}
    )


@pytest.fixture
def sessions(sqlite_engine):
    return make_session_factory(sqlite_engine)


@pytest.fixture
def queue(fake_redis):
    return get_queue(fake_redis)


def submit(sessions) -> uuid.UUID:
    with sessions() as session:
        body = JobCreate(age_months=24, observations="x")
        return intake.submit_screening(session, body, actor="anonymous", default_sla_ms=2000).job.id


def claim(sessions, job_id, at: datetime, worker: str = "w1") -> None:
    with sessions() as session:
        assert jobs.claim(session, job_id, worker_id=worker, now=at, lease_seconds=LEASE_S) is not None


def load(sessions, job_id) -> tuple[Job, list[str]]:
    with sessions() as session:
        job = session.get(Job, job_id)
        events = session.scalars(select(Audit.event).where(Audit.job_id == job_id).order_by(Audit.id)).all()
        return job, list(events)


def waiting(queue) -> list[str]:
    return [i.decode() for i in queue.connection.lrange(queue.key, 0, -1)]


def run(sessions, queue, settings, now):
    return reconcile_once(sessions, queue, now=now, settings=settings, actor="reconciler:test", confirm_seconds=0)


def later(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def counter(reason: str) -> float:
    return JOBS_RECOVERED.labels(reason)._value.get()


# --- queued jobs missing from Redis -------------------------------------------------------------------


def test_a_queued_job_redis_lost_is_enqueued_again_and_audited(sessions, queue, settings):
    job_id = submit(sessions)  # committed, never enqueued: as if Redis lost it
    before = counter("missing_from_queue")
    report = run(sessions, queue, settings, later(GRACE_S + 1))
    assert report.requeued == [str(job_id)] and report.total == 1
    assert waiting(queue) == [str(job_id)]
    job, events = load(sessions, job_id)
    assert job.status == "queued" and events == ["submitted", "requeued"]
    assert counter("missing_from_queue") == before + 1
    assert run(sessions, queue, settings, later(GRACE_S + 2)).total == 0, "a job on the list is left alone"


def test_a_job_inside_the_grace_period_is_left_to_the_api(sessions, queue, settings):
    submit(sessions)
    assert run(sessions, queue, settings, later(GRACE_S - 1)).total == 0
    assert waiting(queue) == []


def test_a_job_on_the_queue_list_is_not_enqueued_twice(sessions, queue, settings):
    job_id = submit(sessions)
    enqueue_job(queue, str(job_id))
    assert run(sessions, queue, settings, later(600)).total == 0
    assert waiting(queue) == [str(job_id)]


def test_the_grace_period_counts_from_the_last_enqueue_not_from_the_submit(sessions, queue, settings):
    job_id = submit(sessions)
    first = run(sessions, queue, settings, later(60))
    assert first.requeued == [str(job_id)]
    queue.connection.delete(queue.key)  # lost again right after the requeue
    assert run(sessions, queue, settings, later(60 + GRACE_S - 1)).total == 0
    assert run(sessions, queue, settings, later(60 + GRACE_S + 1)).requeued == [str(job_id)]


def test_a_job_a_worker_took_is_trusted_for_a_lease_then_requeued(sessions, queue, settings):
    job_id = submit(sessions)
    enqueue_job(queue, str(job_id))
    queue.connection.lmove(queue.key, queue.intermediate_queue_key)  # taken, never claimed
    assert run(sessions, queue, settings, later(GRACE_S + 1)).total == 0
    assert run(sessions, queue, settings, later(GRACE_S + LEASE_S + 1)).requeued == [str(job_id)]


def test_a_job_that_reappears_during_the_confirmation_pause_is_not_requeued(sessions, queue, settings, monkeypatch):
    job_id = submit(sessions)
    monkeypatch.setattr(reconciler_module.time, "sleep", lambda _s: enqueue_job(queue, str(job_id)))
    report = reconcile_once(sessions, queue, now=later(60), settings=settings, confirm_seconds=1)
    assert report.total == 0 and waiting(queue) == [str(job_id)]


def test_a_job_claimed_during_the_confirmation_pause_is_not_requeued(sessions, queue, settings, monkeypatch):
    job_id = submit(sessions)
    monkeypatch.setattr(reconciler_module.time, "sleep", lambda _s: claim(sessions, job_id, datetime.now(UTC)))
    report = reconcile_once(sessions, queue, now=later(60), settings=settings, confirm_seconds=1)
    assert report.total == 0 and waiting(queue) == []


def test_finished_jobs_are_never_touched(sessions, queue, settings):
    job_id = submit(sessions)
    claim(sessions, job_id, datetime.now(UTC) - timedelta(hours=1))
    with sessions() as session:
        assert jobs.finish(session, job_id, jobs.JobStatus.COMPLETED, actor="w1", now=datetime.now(UTC))
    assert run(sessions, queue, settings, later(3600)).total == 0
    assert load(sessions, job_id)[0].status == "completed"


def test_a_redis_outage_mid_pass_keeps_the_audit_of_what_was_enqueued(sessions, queue, settings, monkeypatch):
    first, second = submit(sessions), submit(sessions)
    calls = []

    def flaky(q, job_id, meta=None):
        calls.append(job_id)
        if len(calls) == 2:
            raise redis.ConnectionError("gone")
        return enqueue_job(q, job_id, meta)

    monkeypatch.setattr(reconciler_module, "enqueue_job", flaky)
    with pytest.raises(redis.ConnectionError):
        run(sessions, queue, settings, later(60))
    audited = [job_id for job_id in (first, second) if "requeued" in load(sessions, job_id)[1]]
    assert [str(j) for j in audited] == waiting(queue) == calls[:1]


# --- running jobs whose lease expired ---------------------------------------------------------------


def test_an_expired_lease_puts_the_job_back_on_the_queue(sessions, queue, settings):
    job_id = submit(sessions)
    claimed_at = datetime.now(UTC)
    claim(sessions, job_id, claimed_at)
    before = counter("lease_expired")
    assert run(sessions, queue, settings, claimed_at + timedelta(seconds=LEASE_S + GRACE_S - 1)).total == 0
    report = run(sessions, queue, settings, claimed_at + timedelta(seconds=LEASE_S + GRACE_S + 1))
    assert report.recovered == [str(job_id)] and waiting(queue) == [str(job_id)]
    job, events = load(sessions, job_id)
    assert job.status == "queued" and job.worker_id is None and job.lease_expires_at is None and job.claim_count == 1
    assert events == ["submitted", "claimed", "recovered"]
    assert counter("lease_expired") == before + 1
    with sessions() as session:
        row = session.scalar(select(Audit).where(Audit.job_id == job_id, Audit.event == "recovered"))
        assert row.actor == "reconciler:test" and row.details == {
            "reason": "lease_expired",
            "claims": 1,
            "previous_worker": "w1",
        }


def test_a_renewed_lease_is_left_alone(sessions, queue, settings):
    job_id = submit(sessions)
    start = datetime.now(UTC)
    claim(sessions, job_id, start)
    with sessions() as session:
        jobs.renew_leases(session, [job_id], worker_id="w1", lease_seconds=60)
    assert run(sessions, queue, settings, start + timedelta(seconds=LEASE_S + GRACE_S + 1)).total == 0
    assert load(sessions, job_id)[0].status == "running"


def test_the_last_claim_is_failed_as_abandoned_with_a_reason(sessions, queue, settings):
    job_id = submit(sessions)
    at = datetime.now(UTC)
    for claim_number in range(1, MAX_CLAIMS + 1):
        claim(sessions, job_id, at, worker=f"w{claim_number}")
        at += timedelta(seconds=LEASE_S + GRACE_S + 1)
        report = run(sessions, queue, settings, at)
        if claim_number < MAX_CLAIMS:
            assert report.recovered == [str(job_id)]
    assert report.abandoned == [str(job_id)] and report.recovered == []
    job, events = load(sessions, job_id)
    assert job.status == "failed" and job.error_kind == "abandoned" and job.finished_at is not None
    assert f"after {MAX_CLAIMS} claims" in job.error and "JOB_MAX_CLAIMS=3" in job.error
    assert events.count("claimed") == MAX_CLAIMS and events[-1] == "failed"
    assert run(sessions, queue, settings, at + timedelta(hours=1)).total == 0


def test_a_late_result_from_the_recovered_worker_still_wins_once(sessions, queue, settings):
    job_id = submit(sessions)
    at = datetime.now(UTC)
    claim(sessions, job_id, at, worker="slow")
    run(sessions, queue, settings, at + timedelta(seconds=LEASE_S + GRACE_S + 1))
    claim(sessions, job_id, datetime.now(UTC), worker="second")
    with sessions() as session:
        assert jobs.finish(session, job_id, jobs.JobStatus.COMPLETED, actor="slow", now=datetime.now(UTC))
    with sessions() as session:
        assert not jobs.finish(session, job_id, jobs.JobStatus.FAILED, actor="second", now=datetime.now(UTC))
    events = load(sessions, job_id)[1]
    assert events.count("completed") + events.count("failed") == 1


# --- the runner ---------------------------------------------------------------------------------------


def test_only_one_process_reconciles_per_interval(sessions, queue, settings):
    first = Reconciler(sessions, queue, settings, actor="a", interval=30)
    second = Reconciler(sessions, queue, settings, actor="b", interval=30)
    assert first.run_pass() is not None
    assert second.run_pass() is None and first.run_pass() is None
    assert queue.connection.get(RECONCILER_LOCK_KEY) == b"a"
    assert 0 < queue.connection.pttl(RECONCILER_LOCK_KEY) <= 30_000 * 0.8
    queue.connection.delete(RECONCILER_LOCK_KEY)
    assert second.run_pass() is not None


def test_a_finished_pass_records_its_time_for_the_liveness_gauge(sessions, queue, settings, monkeypatch):
    queue.connection.delete(RECONCILER_LAST_PASS_KEY, RECONCILER_LOCK_KEY)
    before = time.time()
    assert Reconciler(sessions, queue, settings, actor="a", interval=30).run_pass() is not None
    assert before - 0.001 <= float(queue.connection.get(RECONCILER_LAST_PASS_KEY)) <= time.time() + 0.001  # ms

    def failing(*args, **kwargs):
        raise redis.ConnectionError("down")

    monkeypatch.setattr(reconciler_module, "reconcile_once", failing)
    queue.connection.set(RECONCILER_LAST_PASS_KEY, "5.0")
    queue.connection.delete(RECONCILER_LOCK_KEY)
    with pytest.raises(redis.ConnectionError):
        Reconciler(sessions, queue, settings, actor="b", interval=30).run_pass()
    assert queue.connection.get(RECONCILER_LAST_PASS_KEY) == b"5.0"  # a failed pass is not a sign of life


def test_the_runner_thread_repairs_and_survives_a_store_outage(sessions, queue, settings, monkeypatch):
    calls = []

    def flaky_pass(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise redis.ConnectionError("down")
        return reconciler_module.ReconcileReport()

    monkeypatch.setattr(reconciler_module, "reconcile_once", flaky_pass)
    runner = Reconciler(sessions, queue, settings, actor="t", interval=0.1).start()
    try:
        deadline = datetime.now(UTC) + timedelta(seconds=5)
        while len(calls) < 3 and datetime.now(UTC) < deadline:
            queue.connection.delete(RECONCILER_LOCK_KEY)
            time.sleep(0.02)
    finally:
        runner.stop()
    assert len(calls) >= 3, "the thread kept passing after a failed pass"


def test_actor_names_fit_the_audit_column():
    name = reconciler_module.actor_name("worker" * 30)
    assert name.startswith("reconciler:") and len(name) <= 64


def test_the_cli_runs_one_pass_and_prints_it(tmp_path, monkeypatch):
    database = tmp_path / "r.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{database}")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    engine = create_engine(f"sqlite:///{database}")
    init_db(engine)
    engine.dispose()
    result = CliRunner().invoke(reconciler_module.main, ["--once"])
    # Nothing is queued, so the pass never needs Redis: it reports an empty repair list.
    assert result.exit_code == 0, result.output
    assert '"requeued": 0' in result.output


def test_the_cli_names_a_bad_variable(monkeypatch):
    monkeypatch.setenv("RECONCILER_INTERVAL_SECONDS", "soon")
    result = CliRunner().invoke(reconciler_module.main, ["--once"])
    assert result.exit_code == 2 and "RECONCILER_INTERVAL_SECONDS" in result.output


# --- issue 11: a job no worker can claim ends undeliverable instead of looping ---------------------------


def test_a_job_requeued_too_often_without_a_claim_ends_undeliverable(sessions, queue, settings):
    """Defect 1's loop: Redis keeps losing a job (its deliveries fail before any claim). It is
    requeued JOB_MAX_REQUEUES times, then failed with the reason, counted, and never enqueued again."""
    from orchestrator.metrics import JOBS_UNDELIVERABLE

    limit = settings.job_max_requeues
    job_id = submit(sessions)
    before = JOBS_UNDELIVERABLE._value.get()
    passes = []
    for n in range(limit + 3):
        queue.connection.delete(queue.key)  # the delivery was taken and lost, unclaimed
        passes.append(run(sessions, queue, settings, later(60 * (n + 1))))
    requeued = sum(len(p.requeued) for p in passes)
    undeliverable = [j for p in passes for j in p.undeliverable]
    job, events = load(sessions, job_id)
    assert requeued == limit and undeliverable == [str(job_id)]
    assert job.status == "failed" and job.error_kind == "undeliverable" and f"requeued {limit} times" in job.error
    assert events.count("requeued") == limit and events[-1] == "failed"
    assert JOBS_UNDELIVERABLE._value.get() == before + 1
    assert waiting(queue) == []


def test_a_claim_resets_the_requeue_count(sessions, queue, settings):
    """Requeues are counted since the last claim: a job recovered after running is not charged
    for the deliveries before its claim."""
    limit = settings.job_max_requeues
    job_id = submit(sessions)
    for n in range(limit - 1):
        queue.connection.delete(queue.key)
        run(sessions, queue, settings, later(60 * (n + 1)))
    claim(sessions, job_id, later(60 * limit))
    with sessions() as session:  # the worker died: its lease lapses and the job is recovered
        session.get(Job, job_id).lease_expires_at = later(60 * limit)
        session.commit()
    report = run(sessions, queue, settings, later(60 * limit + LEASE_S + GRACE_S + 60))
    assert report.recovered == [str(job_id)]
    queue.connection.delete(queue.key)
    report = run(sessions, queue, settings, later(60 * limit + 600))
    assert report.requeued == [str(job_id)] and report.undeliverable == []


def test_the_pass_judges_leases_on_the_database_clock_by_default(sessions, queue, settings, monkeypatch):
    """No ``now``: the pass reads the database's clock (jobs.database_now), never the caller's."""
    read = []
    real = reconciler_module.database_now
    monkeypatch.setattr(reconciler_module, "database_now", lambda session: read.append(1) or real(session))
    reconcile_once(sessions, queue, settings=settings, confirm_seconds=0)
    assert read == [1]


def test_long_actor_names_fit_and_stay_distinct():
    from orchestrator.audit import ACTOR_MAX_CHARS, fit_actor

    pod = "pedi-orchestrator-worker-7c9f8d6b5-" + "x" * 28  # 63 characters, a Helm release's pod
    one, two = fit_actor(f"{pod}:1234:abcdef"), fit_actor(f"{pod}:1234:abcdeg")
    assert len(one) == len(two) == ACTOR_MAX_CHARS == 64 and one != two
    assert fit_actor(one) == one and fit_actor("short") == "short"
    assert reconciler_module.actor_name("w" * 80) != reconciler_module.actor_name("w" * 81)
