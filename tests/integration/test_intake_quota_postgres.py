"""A key's max_in_flight, enforced by intake on a real Postgres, attacked: racing submits of one
capped key (on the API's autocommit connections and on ordinary sessions), replays at the limit,
a failing INSERT inside the locked transaction, and the round trips of capped and uncapped keys."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from psycopg2.extensions import TRANSACTION_STATUS_IDLE
from sqlalchemy import create_engine, event, func, select, text, update
from sqlalchemy.orm import Session

from orchestrator import intake, quotas
from orchestrator.db import AUTOCOMMIT_ENGINE, make_intake_session_factory, make_session_factory
from orchestrator.errors import BadRequest, IdempotencyConflict, QuotaExceeded
from orchestrator.models import Audit, Case, Job
from orchestrator.schemas import JobCreate, TaskCreate

pytestmark = pytest.mark.postgres

RACERS, CAP = 16, 4


@pytest.fixture(params=["autocommit", "ordinary"])
def engine(request, pg_url):
    extra = AUTOCOMMIT_ENGINE if request.param == "autocommit" else {}
    engine = create_engine(pg_url, pool_size=RACERS, **extra)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine):
    return make_intake_session_factory(engine)


def body(i: int = 0, **fields) -> JobCreate:
    return JobCreate(**{"age_months": 9, "observations": f"babbles {i}", **fields})


def counts(session: Session, actor: str) -> tuple[int, int, int]:
    """(jobs, cases, submitted audit rows) of ``actor``."""
    return (
        session.scalar(select(func.count()).select_from(Job).where(Job.actor == actor)),
        session.scalar(select(func.count()).select_from(Case).where(Case.created_by == actor)),
        session.scalar(select(func.count()).select_from(Audit).where(Audit.event == "submitted", Audit.actor == actor)),
    )


def submit(sessions, one: JobCreate, *, actor: str = "key-a", cap: int | None = CAP, key: str | None = None):
    with sessions() as session:
        return intake.submit_screening(
            session, one, actor=actor, default_sla_ms=2000, idempotency_key=key, max_in_flight=cap
        )


def test_racing_submits_of_a_capped_key_stop_exactly_at_its_limit(sessions):
    barrier = threading.Barrier(RACERS)

    def post(i: int):
        barrier.wait()
        try:
            return submit(sessions, body(i))
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(RACERS) as pool:
        results = list(pool.map(post, range(RACERS)))
    created = [r for r in results if isinstance(r, intake.Submitted)]
    refused = [r for r in results if isinstance(r, QuotaExceeded)]
    assert (len(created), len(refused)) == (CAP, RACERS - CAP), results
    assert all(r.created for r in created)
    assert {(r.limit, r.retry_after_s) for r in refused} == {("max_in_flight", 2)}
    with sessions() as session:
        assert counts(session, "key-a") == (CAP, CAP, CAP), "a refused submit left a case, job or audit row"
    assert submit(sessions, body(), actor="key-b").created, "another key was limited by key-a's jobs"


def test_a_replay_at_the_limit_returns_its_job_and_a_finished_job_frees_a_place(sessions):
    first = submit(sessions, body(0), key="k0")
    for i in range(1, CAP):
        submit(sessions, body(i))
    with pytest.raises(QuotaExceeded):
        submit(sessions, body(CAP))
    replay = submit(sessions, body(0), key="k0")
    assert (replay.job.id, replay.created) == (first.job.id, False)
    with pytest.raises(IdempotencyConflict):
        submit(sessions, body(99), key="k0")
    with sessions() as session:
        case_id = session.get(Job, first.job.id).case_id
        session.execute(update(Job).where(Job.id == first.job.id).values(status="completed"))
        session.commit()
    attached = submit(sessions, body(CAP, case_id=case_id))
    assert attached.created
    with pytest.raises(QuotaExceeded):
        submit(sessions, body(CAP + 1))
    # Another tenant's case: 400 as ever, even at the limit.
    with pytest.raises(BadRequest, match="case_id"), sessions() as session:
        intake.submit_screening(
            session, body(7, case_id=case_id), actor="key-a", default_sla_ms=2000, tenant="b", max_in_flight=CAP
        )


def test_a_capped_task_is_limited_like_a_screening_job(sessions):
    task = TaskCreate(task_type="t", payload={"n": 1}, consent=True)
    with sessions() as session:
        assert intake.submit_task(session, task, actor="key-t", default_sla_ms=2000, max_in_flight=1).created
        with pytest.raises(QuotaExceeded):
            intake.submit_task(session, task, actor="key-t", default_sla_ms=2000, max_in_flight=1)
        assert counts(session, "key-t") == (1, 0, 1)


def test_round_trips_uncapped_one_capped_three_and_no_transaction_left_open(pg_url):
    engine = create_engine(pg_url, pool_size=1, max_overflow=0, **AUTOCOMMIT_ENGINE)
    sent: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda _c, _cur, statement, *_: sent.append(statement))
    sessions = make_intake_session_factory(engine)
    try:
        submit(sessions, body(1), cap=None)
        assert len(sent) == 1 and sent[0].startswith("WITH"), sent
        sent.clear()
        submit(sessions, body(2))
        assert [s.split()[0] for s in sent] == ["BEGIN", "WITH", "COMMIT"], sent
        with engine.connect() as connection:  # the one pooled connection, back from the submit
            assert connection.connection.dbapi_connection.info.transaction_status == TRANSACTION_STATUS_IDLE
    finally:
        engine.dispose()


def test_a_failing_insert_rolls_back_and_releases_the_key(pg_url, monkeypatch):
    engine = create_engine(pg_url, pool_size=1, max_overflow=0, **AUTOCOMMIT_ENGINE)
    sessions = make_intake_session_factory(engine)
    monkeypatch.setitem(intake.CAPPED_STATEMENT, intake.NEW_CASE, text("SELECT 1 / 0"))
    try:
        with pytest.raises(Exception, match="division by zero"):
            submit(sessions, body())
        with engine.connect() as connection:
            assert connection.connection.dbapi_connection.info.transaction_status == TRANSACTION_STATUS_IDLE
        other = create_engine(pg_url)
        try:
            with other.connect() as connection:
                lock = quotas.in_flight_lock_id("key-a")
                assert connection.scalar(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": lock}) is True
        finally:
            other.dispose()
        with make_session_factory(engine)() as session:
            assert counts(session, "key-a") == (0, 0, 0)
    finally:
        engine.dispose()
