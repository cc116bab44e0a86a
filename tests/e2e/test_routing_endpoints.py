"""The routing endpoints end to end with real processes: uvicorn, the threaded worker, model
servers, Postgres and Redis. Registration, generic tasks, the dry run reacting to telemetry, a
circuit opening and closing, and the telemetry simulator against the live API."""

from __future__ import annotations

import subprocess
import time

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from modelreasoner.runtime import REGISTERED_TARGETS_TTL_SECONDS
from orchestrator.models import TelemetrySample
from tests.support.procs import python

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

KEY = "e2e-routing-key-1"
MARKER = "PHI-MARKER-e2e-41b7"
OBSERVATIONS = "At 24 months she does not point to show things and says no words."


def targets(api) -> dict[str, dict]:
    response = api.http.get("/api/targets")
    assert response.status_code == 200, response.text
    return {t["name"]: t for t in response.json()["targets"]}


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def test_a_job_submitted_after_registering_an_agent_is_routed_to_it(stack):
    stack.model_server("edge", tier="edge", latency_ms=5, jitter=0)
    extra = stack.model_server("extra", tier="gpu", latency_ms=5, jitter=0)
    api = stack.api()
    stack.worker(concurrency=2)
    registered = api.http.post("/register_agent", json={"name": "gpu-reg", "tier": "gpu", "url": extra.url})
    assert registered.status_code == 201, registered.text
    assert targets(api)["gpu-reg"]["source"] == "registered"
    time.sleep(REGISTERED_TARGETS_TTL_SECONDS + 0.5)  # the running worker's catalogue refresh
    job = api.submit(observations=OBSERVATIONS, preferred_target="gpu", sla_ms=5000)
    done = api.wait(job["job_id"])
    assert done["status"] == "completed" and done["target"] == "gpu-reg", done
    assert done["routing"]["chosen"] == "gpu-reg" and done["result"]["risk_level"] in {"moderate", "high"}
    assert extra.process.alive


def test_a_task_needs_consent_runs_on_a_runner_and_honours_its_idempotency_key(stack):
    stack.model_server("edge", tier="edge", latency_ms=5, jitter=0)
    runner = stack.model_server("runner", tier="cloud", latency_ms=5, jitter=0)
    api = stack.api(api_key=KEY)
    agent = {"name": "cloud-run", "tier": "cloud", "url": runner.url, "contract": "run"}
    assert api.http.post("/register_agent", json=agent).status_code == 201
    stack.worker(concurrency=2)  # started after: the refresh of a running one is tested above
    task = {"task_type": "summarize", "payload": {"note": MARKER, "items": [1, 2, 3]}, "sla_ms": 5000}
    assert api.http.post("/route_task", json=task, headers={"x-api-key": "wrong-key-999"}).status_code == 401
    refused = api.http.post("/route_task", json=task)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    headers = {"Idempotency-Key": "e2e-task-1"}
    accepted = api.http.post("/route_task", json={**task, "consent": True}, headers=headers)
    assert accepted.status_code == 202, accepted.text
    task_id = accepted.json()["task_id"]
    replay = api.http.post("/route_task", json={**task, "consent": True}, headers=headers)
    assert replay.status_code == 202 and replay.json()["task_id"] == task_id
    changed = api.http.post("/route_task", json={**task, "sla_ms": 6000, "consent": True}, headers=headers)
    assert changed.status_code == 409
    done = wait_for(
        lambda: (v := api.http.get(accepted.json()["status_url"]).json())["status"] in ("completed", "failed") and v,
        30,
        "the task finishing",
    )
    assert done["status"] == "completed" and done["target"] == "cloud-run", done
    assert done["task_type"] == "summarize" and done["result"]["output"]["task_type"] == "summarize"
    assert [(a["target"], a["outcome"]) for a in done["attempts"]] == [("cloud-run", "ok")]
    assert MARKER not in stack.logs(), "a task payload reached a log"


def test_the_dry_run_moves_away_from_a_target_that_reports_itself_down(stack):
    stack.model_server("edge", tier="edge", latency_ms=5, jitter=0)
    stack.model_server("gpu", tier="gpu", latency_ms=5, jitter=0)
    api = stack.api()
    route = lambda: api.http.post("/api/route", json={"sla_ms": 2000}).json()["decision"]  # noqa: E731
    assert route()["chosen"] == "edge"
    assert api.http.post("/api/telemetry", json={"target": "edge", "up": False}).status_code == 202
    decision = route()
    assert decision["chosen"] == "gpu"
    assert "telemetry" in next(c for c in decision["candidates"] if c["target"] == "edge")["reason"]
    assert api.http.post("/api/telemetry", json={"target": "edge", "up": "true"}).status_code == 422
    assert api.http.post("/api/telemetry", json={"target": "edge", "up": True}).status_code == 202
    assert route()["chosen"] == "edge"


def test_a_failing_server_opens_its_circuit_and_a_recovered_one_closes_it(stack):
    edge = stack.model_server("edge", tier="edge", latency_ms=5, jitter=0, admin=True)
    stack.model_server("gpu", tier="gpu", latency_ms=5, jitter=0)
    api = stack.api()
    stack.worker(concurrency=2)
    edge.set_profile(fault="http_500")
    for _ in range(5):  # one at a time: five consecutive failures open the circuit
        done = api.wait(api.submit(observations=OBSERVATIONS, preferred_target="edge", sla_ms=5000)["job_id"])
        assert done["status"] == "completed" and done["target"] == "gpu"
    circuit = targets(api)["edge"]["circuit"]
    assert circuit["state"] == "open" and circuit["open_count"] == 1 and circuit["until"]
    skipped = api.wait(api.submit(observations=OBSERVATIONS, preferred_target="edge", sla_ms=5000)["job_id"])
    assert [a["target"] for a in skipped["attempts"]] == ["gpu"], "an open circuit is not called"
    edge.set_profile(fault="none")
    wait_for(lambda: targets(api)["edge"]["circuit"]["state"] == "half_open", 20, "the circuit turning half-open")
    probe = api.wait(api.submit(observations=OBSERVATIONS, preferred_target="edge", sla_ms=5000)["job_id"])
    assert probe["status"] == "completed" and probe["target"] == "edge"
    assert targets(api)["edge"]["circuit"]["state"] == "closed"


def test_the_simulator_feeds_the_live_api_and_fails_clearly(stack, pg_url):
    stack.model_server("edge", tier="edge", latency_ms=5, jitter=0)
    stack.model_server("gpu", tier="gpu", latency_ms=5, jitter=0)
    api = stack.api(api_key=KEY)
    script = ["scripts/simulate_telemetry.py", "--url", api.url, "--interval", "0.5", "--seed", "3"]
    env = stack.base_env()
    run = subprocess.run(
        python(*script, "--seconds", "3", "--api-key", KEY), capture_output=True, text=True, timeout=60, env=env
    )
    assert run.returncode == 0, run.stderr
    progress = [line for line in run.stdout.splitlines() if line.startswith("[")]
    assert len(progress) == 6 and all("accepted" in line for line in progress), run.stdout
    engine = create_engine(pg_url)
    with Session(engine) as session:
        per_target = dict(
            session.execute(select(TelemetrySample.target, func.count()).group_by(TelemetrySample.target)).all()
        )
    engine.dispose()
    assert per_target == {"edge": 6, "gpu": 6}
    assert all(t["telemetry"] is not None for t in targets(api).values())
    for argv, message in [
        (["--seconds", "1", "--api-key", "wrong-key-999"], "refused the key"),
        (["--seconds", "1", "--url", "http://127.0.0.1:9"], "cannot reach the API"),
    ]:
        failed = subprocess.run(python(*script, *argv), capture_output=True, text=True, timeout=60, env=env)
        assert failed.returncode != 0 and message in failed.stderr, failed.stderr
        assert "Traceback" not in failed.stderr + failed.stdout
