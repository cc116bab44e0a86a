"""The fast in-process suite of the design documents: ``pytest tests/test_orchestrator_rq.py -v``.

A case is submitted through the real API (the app factory, in process). The RQ queue is
synchronous (``is_async=False`` on fakeredis), so enqueueing runs ``process_job`` at once, in the
request. The model servers are mocked at the HTTP boundary (``httpx.MockTransport`` under the
worker's real model client), so the contract checks, failover and routing are the real code.
Then the status, the result, the routing explanation and the audit rows are checked through the
API. No Redis, Postgres or model-server process is needed (SQLite in memory); it runs in seconds.
The same paths against real processes: tests/e2e and tests/integration.
"""

from __future__ import annotations

import json
import os
import random
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime

import fakeredis
import httpx
import pytest
from fastapi.testclient import TestClient
from rq import Queue
from sqlalchemy import create_engine
from sqlalchemy.pool import StaticPool

from modelreasoner import bootstrap
from modelreasoner.client import ModelClient
from modelreasoner.lease import LeaseKeeper
from modelreasoner.runtime import Runtime
from orchestrator.app.deps import Services
from orchestrator.app.main import create_app
from orchestrator.constants import QUEUE_NAME
from orchestrator.db import make_session_factory
from orchestrator.models import init_db
from orchestrator.routing import InMemoryStatsStore, Router
from orchestrator.settings import load_settings
from orchestrator.targets import configured_targets

SERVERS = {"edge": "http://edge.model.test", "cloud": "http://cloud.model.test"}
OBSERVATIONS = "Does not point to show things and says no words yet."


@dataclass
class MockModelServers:
    """Every model server behind one ``httpx.MockTransport``: each host answers POST /infer with
    ``answers[host]`` (a dict is a 200 JSON body, an int a bare status code), and every request
    is recorded."""

    answers: dict[str, dict | int] = field(default_factory=dict)
    requests: list[tuple[str, dict]] = field(default_factory=list)

    def handler(self, request: httpx.Request) -> httpx.Response:
        tier = request.url.host.split(".")[0]
        self.requests.append((tier, json.loads(request.content)))
        assert request.method == "POST" and request.url.path == "/infer", request.url
        answer = self.answers.get(tier, 503)
        if isinstance(answer, int):
            return httpx.Response(answer)
        return httpx.Response(200, json=answer)

    def called(self) -> list[str]:
        return [tier for tier, _ in self.requests]


def dump(connection: fakeredis.FakeRedis, key: bytes) -> bytes:
    """A key and everything stored under it, as bytes."""
    kind = connection.type(key)
    if kind == b"hash":
        values = [part for pair in connection.hgetall(key).items() for part in pair]
    elif kind == b"list":
        values = connection.lrange(key, 0, -1)
    elif kind == b"set":
        values = list(connection.smembers(key))
    elif kind == b"zset":
        values = connection.zrange(key, 0, -1)
    elif kind == b"string":
        values = [connection.get(key)]
    else:
        values = []
    return b" ".join([key, *map(inflate, values)])


def inflate(value: bytes) -> bytes:
    """RQ stores a job's call and result zlib-compressed: look inside."""
    try:
        return zlib.decompress(value)
    except zlib.error:
        return value


def answer(risk: str, *domains: str) -> dict:
    return {"risk_level": risk, "flagged_domains": list(domains), "rationale": "mock", "model_version": "mock-1"}


@dataclass
class Pipeline:
    api: TestClient
    servers: MockModelServers
    redis: fakeredis.FakeRedis

    def submit(self, **body) -> httpx.Response:
        body.setdefault("age_months", 24)
        body.setdefault("observations", OBSERVATIONS)
        return self.api.post("/api/submit", json=body)

    def status(self, job_id: str) -> dict:
        response = self.api.get(f"/api/status/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def events(self, job_id: str) -> list[dict]:
        response = self.api.get(f"/api/jobs/{job_id}/events")
        assert response.status_code == 200, response.text
        body = response.json()
        return body["events"] if isinstance(body, dict) else body


@pytest.fixture
def pipeline(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Pipeline]]:
    """Builds the API and the worker's runtime over one SQLite database and one fakeredis, with
    a synchronous RQ queue and the mocked model servers."""
    built: list[tuple[TestClient, httpx.Client]] = []
    engine = create_engine("sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool)
    init_db(engine)
    connection = fakeredis.FakeRedis()

    def build(answers: dict[str, dict | int]) -> Pipeline:
        monkeypatch.setenv("EDGE_MODEL_URL", SERVERS["edge"])
        monkeypatch.setenv("CLOUD_MODEL_URL", SERVERS["cloud"])
        monkeypatch.setenv("RECONCILER_ENABLED", "false")
        settings = load_settings()
        servers = MockModelServers(dict(answers))
        http = httpx.Client(transport=httpx.MockTransport(servers.handler))
        sessions = make_session_factory(engine)
        worker = Runtime(
            settings=settings,
            engine=engine,
            sessions=sessions,
            redis=connection,
            router=Router(InMemoryStatsStore(), rng=random.Random(7)),
            client=ModelClient(http),
            http=http,
            leases=LeaseKeeper(sessions, worker_id="rq-sync", lease_seconds=15),
            worker_id="rq-sync",
            static_targets=configured_targets(settings),
        )
        # process_job finds this process's job context here (what bootstrap.install does; undone after).
        monkeypatch.setitem(bootstrap._contexts, os.getpid(), worker)
        synchronous = Queue(QUEUE_NAME, connection=connection, is_async=False)
        services = replace(Services.over(settings, engine, connection), queue=synchronous)
        client = TestClient(create_app(services=services))
        client.__enter__()
        built.append((client, http))
        return Pipeline(client, servers, connection)

    yield build
    for client, http in built:
        client.__exit__(None, None, None)
        http.close()
    engine.dispose()


def test_a_submitted_case_is_processed_at_once_with_result_routing_and_audit(pipeline):
    run = pipeline({"edge": answer("high", "communication", "social"), "cloud": answer("low")})

    accepted = run.submit()
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    job = run.status(job_id)

    [(tier, request)] = run.servers.requests  # one call: the first choice answered
    assert job["status"] == "completed"
    assert job["target"] == tier
    assert job["result"] == run.servers.answers[tier]
    assert request["job_id"] == job_id and request["observations"] == OBSERVATIONS
    # The routing explanation: every configured target is a candidate with a reason, and the
    # chosen one is the target that answered.
    routing = job["routing"]
    assert routing["chosen"] == tier
    candidates = {c["target"]: c for c in routing["candidates"]}
    assert set(candidates) == set(SERVERS)
    assert all(c["reason"] for c in candidates.values())
    decided = datetime.fromisoformat(routing["decided_at_iso"])  # every time in the API is ISO 8601
    assert decided.timestamp() == pytest.approx(routing["decided_at"], abs=1e-3)
    assert job["sla_met"] is True and len(job["attempts"]) == 1
    events = [e["event"] for e in run.events(job_id)]
    assert events == ["submitted", "claimed", "routed", "call_started", "attempt", "completed"]


def test_a_failing_model_server_fails_over_and_the_audit_shows_both_attempts(pipeline):
    run = pipeline({})  # both answer 503 until told otherwise
    first = run.submit(preferred_target="edge")
    assert first.status_code == 202
    assert run.servers.called()[0] == "edge"

    # Now only cloud answers: the preferred edge fails, the worker fails over to cloud.
    run.servers.answers["cloud"] = answer("moderate", "motor")
    run.servers.requests.clear()
    job_id = run.submit(preferred_target="edge").json()["job_id"]
    job = run.status(job_id)
    assert run.servers.called() == ["edge", "cloud"]
    assert job["status"] == "completed" and job["target"] == "cloud"
    assert job["result"] == run.servers.answers["cloud"]
    attempts = [(e["target"], e["outcome"]) for e in run.events(job_id) if e["event"] == "attempt"]
    assert attempts == [("edge", "http_5xx"), ("cloud", "ok")]


def test_when_every_server_fails_the_job_fails_with_a_reason(pipeline):
    run = pipeline({"edge": 500, "cloud": 502})
    job_id = run.submit().json()["job_id"]
    job = run.status(job_id)
    assert sorted(run.servers.called()) == ["cloud", "edge"]
    assert job["status"] == "failed" and job["result"] is None
    assert job["error_kind"] and job["error"]
    assert run.events(job_id)[-1]["event"] == "failed"


def test_an_answer_that_breaks_the_contract_is_a_failed_attempt(pipeline):
    run = pipeline({"edge": {"risk_level": "certain"}, "cloud": {"risk_level": "certain"}})
    job_id = run.submit().json()["job_id"]
    job = run.status(job_id)
    assert job["status"] == "failed"
    outcomes = {e["outcome"] for e in run.events(job_id) if e["event"] == "attempt"}
    assert outcomes == {"invalid_response"}


def test_bad_input_is_refused_and_nothing_is_queued_or_called(pipeline):
    run = pipeline({"edge": answer("low"), "cloud": answer("low")})
    refused = run.submit(age_months=-1)
    assert refused.status_code == 422
    assert refused.json()["error"]["field"] == "age_months"
    assert run.servers.requests == []
    assert run.api.get("/api/jobs").json()["items"] == []


def test_redis_carries_the_job_id_and_no_phi(pipeline):
    run = pipeline({"edge": answer("high", "communication"), "cloud": answer("high", "communication")})
    job_id = run.submit().json()["job_id"]
    assert run.status(job_id)["status"] == "completed"
    stored = b" ".join(dump(run.redis, key) for key in run.redis.keys("*"))
    assert job_id.encode() in stored  # the conveyor belt did carry the job
    assert OBSERVATIONS.encode() not in stored and b"communication" not in stored
