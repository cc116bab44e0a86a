"""A job a worker has taken but not yet claimed: the reconciler trusts it by when it was TAKEN
(its RQ execution's start), not by when it was enqueued, so a job that waited long in a backlog
is not enqueued a second time, while one whose worker hung or died is still requeued."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from rq import SimpleWorker
from rq.executions import Execution

from orchestrator import intake
from orchestrator.db import make_session_factory
from orchestrator.queue_rq import enqueue_job, get_queue
from orchestrator.queue_view import RQView, missing, rq_view
from orchestrator.reconciler import reconcile_once
from orchestrator.schemas import JobCreate
from orchestrator.settings import load_settings

LEASE_S, GRACE_S = 15.0, 5.0
TRUST_S = LEASE_S + GRACE_S


@pytest.fixture
def settings():
    return load_settings().model_copy(update={"job_lease_seconds": LEASE_S, "reconciler_grace_seconds": GRACE_S})


@pytest.fixture
def sessions(sqlite_engine):
    return make_session_factory(sqlite_engine)


@pytest.fixture
def queue(fake_redis):
    return get_queue(fake_redis)


def submit_and_enqueue(sessions, queue) -> uuid.UUID:
    with sessions() as session:
        body = JobCreate(age_months=24, observations="x")
        job_id = intake.submit_screening(session, body, actor="anonymous", default_sla_ms=2000).job.id
    enqueue_job(queue, str(job_id))
    return job_id


def take(queue, at: datetime) -> Execution:
    """What any RQ worker (stock or threaded) does on taking a job: dequeue it and start its
    execution (registered as started), here with the execution's start set to ``at``."""
    worker = SimpleWorker([queue], connection=queue.connection)
    job, _ = worker.dequeue_job_and_maintain_ttl(None)
    execution = worker.prepare_execution(job)
    queue.connection.hset(execution.key, "created_at", at.timestamp())
    return execution


def later(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def run(sessions, queue, settings, now):
    return reconcile_once(sessions, queue, now=now, settings=settings, actor="reconciler:test", confirm_seconds=0)


def waiting(queue) -> list[str]:
    return [i.decode() for i in queue.connection.lrange(queue.key, 0, -1)]


def test_a_job_taken_after_a_long_wait_in_the_queue_is_not_enqueued_again(sessions, queue, settings):
    submit_and_enqueue(sessions, queue)
    now = later(TRUST_S + 10)  # it waited past grace + lease in the backlog...
    take(queue, at=now - timedelta(seconds=1))  # ...and a worker took it a second ago, claim pending
    report = run(sessions, queue, settings, now)
    assert report.total == 0 and waiting(queue) == []


def test_a_job_taken_and_never_claimed_is_requeued_grace_plus_lease_after_the_take(sessions, queue, settings):
    job_id = submit_and_enqueue(sessions, queue)
    taken = later(30)
    take(queue, at=taken)  # the worker then hangs or dies before its claim
    assert run(sessions, queue, settings, taken + timedelta(seconds=GRACE_S + 1)).total == 0
    assert run(sessions, queue, settings, taken + timedelta(seconds=TRUST_S - 1)).total == 0
    report = run(sessions, queue, settings, taken + timedelta(seconds=TRUST_S + 1))
    assert report.requeued == [str(job_id)] and waiting(queue) == [str(job_id)]


def test_a_job_lost_from_every_list_is_still_requeued(sessions, queue, settings):
    job_id = submit_and_enqueue(sessions, queue)
    queue.connection.delete(queue.key)
    assert run(sessions, queue, settings, later(GRACE_S + 1)).requeued == [str(job_id)]


def test_the_view_reads_when_each_started_job_was_taken(queue):
    enqueue_job(queue, "a")
    enqueue_job(queue, "b")
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    take(queue, at=at)
    queue.connection.lmove(queue.key, queue.intermediate_queue_key)  # "b": dequeued, not yet started
    view = rq_view(queue, datetime.now(UTC))
    assert view.waiting == frozenset() and view.taken == {"a": at, "b": None}


def test_a_started_entry_whose_execution_is_gone_has_no_take_time(queue):
    enqueue_job(queue, "a")
    execution = take(queue, at=datetime.now(UTC))
    queue.connection.delete(execution.key)
    assert rq_view(queue, datetime.now(UTC)).taken == {"a": None}


def test_a_take_time_that_is_unknown_falls_back_to_the_enqueue():
    cutoff = datetime(2026, 1, 1, tzinfo=UTC)
    old, new = cutoff - timedelta(seconds=1), cutoff + timedelta(seconds=1)
    a, b, c, d = (uuid.uuid4() for _ in range(4))
    view = RQView(frozenset(), {str(a): None, str(b): None, str(c): new, str(d): old})
    candidates = {a: old, b: new, c: old, d: old}
    assert missing(candidates, view, cutoff, latest_take=new) == [a, d]


def test_a_take_time_from_a_clock_running_ahead_is_ignored():
    cutoff = datetime(2026, 1, 1, tzinfo=UTC)
    job_id = uuid.uuid4()
    ahead = cutoff + timedelta(minutes=10)
    view = RQView(frozenset(), {str(job_id): ahead})
    candidates = {job_id: cutoff - timedelta(seconds=1)}
    assert missing(candidates, view, cutoff, latest_take=ahead) == []
    assert missing(candidates, view, cutoff, latest_take=ahead - timedelta(seconds=1)) == [job_id]


def test_a_worker_ahead_of_the_database_clock_cannot_hide_a_job_it_took(sessions, queue, settings):
    job_id = submit_and_enqueue(sessions, queue)
    now = later(TRUST_S + 10)
    take(queue, at=now + timedelta(minutes=10))  # the worker's clock runs ten minutes ahead
    assert run(sessions, queue, settings, now).requeued == [str(job_id)]
