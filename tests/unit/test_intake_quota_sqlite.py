"""A key's max_in_flight on SQLite (the dev default): racing submits on a file database, through
the engine the app builds (WAL, a busy timeout), stop exactly at the limit; a replay at the limit
returns its job."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from orchestrator import intake
from orchestrator.db import make_engine, make_intake_session_factory
from orchestrator.errors import QuotaExceeded
from orchestrator.models import Job, init_db
from orchestrator.schemas import JobCreate
from orchestrator.settings import load_settings

RACERS, CAP = 12, 3


@pytest.fixture
def sessions(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'dev.db'}")
    engine = make_engine(load_settings())
    init_db(engine)
    yield make_intake_session_factory(engine)
    engine.dispose()


def submit(sessions, i: int, *, key: str | None = None) -> intake.Submitted:
    with sessions() as session:
        one = JobCreate(age_months=9, observations=f"babbles {i}")
        return intake.submit_screening(
            session, one, actor="key-a", default_sla_ms=2000, idempotency_key=key, max_in_flight=CAP
        )


def test_racing_submits_stop_exactly_at_the_limit(sessions):
    barrier = threading.Barrier(RACERS)

    def post(i: int):
        barrier.wait()
        try:
            return submit(sessions, i)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(RACERS) as pool:
        results = list(pool.map(post, range(RACERS)))
    assert sum(isinstance(r, intake.Submitted) for r in results) == CAP, results
    assert sum(isinstance(r, QuotaExceeded) for r in results) == RACERS - CAP, results
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == CAP


def test_a_replay_at_the_limit_returns_its_job(sessions):
    first = submit(sessions, 0, key="k0")
    for i in range(1, CAP):
        submit(sessions, i)
    with pytest.raises(QuotaExceeded, match="max_in_flight"):
        submit(sessions, CAP)
    replay = submit(sessions, 0, key="k0")
    assert (replay.job.id, replay.created) == (first.job.id, False)
