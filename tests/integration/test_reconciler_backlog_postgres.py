"""A deep backlog on real Postgres and Redis, on real clocks: jobs that waited on the queue longer
than grace + lease, then were taken by a worker (RQ's own dequeue and execution start) and not
yet claimed, are not enqueued a second time; a job lost from every list still is, and a taken job
whose worker never claims it is requeued once grace + lease have passed since the take."""

from __future__ import annotations

import time
import uuid

import pytest
from rq import SimpleWorker
from sqlalchemy import func, select

from orchestrator import intake
from orchestrator.models import Audit, Job
from orchestrator.queue_rq import enqueue_job
from orchestrator.reconciler import reconcile_once
from orchestrator.schemas import JobCreate
from orchestrator.settings import load_settings

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

LEASE_S, GRACE_S = 1.0, 1.5
TRUST_S = LEASE_S + GRACE_S
BACKLOG = 100


@pytest.fixture
def settings():
    return load_settings().model_copy(update={"job_lease_seconds": LEASE_S, "reconciler_grace_seconds": GRACE_S})


def submit_and_enqueue(sessions, queue, count: int) -> list[uuid.UUID]:
    with sessions() as session:
        body = JobCreate(age_months=24, observations="x")
        ids = [intake.submit_screening(session, body, actor="t", default_sla_ms=2000).job.id for _ in range(count)]
    for job_id in ids:
        enqueue_job(queue, str(job_id))
    return ids


def take_all(queue) -> list[str]:
    """Take every waiting job as a worker does (dequeue, start the execution), claiming none."""
    worker = SimpleWorker([queue], connection=queue.connection)
    taken = []
    while (result := worker.dequeue_job_and_maintain_ttl(None)) is not None:
        taken.append(worker.prepare_execution(result[0]).job_id)
    return taken


def requeued(sessions) -> dict[uuid.UUID, int]:
    with sessions() as session:
        rows = session.execute(
            select(Audit.job_id, func.count()).where(Audit.event == "requeued").group_by(Audit.job_id)
        ).all()
    return dict(rows)


def test_a_backlog_taken_late_is_not_enqueued_twice_and_a_lost_job_still_is(sessions, queue, settings):
    ids = submit_and_enqueue(sessions, queue, BACKLOG)
    (lost,) = submit_and_enqueue(sessions, queue, 1)
    queue.connection.lrem(queue.key, 1, str(lost))  # Redis lost this one: on no list, in no registry
    time.sleep(TRUST_S + 0.5)  # the backlog waited longer than grace + lease
    assert sorted(take_all(queue)) == sorted(str(j) for j in ids)  # then workers took it all
    report = reconcile_once(sessions, queue, settings=settings, confirm_seconds=1.0)  # database clock
    assert report.requeued == [str(lost)] and report.total == 1
    assert [i.decode() for i in queue.connection.lrange(queue.key, 0, -1)] == [str(lost)]
    assert requeued(sessions) == {lost: 1}
    with sessions() as session:
        assert set(session.scalars(select(Job.status).where(Job.id.in_(ids)))) == {"queued"}


def test_a_taken_job_never_claimed_is_requeued_grace_plus_lease_after_the_take(sessions, queue, settings):
    (job_id,) = submit_and_enqueue(sessions, queue, 1)
    time.sleep(TRUST_S + 0.5)
    take_all(queue)  # the taker then hangs (its registry entry stays live) and never claims
    assert reconcile_once(sessions, queue, settings=settings, confirm_seconds=0).total == 0
    time.sleep(TRUST_S + 0.5)
    report = reconcile_once(sessions, queue, settings=settings, confirm_seconds=0)
    assert report.requeued == [str(job_id)]
    assert requeued(sessions) == {job_id: 1}
