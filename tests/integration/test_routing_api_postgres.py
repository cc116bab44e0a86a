"""The routing endpoints on a real Postgres and Redis: registration reaches a running worker's
catalogue without a restart; SLA events and model metrics come from real rows (in a session
time zone that is not UTC); telemetry is stored, pruned and shifts the shared decision; and the
write paths stay correct under concurrency."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from modelreasoner import runtime
from orchestrator import catalogue, intake, telemetry
from orchestrator.app.main import create_app
from orchestrator.models import Audit, Job, RegisteredTarget, TelemetrySample
from orchestrator.routing import RedisStatsStore
from orchestrator.schemas import TargetRegister, TaskCreate
from orchestrator.settings import load_settings
from orchestrator.url_policy import policy_for

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

EDGE, GPU = "http://127.0.0.1:18001", "http://127.0.0.1:18002"
BASE = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def in_time_zone(url: str, zone: str) -> str:
    """``url`` whose sessions run with TimeZone=zone (bucketing must still be by UTC)."""
    return make_url(url).update_query_dict({"options": f"-c TimeZone={zone}"}).render_as_string(hide_password=False)


@pytest.fixture
def env(pg_url, redis_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", in_time_zone(pg_url, "Asia/Kolkata"))
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("EDGE_MODEL_URL", EDGE)
    monkeypatch.setenv("GPU_MODEL_URL", GPU)


@pytest.fixture
def api(env):
    with TestClient(create_app()) as client:
        yield client


@pytest.fixture
def worker_runtime(env):
    rt = runtime.build_runtime(load_settings(), concurrency=2)
    yield rt
    rt.http.close()
    rt.redis.close()
    rt.engine.dispose()


def count(engine, model, *where) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


# --- registration --------------------------------------------------------------------------------


def test_a_registered_agent_is_persisted_and_a_running_worker_routes_to_it_without_restart(
    api, worker_runtime, pg_engine, monkeypatch
):
    monkeypatch.setattr(runtime, "REGISTERED_TARGETS_TTL_SECONDS", 0.2)
    assert [t.name for t in worker_runtime.targets()] == ["edge", "gpu"]
    body = {"name": "gpu-b", "tier": "gpu", "url": "http://10.1.2.3:8001", "contract": "run", "capacity": 3}
    assert api.post("/register_agent", json=body).status_code == 201
    time.sleep(0.3)
    seen = {t.name: t for t in worker_runtime.targets()}
    assert seen["gpu-b"].url == "http://10.1.2.3:8001" and seen["gpu-b"].contract == "run"
    assert seen["gpu-b"].capacity == 3
    assert api.post("/api/agents", json={**body, "enabled": False}).status_code == 200
    time.sleep(0.3)
    assert {t.name: t for t in worker_runtime.targets()}["gpu-b"].enabled is False
    with TestClient(create_app()) as restarted:
        listed = {t["name"]: t for t in restarted.get("/api/targets").json()["targets"]}
    assert listed["gpu-b"]["source"] == "registered" and listed["gpu-b"]["enabled"] is False
    assert count(pg_engine, RegisteredTarget) == 1
    assert count(pg_engine, Audit, Audit.event == "registered", Audit.job_id.is_(None)) == 2


def test_racing_registrations_of_one_new_name_leave_one_row(pg_engine):
    factory = sessionmaker(pg_engine, expire_on_commit=False)
    barrier = threading.Barrier(4)
    settings = load_settings()
    policy = policy_for(settings)

    def register(index: int) -> bool:
        body = TargetRegister(name="edge-x", tier="edge", url=f"http://10.0.0.{index}:8001")
        barrier.wait()
        with factory() as session:
            return catalogue.register(session, body, settings, policy, actor=f"a{index}", now=datetime.now(UTC)).created

    with ThreadPoolExecutor(4) as pool:
        created = list(pool.map(register, range(4)))
    assert created.count(True) == 1
    assert count(pg_engine, RegisteredTarget) == 1
    with Session(pg_engine) as session:
        outcomes = sorted(session.scalars(select(Audit.outcome)).all())
    assert outcomes == ["created", "updated", "updated", "updated"]


# --- tasks ---------------------------------------------------------------------------------------


def test_racing_task_submissions_with_one_key_make_one_task(pg_engine):
    factory = sessionmaker(pg_engine, expire_on_commit=False)
    barrier = threading.Barrier(6)
    body = TaskCreate(task_type="summarize", payload={"text": "x", "n": [1, 2]}, consent=True)

    def submit(_: int) -> str:
        barrier.wait()
        with factory() as session:
            return str(intake.submit_task(session, body, actor="a", default_sla_ms=2000, idempotency_key="race").job.id)

    with ThreadPoolExecutor(6) as pool:
        ids = set(pool.map(submit, range(6)))
    assert len(ids) == 1
    with Session(pg_engine) as session:
        job = session.scalars(select(Job)).one()
        assert job.kind == "task" and job.payload == {"text": "x", "n": [1, 2]}


# --- insights ------------------------------------------------------------------------------------


def add_job(session, *, target, sla_ms, total_ms, finished_at, chosen=None, **fields) -> str:
    job = Job(
        kind="screening",
        status=fields.pop("status", "completed"),
        sla_ms=sla_ms,
        actor="test",
        preferred_target="auto",
        created_at=finished_at - timedelta(milliseconds=total_ms),
        finished_at=finished_at,
        target=target,
        sla_met=total_ms <= sla_ms,
        decision={"chosen": chosen or target, "candidates": []},
        **fields,
    )
    session.add(job)
    session.flush()
    return str(job.id)


def test_sla_events_are_bucketed_by_utc_hour_even_in_a_non_utc_session(api, pg_engine):
    with Session(pg_engine) as session:
        late = add_job(session, target="gpu", sla_ms=300, total_ms=420, finished_at=BASE + timedelta(minutes=40))
        add_job(session, target="gpu", sla_ms=300, total_ms=800, finished_at=BASE + timedelta(minutes=50))
        add_job(session, target="edge", sla_ms=2000, total_ms=2100, finished_at=BASE + timedelta(minutes=70))
        add_job(session, target="edge", sla_ms=2000, total_ms=1500, finished_at=BASE + timedelta(minutes=75))
        session.commit()
    params = {"since": "2026-03-01T00:00:00Z", "bucket": "hour"}
    body = api.get("/api/sla-events", params=params).json()
    assert [i["margin_ms"] for i in body["items"]] == [100.0, 500.0, 120.0]
    assert body["items"][-1]["job_id"] == late
    assert [(c["target"], datetime.fromisoformat(c["bucket_start"]), c["violations"]) for c in body["counts"]] == [
        ("edge", BASE + timedelta(hours=1), 1),
        ("gpu", BASE, 2),
    ]
    minutes = api.get("/api/sla-events", params={**params, "bucket": "minute"}).json()["counts"]
    assert [datetime.fromisoformat(c["bucket_start"]) for c in minutes] == [
        BASE + timedelta(minutes=m) for m in (70, 50, 40)
    ]


def test_model_metrics_are_computed_by_postgres_from_real_rows(api, pg_engine):
    samples = [(120.0, 200.0, 100.0, 0.001), (80.0, 150.0, 170.0, 0.003), (100.0, 180.0, 90.0, 0.002)]
    with Session(pg_engine) as session:
        for minute, (predicted, p95, actual, cost) in enumerate(samples):
            at = BASE + timedelta(minutes=minute)
            add_job(session, target="cloud", sla_ms=5000, total_ms=actual + 3, finished_at=at,
                    predicted_ms=predicted, predicted_p95_ms=p95, latency_ms=actual, cost_usd=cost)  # fmt: skip
        add_job(session, target="cloud", sla_ms=5000, total_ms=900, finished_at=BASE, chosen="edge",
                predicted_ms=10.0, predicted_p95_ms=20.0, latency_ms=900.0, cost_usd=0.5)  # fmt: skip
        session.commit()
    body = api.get("/api/model-metrics", params={"since": "2026-03-01T00:00:00Z"}).json()
    (cloud,) = body["targets"]
    errors = [p - a for p, _, a, _ in samples]
    assert cloud["jobs"] == 3
    assert cloud["mae_ms"] == pytest.approx(sum(map(abs, errors)) / 3, abs=0.01)
    assert cloud["bias_ms"] == pytest.approx(sum(errors) / 3, abs=0.01)
    assert cloud["p95_calibration"] == pytest.approx(2 / 3, abs=1e-4)
    assert cloud["cost_per_job_usd"] == pytest.approx(0.002)
    assert [p["actual_ms"] for p in cloud["points"]] == [100.0, 170.0, 90.0]


# --- telemetry -----------------------------------------------------------------------------------


def test_telemetry_is_stored_pruned_and_shifts_the_shared_decision(api, pg_engine, redis_url):
    assert api.post("/api/route", json={"sla_ms": 2000}).json()["decision"]["chosen"] == "edge"
    expired = datetime.now(UTC) - timedelta(hours=25)
    with Session(pg_engine) as session:
        session.add_all(
            TelemetrySample(target=t, at=expired, received_at=expired, up=True, source="old") for t in ("edge", "gpu")
        )
        session.commit()
    overloaded = {"target": "edge", "latency": "5s", "utilization": "100%", "queue_depth": 10, "cost_usd": 0.0002}
    response = api.post("/api/telemetry", json={"samples": [overloaded]})
    assert response.status_code == 202 and response.json() == {"accepted": 1, "dropped": 0}
    with Session(pg_engine) as session:
        stored = session.scalars(select(TelemetrySample).order_by(TelemetrySample.id)).all()
    assert [(s.target, s.source) for s in stored] == [("gpu", "old"), ("edge", "anonymous")]
    assert (stored[1].latency_ms, stored[1].utilization, stored[1].queue_depth) == (5000.0, 1.0, 10)
    shared = RedisStatsStore(redis.Redis.from_url(redis_url)).snapshot(["edge"], time.time())["edge"]
    assert shared.telemetry_latency_ms == 5000.0 and shared.telemetry_queue_depth == 10
    decision = api.post("/api/route", json={"sla_ms": 2000}).json()["decision"]
    edge = next(c for c in decision["candidates"] if c["target"] == "edge")
    assert decision["chosen"] == "gpu" and edge["meets_sla"] is False
    assert api.get("/api/targets").json()["targets"][0]["telemetry"]["queue_depth"] == 10


def test_concurrent_batches_prune_old_rows_without_deadlock(pg_engine):
    expired = datetime.now(UTC) - timedelta(hours=30)
    with Session(pg_engine) as session:
        session.add_all(
            TelemetrySample(target="gpu", at=expired, received_at=expired, up=True, source="old") for _ in range(2500)
        )
        session.commit()
    factory = sessionmaker(pg_engine, expire_on_commit=False)
    barrier = threading.Barrier(6)

    def ingest(index: int) -> int:
        now = datetime.now(UTC)
        batch = [telemetry.Sample(target="gpu", at=now, source=f"t{index}", latency_ms=float(n)) for n in range(50)]
        barrier.wait()
        with factory() as session:
            return telemetry.store(session, batch, now=now, retention=timedelta(hours=24))

    with ThreadPoolExecutor(6) as pool:
        pruned = list(pool.map(ingest, range(6)))
    assert sum(pruned) == 2500 and max(pruned) <= telemetry.PRUNE_BATCH_ROWS
    assert count(pg_engine, TelemetrySample, TelemetrySample.source == "old") == 0
    assert count(pg_engine, TelemetrySample) == 300
