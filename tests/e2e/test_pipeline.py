"""The product, end to end, with real processes: uvicorn, RQ workers, model servers, Postgres, Redis."""

from __future__ import annotations

import subprocess
import uuid
from datetime import datetime

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from orchestrator.models import Audit
from tests.support.procs import python

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

OBSERVATIONS = "At 24 months she does not point to show things and says no words. Walks well."


def trail(pg_url: str, job_id: str) -> list[Audit]:
    engine = create_engine(pg_url)
    with Session(engine) as session:
        rows = session.scalars(select(Audit).where(Audit.job_id == uuid.UUID(job_id)).order_by(Audit.id)).all()
    engine.dispose()
    return list(rows)


def test_a_submitted_case_is_screened_and_audited(stack, pg_url):
    stack.model_server("edge", tier="edge", latency_ms=5, jitter=0)
    stack.model_server("gpu", tier="gpu", latency_ms=5, jitter=0)
    api = stack.api()
    stack.worker()
    accepted = api.submit(age_months=24, observations=OBSERVATIONS, sla_ms=5000)
    assert accepted["status"] == "queued"
    done = api.wait(accepted["job_id"])
    assert done["status"] == "completed", done
    assert done["result"]["risk_level"] in {"moderate", "high"}
    assert "communication" in done["result"]["flagged_domains"]
    assert done["target"] in {"edge", "gpu"} and done["latency_ms"] > 0 and done["sla_met"] is True
    routing = done["routing"]
    assert routing["chosen"] == done["target"] and len(routing["candidates"]) == 2
    assert all(c["reason"].startswith(c["target"] + ":") for c in routing["candidates"])
    events = trail(pg_url, accepted["job_id"])
    assert [e.event for e in events] == ["submitted", "claimed", "routed", "call_started", "attempt", "completed"]
    assert events[0].actor == "anonymous" and events[-1].target == done["target"]
    timeline = [e["event"] for e in api.http.get(f"/api/jobs/{accepted['job_id']}/events").json()]
    assert timeline == ["submitted", "claimed", "routed", "call_started", "attempt", "completed"]
    assert [datetime.fromisoformat(done[k]) for k in ("created_at", "started_at", "finished_at")] == sorted(
        datetime.fromisoformat(done[k]) for k in ("created_at", "started_at", "finished_at")
    )


def test_a_dead_model_server_is_failed_over(stack, pg_url):
    edge = stack.model_server("edge", tier="edge", latency_ms=5, jitter=0)
    stack.model_server("cloud", tier="cloud", latency_ms=5, jitter=0)
    api = stack.api()
    stack.worker()
    edge.process.kill()
    job = api.submit(observations=OBSERVATIONS, preferred_target="edge", sla_ms=5000)
    done = api.wait(job["job_id"])
    assert done["status"] == "completed" and done["target"] == "cloud"
    assert [(a["target"], a["outcome"]) for a in done["attempts"]] == [("edge", "connect_error"), ("cloud", "ok")]
    assert [e.event for e in trail(pg_url, job["job_id"])].count("attempt") == 2


def test_when_every_target_fails_the_job_fails_with_every_reason(stack):
    stack.model_server("edge", tier="edge", fault="http_500")
    stack.model_server("gpu", tier="gpu", fault="invalid_json")
    api = stack.api()
    stack.worker()
    job = api.submit(observations=OBSERVATIONS, sla_ms=5000)
    done = api.wait(job["job_id"])
    assert done["status"] == "failed" and done["error_kind"] == "all_targets_failed"
    assert "edge: http_5xx" in done["error"] and "gpu: invalid_response" in done["error"]
    assert {a["outcome"] for a in done["attempts"]} == {"http_5xx", "invalid_response"}


def test_a_hung_server_times_out_within_the_sla_and_the_job_moves_on(stack):
    stack.model_server("edge", tier="edge", fault="hang_after_headers")
    stack.model_server("gpu", tier="gpu", latency_ms=5, jitter=0)
    api = stack.api()
    stack.worker(ROUTING_TIMEOUT_SECONDS="1")
    job = api.submit(observations=OBSERVATIONS, preferred_target="edge", sla_ms=8000)
    done = api.wait(job["job_id"])
    assert done["status"] == "completed" and done["target"] == "gpu"
    timed_out = done["attempts"][0]
    assert timed_out["outcome"] == "timeout" and 900 <= timed_out["latency_ms"] < 3000


def test_the_stock_forking_rq_worker_processes_jobs(stack):
    stack.model_server("gpu", tier="gpu", latency_ms=5, jitter=0)
    api = stack.api()
    stack.worker(kind="rq")
    jobs = [api.submit(observations=OBSERVATIONS) for _ in range(3)]
    assert all(api.wait(j["job_id"])["status"] == "completed" for j in jobs)


def test_the_threaded_worker_keeps_several_jobs_in_flight(stack, pg_url):
    stack.model_server("gpu", tier="gpu", latency_ms=400, jitter=0, capacity=64)
    api = stack.api()
    stack.worker(concurrency=8)
    jobs = [api.submit(observations=OBSERVATIONS, sla_ms=30000) for _ in range(8)]
    finished = [api.wait(j["job_id"]) for j in jobs]
    assert all(j["status"] == "completed" for j in finished)
    # Concurrency shown by overlap, not by timing thresholds: most jobs started before any finished.
    first_finish = min(datetime.fromisoformat(j["finished_at"]) for j in finished)
    started_before = sum(datetime.fromisoformat(j["started_at"]) < first_finish for j in finished)
    assert started_before >= 4


def test_the_worker_refuses_to_start_without_a_target(stack):
    result = subprocess.run(
        python("-m", "modelreasoner.worker", "--burst"),
        env=stack.base_env(),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=stack.artifacts,
    )
    assert result.returncode == 2
    assert "No model server is configured" in result.stderr and "--simulate" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_worker_names_a_bad_variable_and_exits(stack):
    env = stack.base_env(GPU_MODEL_URL="http://127.0.0.1:1", ROUTING_TIMEOUT_SECONDS="fast")
    result = subprocess.run(python("-m", "modelreasoner.worker"), env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "ROUTING_TIMEOUT_SECONDS" in result.stderr and "Traceback" not in result.stderr


def test_the_api_requires_a_key_when_one_is_configured(stack):
    stack.model_server("gpu", tier="gpu", latency_ms=5)
    api = stack.api(api_key="first-key-0001,second-key-0002")
    stack.worker()
    job = api.submit(observations=OBSERVATIONS)
    assert api.wait(job["job_id"])["status"] == "completed"
    anonymous = api.http.post("/api/submit", json={"age_months": 1, "observations": "x"}, headers={"x-api-key": ""})
    assert anonymous.status_code == 401


def test_readiness_follows_redis(stack, redis_server):
    api = stack.api()
    assert api.http.get("/readyz").status_code == 200
    redis_server.stop()
    try:
        down = api.http.get("/readyz")
        assert down.status_code == 503 and down.json()["checks"]["redis"].startswith("unavailable")
        assert api.http.get("/healthz").status_code == 200
    finally:
        redis_server.start()


def test_the_api_refuses_to_start_with_a_broken_targets_file(stack, tmp_path):
    broken = tmp_path / "targets.yaml"
    broken.write_text("targets:\n  - name: gpu-eu\n    colour: blue\n")
    argv = python("-m", "uvicorn", "orchestrator.app.main:create_app", "--factory", "--port", "1")
    result = subprocess.run(
        argv, env=stack.base_env(TARGETS_FILE=str(broken)), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert f"TARGETS_FILE {broken}" in result.stderr and "colour" in result.stderr
    assert "Traceback" not in result.stderr
