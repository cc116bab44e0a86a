"""Intake's one statement on a real Postgres, attacked: racing replays of one Idempotency-Key,
a body that differs under the same key, another tenant's case and another tenant's key.

The sessions are the API's: autocommit connections (make_engine(..., autocommit=True)), where
the CTE is its own transaction.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from orchestrator import intake
from orchestrator.db import AUTOCOMMIT_ENGINE, make_intake_session_factory
from orchestrator.errors import BadRequest, IdempotencyConflict
from orchestrator.models import Audit, Case, Job
from orchestrator.schemas import JobCreate

pytestmark = pytest.mark.postgres

RACERS = 12


@pytest.fixture
def sessions(pg_url):
    engine = create_engine(pg_url, pool_size=RACERS, **AUTOCOMMIT_ENGINE)
    yield make_intake_session_factory(engine)
    engine.dispose()


def body(**fields) -> JobCreate:
    return JobCreate(**{"age_months": 9, "observations": "babbles", **fields})


def counts(session: Session) -> tuple[int, int, int]:
    """(jobs, cases, submitted audit rows)."""
    return (
        session.scalar(select(func.count()).select_from(Job)),
        session.scalar(select(func.count()).select_from(Case)),
        session.scalar(select(func.count()).select_from(Audit).where(Audit.event == intake.SUBMITTED)),
    )


def race(sessions, bodies, *, key: str, tenant: str = "clinic-a") -> list:
    """Submit every body at once under ``key``; each result is a Submitted or the exception."""
    barrier = threading.Barrier(len(bodies))

    def post(one):
        barrier.wait()
        with sessions() as session:
            try:
                return intake.submit_screening(
                    session, one, actor="key-a", default_sla_ms=2000, idempotency_key=key, tenant=tenant
                )
            except Exception as exc:
                return exc

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(post, bodies))


def test_racing_replays_of_one_key_make_one_job_one_case_one_audit_row(sessions):
    results = race(sessions, [body()] * RACERS, key="race")
    assert all(isinstance(r, intake.Submitted) for r in results), results
    assert len({r.job.id for r in results}) == 1, "the replays did not all get the one job's id"
    assert sum(r.created for r in results) == 1
    with sessions() as session:
        assert counts(session) == (1, 1, 1), "a losing replay left a case, a job or an audit row behind"


def test_racing_bodies_under_one_key_conflict_and_write_nothing_more(sessions):
    first, second = body(), body(observations="walks")
    results = race(sessions, [first, second] * (RACERS // 2), key="race")
    winners = {r.job.id for r in results if isinstance(r, intake.Submitted)}
    assert len(winners) == 1
    with sessions() as session:
        winner = session.get(Job, winners.pop())
        assert counts(session) == (1, 1, 1)
    won_with = first if winner.observations == first.observations else second
    for sent, result in zip([first, second] * (RACERS // 2), results, strict=True):
        if sent is won_with:
            assert isinstance(result, intake.Submitted) and result.job.id == winner.id
        else:
            assert isinstance(result, IdempotencyConflict), result


def test_another_tenants_case_is_refused_and_nothing_is_written(sessions):
    with sessions() as session:
        theirs = intake.submit_screening(session, body(), actor="key-a", default_sla_ms=2000, tenant="clinic-a")
        case_id = session.get(Job, theirs.job.id).case_id
        before = counts(session)
        for key in (None, "fresh-key"):
            with pytest.raises(BadRequest, match="case_id"):
                intake.submit_screening(
                    session, body(case_id=case_id), actor="key-b", default_sla_ms=2000, idempotency_key=key, tenant="b"
                )
        with pytest.raises(BadRequest, match="case_id"):
            intake.submit_screening(session, body(case_id=uuid.uuid4()), actor="key-a", default_sla_ms=2000)
        assert counts(session) == before


def test_a_key_is_the_tenants_own_and_a_replay_naming_a_case_writes_nothing(sessions):
    with sessions() as session:
        first = intake.submit_screening(
            session, body(), actor="key-a", default_sla_ms=2000, idempotency_key="k", tenant="clinic-a"
        )
        case_id = session.get(Job, first.job.id).case_id
        again = body(case_id=case_id)
        attached = intake.submit_screening(
            session, again, actor="key-a", default_sla_ms=2000, idempotency_key="k2", tenant="clinic-a"
        )
        assert attached.created and session.get(Job, attached.job.id).case_id == case_id
        before = counts(session)
        replay = intake.submit_screening(
            session, again, actor="key-a", default_sla_ms=2000, idempotency_key="k2", tenant="clinic-a"
        )
        assert (replay.job.id, replay.created) == (attached.job.id, False)
        assert counts(session) == before, "a replay wrote a row"
        other = intake.submit_screening(
            session, body(), actor="key-b", default_sla_ms=2000, idempotency_key="k", tenant="clinic-b"
        )
        assert other.created and other.job.id != first.job.id


def test_the_job_is_committed_when_intake_returns(sessions, pg_url):
    """The API enqueues right after intake returns: by then another connection must see the
    job as queued, with its audit row (else a fast worker would find no job to claim)."""
    observer = create_engine(pg_url)
    try:
        with sessions() as session:
            submitted = intake.submit_screening(session, body(), actor="key-a", default_sla_ms=2000)
            with Session(observer) as other:
                assert other.get(Job, submitted.job.id).status == "queued"
                trail = other.scalars(select(Audit.event).where(Audit.job_id == submitted.job.id)).all()
                assert trail == [intake.SUBMITTED]
    finally:
        observer.dispose()
