"""Transient failures in the worker: Redis hiccups in the shared stats, database drops mid-job,
and the connection-level retries of both stores."""

from __future__ import annotations

import logging
import random
import time
import uuid
from dataclasses import dataclass, field

import httpx
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import create_engine, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from modelreasoner import dispatch
from modelreasoner.client import CallInput, CallResult
from modelreasoner.lease import LeaseKeeper
from modelreasoner.resilient_stats import ResilientStatsStore
from modelreasoner.runtime import Runtime
from modelreasoner.worker import execute
from orchestrator import audit, intake
from orchestrator.db import make_engine, make_session_factory, ping
from orchestrator.errors import DatabaseUnavailable, ModelCallError
from orchestrator.models import Audit, Job
from orchestrator.queue_rq import make_redis
from orchestrator.routing import InMemoryStatsStore, RedisStatsStore, Router, Target
from orchestrator.routing.types import Outcome, TargetStats
from orchestrator.schemas import JobCreate
from orchestrator.settings import load_settings
from tests.support.env import free_port

ANSWER = {"risk_level": "low", "flagged_domains": [], "rationale": "ok", "model_version": "t"}
EDGE = Target("edge", "edge", url="http://edge", cost_per_call_usd=0.0002, prior_latency_ms=50)


@dataclass
class CountingClient:
    calls: list[str] = field(default_factory=list)
    fail: set[str] = field(default_factory=set)
    """Targets that answer HTTP 500."""

    def call(self, target: Target, job: CallInput, timeout_s: float) -> CallResult:
        self.calls.append(target.name)
        if target.name in self.fail:
            raise ModelCallError("http_5xx", "HTTP 500")
        return CallResult(result=ANSWER, latency_ms=5.0, cost_usd=0.0)


def dead_redis() -> redis.Redis:
    """Nothing listens on the port; no client-side retries, so each call fails at once."""
    return redis.Redis(port=free_port(), socket_connect_timeout=0.2, socket_timeout=0.2, retry=Retry(NoBackoff(), 0))


def runtime(engine, store, client, targets=(EDGE,), **settings) -> Runtime:
    sessions = make_session_factory(engine)
    return Runtime(
        settings=load_settings().model_copy(update=settings),
        engine=engine,
        sessions=sessions,
        redis=dead_redis(),
        router=Router(store, rng=random.Random(1)),
        client=client,
        http=httpx.Client(),
        leases=LeaseKeeper(sessions, worker_id="w-test", lease_seconds=15),
        worker_id="w-test",
        static_targets=list(targets),
    )


def submit(engine) -> uuid.UUID:
    with Session(engine) as session:
        body = JobCreate(age_months=24, observations="x")
        return intake.submit_screening(session, body, actor="anonymous", default_sla_ms=2000).job.id


def load(engine, job_id) -> tuple[Job, list[str]]:
    with Session(engine) as session:
        job = session.get(Job, job_id)
        events = session.scalars(select(Audit.event).where(Audit.job_id == job_id).order_by(Audit.id)).all()
        return job, list(events)


# --- the resilient stats store --------------------------------------------------------------------


def test_a_dead_redis_gives_priors_and_no_ops_instead_of_errors(caplog):
    store = ResilientStatsStore(RedisStatsStore(dead_redis()))
    with caplog.at_level(logging.WARNING, logger="modelreasoner.resilient_stats"):
        assert store.snapshot(["edge", "gpu"], time.time()) == {"edge": TargetStats(), "gpu": TargetStats()}
        assert store.snapshot(["edge"], time.time()) == {"edge": TargetStats()}
        assert store.update("edge", lambda s: s) == TargetStats()
        store.call_started("edge", "c1", time.time())
        store.call_ended("edge", "c1")
    assert store.failures == 5
    warnings = [r for r in caplog.records if r.name == "modelreasoner.resilient_stats"]
    assert len(warnings) == 4, "one warning per operation, not one per failure"
    assert {r.operation for r in warnings} == {"snapshot", "update", "call_started", "call_ended"}


def test_a_healthy_store_is_passed_through(fake_redis):
    store = ResilientStatsStore(RedisStatsStore(fake_redis))
    router = Router(store)
    router.record(Outcome("edge", True, 42.0, time.time()))
    assert store.snapshot(["edge"], time.time())["edge"] != TargetStats()
    assert store.failures == 0


def test_extra_methods_of_the_wrapped_store_stay_reachable():
    inner = InMemoryStatsStore()
    inner.extra = lambda: "kept"
    assert ResilientStatsStore(inner).extra() == "kept"


def test_a_job_completes_while_redis_is_down(sqlite_engine):
    client = CountingClient()
    job_id = submit(sqlite_engine)
    summary = execute(runtime(sqlite_engine, ResilientStatsStore(RedisStatsStore(dead_redis())), client), job_id)
    job, events = load(sqlite_engine, job_id)
    assert summary["status"] == "completed" and job.status == "completed" and client.calls == ["edge"]
    assert events == ["submitted", "claimed", "routed", "call_started", "attempt", "completed"]


# --- database drops in the worker -------------------------------------------------------------------


def connection_dropped() -> OperationalError:
    return OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))


def flaky_audit(monkeypatch, event: str, failures: int, error=connection_dropped) -> list[int]:
    """The next ``failures`` audit INSERTs of ``event`` rows fail as if Postgres dropped."""
    real_record, tries = audit.record, []

    def record(session, job_id, name, *args, **kwargs):
        if name == event:
            tries.append(1)
            if len(tries) <= failures:
                raise error()
        return real_record(session, job_id, name, *args, **kwargs)

    monkeypatch.setattr(audit, "record", record)
    return tries


def test_a_database_blip_mid_job_retries_the_write_and_never_the_model_call(sqlite_engine, monkeypatch):
    """Issue 11, defect 4: the retry wraps the failed attempt's audit write, not the calls."""
    client = CountingClient(fail={"edge"})
    tries = flaky_audit(monkeypatch, "attempt", failures=2)
    job_id = submit(sqlite_engine)
    gpu = Target("gpu", "gpu", url="http://gpu", cost_per_call_usd=0.004, prior_latency_ms=400)
    execute(runtime(sqlite_engine, InMemoryStatsStore(), client, (EDGE, gpu), db_retry_attempts=3), job_id)
    job, events = load(sqlite_engine, job_id)
    assert client.calls == ["edge", "gpu"], "each target called once: the blip repeated no call"
    assert len(tries) >= 3 and job.status == "completed" and events.count("completed") == 1
    assert events.count("call_started") == 2 and events.count("attempt") == 2


def test_after_the_last_attempt_the_job_fails_with_the_reason(sqlite_engine, monkeypatch):
    client = CountingClient()
    tries = flaky_audit(monkeypatch, "call_started", failures=99, error=DatabaseUnavailable)
    job_id = submit(sqlite_engine)
    execute(runtime(sqlite_engine, InMemoryStatsStore(), client, db_retry_attempts=2), job_id)
    job, events = load(sqlite_engine, job_id)
    assert len(tries) == 2 and client.calls == [], "no call without its call_started row"
    assert job.status == "failed" and job.error_kind == "database_unavailable"
    assert job.error == "the database was unreachable on 2 attempts"
    assert events[-1] == "failed"


def test_a_bug_is_not_retried(sqlite_engine, monkeypatch):
    runs = []

    def bug(rt, job, planned):
        runs.append(1)
        raise KeyError("observations")

    monkeypatch.setattr(dispatch, "execute_plan", bug)
    job_id = submit(sqlite_engine)
    execute(runtime(sqlite_engine, InMemoryStatsStore(), CountingClient(), db_retry_attempts=3), job_id)
    job, _ = load(sqlite_engine, job_id)
    assert len(runs) == 1 and job.error_kind == "internal_error" and "observations" not in job.error


# --- connection-level retries ---------------------------------------------------------------------------


def test_the_connect_hook_tries_the_configured_number_of_times(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"postgresql://postgres@127.0.0.1:{free_port()}/none")
    monkeypatch.setenv("DB_CONNECT_ATTEMPTS", "4")
    engine = make_engine(load_settings())
    dbapi = engine.dialect.loaded_dbapi
    attempts = []
    real_connect = dbapi.connect

    def counting_connect(*args, **kwargs):
        attempts.append(1)
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(dbapi, "connect", counting_connect)
    started = time.monotonic()
    with pytest.raises(OperationalError):
        ping(engine)
    assert len(attempts) == 4
    assert time.monotonic() - started < 2.0, "a refused connection must still fail fast"
    engine.dispose()


def test_database_errors_never_quote_bound_parameters(monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'p.db'}")
    engine = make_engine(load_settings())
    with pytest.raises(Exception) as raised, engine.connect() as connection:
        connection.exec_driver_sql("SELECT * FROM no_such_table WHERE x = ?", ("SECRET-OBSERVATION",))
    assert "SECRET-OBSERVATION" not in str(raised.value)
    engine.dispose()
    plain = create_engine(f"sqlite:///{tmp_path / 'p.db'}")
    with pytest.raises(Exception) as leaked, plain.connect() as connection:
        connection.exec_driver_sql("SELECT * FROM no_such_table WHERE x = ?", ("SECRET-OBSERVATION",))
    assert "SECRET-OBSERVATION" in str(leaked.value), "the control shows the check can fail"
    plain.dispose()


def test_redis_clients_retry_a_dropped_connection_but_fail_fast_when_down(monkeypatch):
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setenv("REDIS_RETRY_ATTEMPTS", "3")
    client = make_redis(load_settings())
    assert client.get_retry().get_retries() == 2
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        client.ping()
    assert time.monotonic() - started < 2.0
