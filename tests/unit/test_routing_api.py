"""The routing endpoints in-process on SQLite and fakeredis: targets and registration, the dry
run, generic tasks (consent, idempotency, no payload leaks), SLA events and model metrics."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestrator.models import Audit, Job, RegisteredTarget
from orchestrator.routing import Outcome, RedisStatsStore, Router
from orchestrator.targets import TIER_DEFAULTS
from tests.support.app import in_process_app
from tests.support.keys import admin_env

MARKER = "PHI-MARKER-2c9d"
KEY = "routing-key-0001"
EDGE, GPU, AGENT = "http://127.0.0.1:18001", "http://127.0.0.1:18002", "http://127.0.0.1:18003"
INFER_ENV = {"EDGE_MODEL_URL": EDGE, "GPU_MODEL_URL": GPU}
TASK = {"task_type": "summarize", "payload": {"text": MARKER}, "consent": True}


def make_client(sqlite_engine, fake_redis, monkeypatch, **env: str) -> TestClient:
    return TestClient(in_process_app(sqlite_engine, fake_redis, monkeypatch, **env))


@pytest.fixture
def client(sqlite_engine, fake_redis, monkeypatch):
    with make_client(sqlite_engine, fake_redis, monkeypatch, **INFER_ENV) as test_client:
        yield test_client


@pytest.fixture
def task_client(sqlite_engine, fake_redis, monkeypatch):
    with make_client(sqlite_engine, fake_redis, monkeypatch, **INFER_ENV, EDGE_AGENT_URL=AGENT) as test_client:
        yield test_client


def count(engine, model, *where) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def targets_by_name(client) -> dict[str, dict]:
    response = client.get("/api/targets")
    assert response.status_code == 200
    return {t["name"]: t for t in response.json()["targets"]}


def fail(fake_redis, target: str, times: int) -> None:
    router = Router(RedisStatsStore(fake_redis))
    for _ in range(times):
        router.record(Outcome(target, ok=False, latency_ms=5.0, at=time.time(), error_kind="http_5xx"))


# --- auth ------------------------------------------------------------------------------------

ENDPOINTS = [
    ("GET", "/api/targets", None),
    ("POST", "/register_agent", {"name": "x", "tier": "edge", "url": EDGE}),
    ("POST", "/api/agents", {"name": "x", "tier": "edge", "url": EDGE}),
    ("POST", "/api/route", {}),
    ("POST", "/route_task", TASK),
    ("GET", f"/task/{uuid.uuid4()}", None),
    ("POST", "/api/telemetry", {"target": "gpu", "up": True}),
    ("GET", "/api/sla-events", None),
    ("GET", "/api/model-metrics", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_every_routing_endpoint_needs_the_key_when_one_is_set(
    sqlite_engine, fake_redis, monkeypatch, method, path, body
):
    with make_client(sqlite_engine, fake_redis, monkeypatch, **admin_env(KEY), **INFER_ENV) as client:
        denied = client.request(method, path, json=body)
        wrong = client.request(method, path, json=body, headers={"x-api-key": "not-the-key-123"})
        allowed = client.request(method, path, json=body, headers={"x-api-key": KEY})
    assert denied.status_code == wrong.status_code == 401
    assert denied.json()["error"]["code"] == "unauthorized"
    assert allowed.status_code != 401


# --- GET /api/targets --------------------------------------------------------------------------


def test_targets_show_configuration_source_prior_prediction_and_a_closed_circuit(client):
    view = targets_by_name(client)
    assert list(view) == ["edge", "gpu"]
    edge = view["edge"]
    assert (edge["tier"], edge["url"], edge["contract"], edge["source"], edge["enabled"]) == (
        "edge",
        EDGE,
        "infer",
        "env",
        True,
    )
    assert edge["stats"]["samples"] == 0 and edge["stats"]["calls"] == 0
    assert edge["stats"]["latency_p50_ms"] == pytest.approx(edge["prior_latency_ms"])
    assert edge["stats"]["latency_p95_ms"] > edge["stats"]["latency_p50_ms"]
    assert edge["circuit"] == {"state": "closed", "until": None, "open_count": 0}
    assert edge["telemetry"] is None


def test_targets_from_the_targets_file_are_marked_file(sqlite_engine, fake_redis, monkeypatch, tmp_path):
    path = tmp_path / "targets.yaml"
    path.write_text(
        "targets:\n"
        "  - {name: cloud-eu, tier: cloud, url: 'http://127.0.0.1:18009', cost_per_call_usd: 0.002}\n"
        "  - {name: gpu, cost_per_call_usd: 0.01}\n"
    )
    with make_client(sqlite_engine, fake_redis, monkeypatch, TARGETS_FILE=str(path), **INFER_ENV) as client:
        view = targets_by_name(client)
    assert view["cloud-eu"]["source"] == "file" and view["cloud-eu"]["cost_per_call_usd"] == 0.002
    assert view["gpu"]["source"] == "env" and view["gpu"]["cost_per_call_usd"] == 0.01


def test_credentials_in_a_configured_url_are_not_shown(sqlite_engine, fake_redis, monkeypatch):
    with make_client(
        sqlite_engine, fake_redis, monkeypatch, GPU_MODEL_URL="http://svc:s3cret-pw@127.0.0.1:18002/v1"
    ) as client:
        response = client.get("/api/targets")
    assert "s3cret-pw" not in response.text
    assert response.json()["targets"][0]["url"] == "http://***@127.0.0.1:18002/v1"


def test_learned_stats_and_an_open_circuit_are_shown(client, fake_redis):
    fail(fake_redis, "gpu", 5)
    gpu = targets_by_name(client)["gpu"]
    assert gpu["stats"]["calls"] == 5 and gpu["stats"]["failures"] == 5 and gpu["stats"]["error_rate"] > 0
    assert gpu["circuit"]["state"] == "open" and gpu["circuit"]["open_count"] == 1
    assert datetime.fromisoformat(gpu["circuit"]["until"]) > datetime.now(UTC)


# --- registration ------------------------------------------------------------------------------


def test_registering_creates_then_updates_and_audits_with_the_key_id(sqlite_engine, fake_redis, monkeypatch):
    body = {"name": "edge-2", "tier": "edge", "url": "http://10.0.0.7:8001/", "contract": "run",
            "cost_per_call_usd": 0.0001, "capacity": 4, "prior_latency_ms": 90}  # fmt: skip
    headers = {"x-api-key": KEY}
    with make_client(sqlite_engine, fake_redis, monkeypatch, **admin_env(KEY), **INFER_ENV) as client:
        created = client.post("/register_agent", json=body, headers=headers)
        updated = client.post("/api/agents", json={**body, "capacity": 6, "enabled": False}, headers=headers)
        listed = {t["name"]: t for t in client.get("/api/targets", headers=headers).json()["targets"]}
    assert created.status_code == 201 and updated.status_code == 200
    first = created.json()
    assert (first["name"], first["url"], first["contract"], first["capacity"], first["source"]) == (
        "edge-2",
        "http://10.0.0.7:8001",
        "run",
        4,
        "registered",
    )
    assert first["prior_latency_ms"] == 90 and first["stats"]["latency_p50_ms"] == pytest.approx(90)
    assert updated.json()["capacity"] == 6 and updated.json()["enabled"] is False
    assert listed["edge-2"]["enabled"] is False and listed["edge-2"]["capacity"] == 6
    with Session(sqlite_engine) as session:
        row = session.get(RegisteredTarget, "edge-2")
        assert row.capacity == 6 and row.registered_by.startswith("key-") and KEY not in row.registered_by
        audits = session.scalars(select(Audit).where(Audit.event == "registered").order_by(Audit.id)).all()
    assert [(a.job_id, a.target, a.outcome) for a in audits] == [
        (None, "edge-2", "created"),
        (None, "edge-2", "updated"),
    ]
    assert audits[0].actor == row.registered_by


def test_omitted_options_take_the_tier_defaults(client):
    response = client.post("/register_agent", json={"name": "gpu-b", "tier": "gpu", "url": "https://10.0.0.9"})
    body = response.json()
    assert response.status_code == 201
    assert (body["contract"], body["cost_per_call_usd"], body["capacity"], body["prior_latency_ms"]) == (
        "infer",
        0.004,
        8,
        80.0,
    )


def test_a_configured_target_is_not_replaced_without_override(client, sqlite_engine):
    for body in (
        {"name": "gpu", "tier": "gpu", "url": "http://127.0.0.1:18099"},
        {"name": "edge", "tier": "edge", "url": EDGE, "enabled": False},
    ):
        response = client.post("/register_agent", json=body)
        assert response.status_code == 409, response.text
        assert "override" in response.json()["error"]["message"]
    view = targets_by_name(client)
    assert (view["gpu"]["source"], view["gpu"]["url"]) == ("env", GPU)
    assert (view["edge"]["source"], view["edge"]["enabled"]) == ("env", True)
    assert count(sqlite_engine, RegisteredTarget) == 0 and count(sqlite_engine, Audit) == 0


def test_a_target_from_the_targets_file_needs_override_and_no_secret_is_echoed(
    sqlite_engine, fake_redis, monkeypatch, tmp_path
):
    path = tmp_path / "targets.yaml"
    path.write_text("targets:\n  - {name: cloud-eu, tier: cloud, url: 'http://svc:s3cret-pw@10.3.0.1:8001'}\n")
    body = {"name": "cloud-eu", "tier": "cloud", "url": "http://10.3.0.2:8001"}
    with make_client(sqlite_engine, fake_redis, monkeypatch, TARGETS_FILE=str(path), **INFER_ENV) as client:
        refused = client.post("/register_agent", json=body)
        replaced = client.post("/register_agent", json={**body, "override": True})
    assert refused.status_code == 409 and "file" in refused.json()["error"]["message"]
    assert replaced.status_code == 201 and replaced.json()["replaced"]["source"] == "file"
    assert replaced.json()["replaced"]["url"] == "http://***@10.3.0.1:8001" and "s3cret" not in replaced.text
    with Session(sqlite_engine) as session:
        details = session.scalars(select(Audit.details).where(Audit.event == "registered")).one()
    assert details["replaced"]["url"] == "http://***@10.3.0.1:8001" and "s3cret" not in str(details)


def test_an_override_says_what_it_replaced_and_removing_it_restores_the_configured_one(client, sqlite_engine):
    # Read the view first: the configured gpu's stats are what an override must report.
    assert targets_by_name(client)["gpu"]["cost_per_call_usd"] == TIER_DEFAULTS["gpu"].cost_per_call_usd
    body = {"name": "gpu", "tier": "cloud", "url": "http://127.0.0.1:18099", "cost_per_call_usd": 0.5}
    response = client.post("/register_agent", json={**body, "override": True})
    assert response.status_code == 201, response.text
    replaced = response.json()["replaced"]
    assert (replaced["source"], replaced["url"], replaced["tier"]) == ("env", GPU, "gpu")
    assert replaced["cost_per_call_usd"] == TIER_DEFAULTS["gpu"].cost_per_call_usd
    view = targets_by_name(client)["gpu"]
    assert (view["source"], view["url"], view["tier"]) == ("registered", "http://127.0.0.1:18099", "cloud")

    removed = client.delete("/api/targets/gpu")
    assert removed.status_code == 200, removed.text
    assert removed.json()["removed"]["url"] == "http://127.0.0.1:18099"
    assert (removed.json()["restored"]["source"], removed.json()["restored"]["url"]) == ("env", GPU)
    assert (targets_by_name(client)["gpu"]["source"], targets_by_name(client)["gpu"]["url"]) == ("env", GPU)
    with Session(sqlite_engine) as session:
        audits = session.scalars(select(Audit).where(Audit.target == "gpu").order_by(Audit.id)).all()
    assert [(a.event, a.outcome) for a in audits] == [("registered", "created"), ("unregistered", "restored")]
    assert audits[0].details["override"] is True and audits[0].details["replaced"] == replaced
    assert audits[1].details["removed"]["url"] == "http://127.0.0.1:18099"
    assert count(sqlite_engine, RegisteredTarget) == 0


def test_removing_is_404_for_configured_and_unknown_names(client, sqlite_engine):
    configured = client.delete("/api/targets/edge")
    unknown = client.delete("/api/targets/nowhere")
    assert configured.status_code == unknown.status_code == 404
    assert "configured" in configured.json()["error"]["message"]
    assert client.delete("/api/targets/bad%20name").status_code == 422
    assert count(sqlite_engine, Audit) == 0


def test_registered_targets_are_capped(sqlite_engine, fake_redis, monkeypatch):
    with make_client(sqlite_engine, fake_redis, monkeypatch, MAX_REGISTERED_TARGETS="2", **INFER_ENV) as client:
        for name in ("extra-1", "extra-2"):
            assert client.post("/register_agent", json={"name": name, "tier": "edge", "url": AGENT}).status_code == 201
        third = client.post("/register_agent", json={"name": "extra-3", "tier": "edge", "url": AGENT})
        again = client.post("/register_agent", json={"name": "extra-2", "tier": "gpu", "url": AGENT})
        assert client.delete("/api/targets/extra-1").status_code == 200
        after_removal = client.post("/register_agent", json={"name": "extra-3", "tier": "edge", "url": AGENT})
    assert third.status_code == 409 and "MAX_REGISTERED_TARGETS" in third.json()["error"]["message"]
    assert again.status_code == 200 and after_removal.status_code == 201
    assert count(sqlite_engine, RegisteredTarget) == 2


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:169.254.169.254]/",
        "http://2852039166/",
        "http://[fd00:ec2::254]/",
        "http://0.0.0.0:8001",
    ],
)
def test_metadata_and_link_local_urls_are_refused_even_in_development(client, sqlite_engine, url):
    response = client.post("/register_agent", json={"name": "probe", "tier": "edge", "url": url})
    error = response.json()["error"]
    assert response.status_code == 422 and (error["code"], error["field"]) == ("url_refused", "url")
    assert count(sqlite_engine, RegisteredTarget) == 0 and count(sqlite_engine, Audit) == 0


def test_production_refuses_loopback_and_names_outside_the_allowlist(sqlite_engine, fake_redis, monkeypatch):
    env = {"ENV": "production", "TARGET_URL_ALLOWLIST": "10.0.0.0/8,.models.example.org", **INFER_ENV}
    with make_client(sqlite_engine, fake_redis, monkeypatch, **env, **admin_env(KEY)) as client:
        answers = {
            url: client.post(
                "/register_agent", json={"name": "probe", "tier": "edge", "url": url}, headers={"x-api-key": KEY}
            )
            for url in ("http://127.0.0.1:8001", "http://localhost:8001", "http://192.168.1.5", "http://10.4.5.6:80")
        }
    refused = {url: r.json()["error"]["message"] for url, r in answers.items() if r.status_code == 422}
    assert set(refused) == {"http://127.0.0.1:8001", "http://localhost:8001", "http://192.168.1.5"}
    assert "loopback" in refused["http://localhost:8001"] and "TARGET_URL_ALLOWLIST" in refused["http://192.168.1.5"]
    assert answers["http://10.4.5.6:80"].status_code == 201


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"tier": "tpu"}, "tier"),
        ({"contract": "grpc"}, "contract"),
        ({"url": "ftp://10.0.0.7"}, "url"),
        ({"url": "http://"}, "url"),
        ({"url": "10.0.0.7:8001"}, "url"),
        ({"url": "http://user:pw@10.0.0.7"}, "url"),
        ({"url": "http://10.0.0.7:99999"}, "url"),
        ({"url": "http://10.0.0.7/?token=x"}, "url"),
        ({"name": "edge 2"}, "name"),
        ({"name": "Edge-2"}, "name"),
        ({"name": "-edge"}, "name"),
        ({"name": "other"}, "name"),
        ({"name": "auto"}, "name"),
        ({"override": "yes"}, "override"),
        ({"name": ""}, "name"),
        ({"name": "e" * 65}, "name"),
        ({"cost_per_call_usd": -0.1}, "cost_per_call_usd"),
        ({"capacity": 0}, "capacity"),
        ({"prior_latency_ms": 0}, "prior_latency_ms"),
        ({"enabled": "sometimes"}, "enabled"),
        ({"weight": 3}, "weight"),
    ],
)
def test_bad_registrations_are_422_naming_the_field_and_store_nothing(client, sqlite_engine, change, field):
    body = {"name": "edge-2", "tier": "edge", "url": "http://10.0.0.7:8001", **change}
    response = client.post("/register_agent", json=body)
    assert response.status_code == 422 and response.json()["error"]["field"] == field
    assert count(sqlite_engine, RegisteredTarget) == 0 and count(sqlite_engine, Audit) == 0


# --- POST /api/route ----------------------------------------------------------------------------


def test_the_dry_run_ranks_every_target_and_stores_nothing(client, sqlite_engine, fake_redis):
    before = sorted(fake_redis.keys("*"))
    response = client.post("/api/route", json={"sla_ms": 2000, "age_months": 24})
    assert response.status_code == 200
    body = response.json()
    decision = body["decision"]
    assert body["targets_considered"] == 2
    assert decision["chosen"] == "edge" and decision["run"] is True and decision["sla_unmeetable"] is False
    assert [c["target"] for c in decision["candidates"]] == ["edge", "gpu"]
    assert all(c["reason"].startswith(c["target"] + ":") for c in decision["candidates"])
    assert abs(decision["decided_at"] - time.time()) < 5
    assert count(sqlite_engine, Job) == 0 and count(sqlite_engine, Audit) == 0
    assert sorted(fake_redis.keys("*")) == before


def test_the_dry_run_follows_preference_sla_and_strictness(client):
    assert client.post("/api/route", json={"preferred_target": "gpu"}).json()["decision"]["chosen"] == "gpu"
    tight = client.post("/api/route", json={"sla_ms": 50}).json()["decision"]
    assert tight["sla_unmeetable"] is True and tight["run"] is True and tight["chosen"] is not None
    strict = client.post("/api/route", json={"sla_ms": 50, "strict_sla": True}).json()["decision"]
    assert strict["run"] is False and strict["chosen"] is None and strict["reason"].startswith("sla_unmeetable")


def test_the_dry_run_gives_the_same_answer_every_time(client):
    chosen = {client.post("/api/route", json={"sla_ms": 2000}).json()["decision"]["chosen"] for _ in range(60)}
    assert chosen == {"edge"}, "a dry run must not show the occasional exploration probe"


def test_the_dry_run_sees_telemetry_and_open_circuits(client, fake_redis):
    down = client.post("/api/telemetry", json={"target": "edge", "up": False})
    assert down.status_code == 202
    decision = client.post("/api/route", json={}).json()["decision"]
    edge = next(c for c in decision["candidates"] if c["target"] == "edge")
    assert decision["chosen"] == "gpu" and edge["eligible"] is False and "telemetry" in edge["reason"]
    client.post("/api/telemetry", json={"target": "edge", "up": True})
    assert client.post("/api/route", json={}).json()["decision"]["chosen"] == "edge"
    fail(fake_redis, "edge", 5)
    decision = client.post("/api/route", json={}).json()["decision"]
    assert decision["chosen"] == "gpu"
    assert next(c for c in decision["candidates"] if c["target"] == "edge")["circuit"] == "open"


def test_a_task_dry_run_considers_only_runner_contract_targets(task_client):
    body = task_client.post("/api/route", json={"kind": "task"}).json()
    assert body["targets_considered"] == 1 and body["decision"]["chosen"] == "edge-agent"
    assert task_client.post("/api/route", json={}).json()["targets_considered"] == 3


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"preferred_target": "mainframe"}, "preferred_target"),
        ({"preferred_target": "no spaces"}, "preferred_target"),
        ({"sla_ms": 0}, "sla_ms"),
        ({"budget_usd": -1}, "budget_usd"),
        ({"age_months": 300}, "age_months"),
        ({"kind": "batch"}, "kind"),
        ({"observations": "x"}, "observations"),
    ],
)
def test_bad_dry_runs_are_422_naming_the_field(client, body, field):
    response = client.post("/api/route", json=body)
    assert response.status_code == 422 and response.json()["error"]["field"] == field


# --- POST /route_task, GET /task/{id} ----------------------------------------------------------


@pytest.mark.parametrize("consent", [None, False, "missing"])
def test_a_task_without_consent_is_403_and_nothing_is_stored(task_client, sqlite_engine, fake_redis, consent):
    body = {k: v for k, v in TASK.items() if k != "consent"}
    if consent != "missing":
        body["consent"] = consent
    response = task_client.post("/route_task", json=body)
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "forbidden" and error["message"].startswith("consent is required")
    assert MARKER not in response.text
    assert count(sqlite_engine, Job) == 0 and fake_redis.llen("rq:queue:pedi-screen") == 0


def test_consent_must_be_a_real_boolean(task_client):
    response = task_client.post("/route_task", json={**TASK, "consent": "yes"})
    assert response.status_code == 422 and response.json()["error"]["field"] == "consent"


def test_a_task_is_stored_then_only_its_id_is_queued(task_client, sqlite_engine, fake_redis):
    response = task_client.post("/route_task", json={**TASK, "sla_ms": 1500, "preferred_target": "edge-agent"})
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued" and body["status_url"] == f"/task/{body['task_id']}"
    with Session(sqlite_engine) as session:
        job = session.get(Job, uuid.UUID(body["task_id"]))
        assert (job.kind, job.task_type, job.payload, job.sla_ms, job.case_id) == (
            "task",
            "summarize",
            {"text": MARKER},
            1500,
            None,
        )
        submitted = session.scalars(select(Audit).where(Audit.job_id == job.id)).one()
        assert submitted.event == "submitted" and submitted.details["consent"] is True
    assert fake_redis.lrange("rq:queue:pedi-screen", 0, -1) == [body["task_id"].encode()]
    for key in fake_redis.keys("*"):
        assert MARKER not in str(fake_redis.dump(key)), f"the payload reached Redis key {key!r}"


def test_the_task_view_has_every_agreed_field(task_client):
    task_id = task_client.post("/route_task", json=TASK).json()["task_id"]
    view = task_client.get(f"/task/{task_id}")
    assert view.status_code == 200
    agreed = {"task_id", "task_type", "status", "result", "target", "routing", "error", "error_kind", "created_at",
              "started_at", "finished_at", "latency_ms", "cost_usd", "attempts"}  # fmt: skip
    assert agreed <= set(view.json())
    assert view.json()["task_id"] == task_id and view.json()["status"] == "queued" and view.json()["attempts"] == []
    assert MARKER not in view.text, "the task view does not echo the payload"


def test_task_lookup_is_404_for_unknown_ids_and_screening_jobs(task_client):
    screening = task_client.post("/api/submit", json={"age_months": 20, "observations": "x"}).json()["job_id"]
    assert task_client.get(f"/task/{screening}").status_code == 404
    unknown = task_client.get(f"/task/{uuid.uuid4()}")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    assert task_client.get("/task/not-a-uuid").status_code == 422


def test_the_same_idempotency_key_replays_and_a_different_body_conflicts(task_client, sqlite_engine, fake_redis):
    headers = {"Idempotency-Key": "task-77"}
    first = task_client.post("/route_task", json=TASK, headers=headers)
    again = task_client.post("/route_task", json=TASK, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["task_id"] == again.json()["task_id"] and again.headers["Idempotent-Replayed"] == "true"
    other = task_client.post("/route_task", json={**TASK, "payload": {"text": "other"}}, headers=headers)
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_conflict"
    assert MARKER not in other.text
    assert count(sqlite_engine, Job) == 1 and fake_redis.llen("rq:queue:pedi-screen") == 1


def test_a_key_used_for_a_screening_job_conflicts_with_a_task(task_client):
    headers = {"Idempotency-Key": "shared-1"}
    task_client.post("/api/submit", json={"age_months": 20, "observations": "x"}, headers=headers)
    assert task_client.post("/route_task", json=TASK, headers=headers).status_code == 409


def test_a_task_with_no_runner_target_is_refused_up_front(client, sqlite_engine):
    response = client.post("/route_task", json=TASK)
    assert response.status_code == 503 and "runner-contract" in response.json()["error"]["message"]
    assert count(sqlite_engine, Job) == 0


def test_a_registered_runner_makes_tasks_possible(client):
    client.post("/register_agent", json={"name": "runner-x", "tier": "cloud", "url": AGENT, "contract": "run"})
    assert client.post("/route_task", json={**TASK, "preferred_target": "runner-x"}).status_code == 202


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"task_type": ""}, "task_type"),
        ({"task_type": "x" * 65}, "task_type"),
        ({"task_type": "screening"}, "task_type"),
        ({"task_type": "two words"}, "task_type"),
        ({"payload": [MARKER]}, "payload"),
        ({"payload": MARKER}, "payload"),
        ({"payload": None}, "payload"),
        ({"sla_ms": 0}, "sla_ms"),
        ({"preferred_target": "gpu-9"}, "preferred_target"),
        ({"case_id": str(uuid.uuid4())}, "case_id"),
    ],
)
def test_bad_tasks_are_422_naming_the_field_without_echoing_the_payload(task_client, sqlite_engine, change, field):
    response = task_client.post("/route_task", json={**TASK, **change})
    assert response.status_code == 422 and response.json()["error"]["field"] == field
    assert MARKER not in response.text
    assert count(sqlite_engine, Job) == 0


def test_a_deeply_nested_payload_is_refused(task_client):
    payload: dict = {"leaf": MARKER}
    for _ in range(40):
        payload = {"n": payload}
    response = task_client.post("/route_task", json={**TASK, "payload": payload})
    assert response.status_code == 422 and response.json()["error"]["field"] == "payload"
    shallow: dict = {"leaf": 1}
    for _ in range(20):
        shallow = {"n": shallow}
    assert task_client.post("/route_task", json={**TASK, "payload": shallow}).status_code == 202


# --- GET /api/sla-events, GET /api/model-metrics -----------------------------------------------

BASE = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
SINCE = {"since": "2026-03-01T00:00:00Z"}


def add_job(engine, *, target, sla_ms, total_ms, finished_at, status="completed", kind="screening", **fields):
    with Session(engine) as session:
        job = Job(
            kind=kind,
            status=status,
            sla_ms=sla_ms,
            actor="test",
            preferred_target="auto",
            created_at=finished_at - timedelta(milliseconds=total_ms),
            finished_at=finished_at,
            target=target,
            sla_met=(total_ms <= sla_ms) if status == "completed" else None,
            decision=fields.pop("decision", {"chosen": target}),
            **fields,
        )
        session.add(job)
        session.commit()
        return str(job.id)


def test_sla_events_lists_late_jobs_newest_first_with_margins_and_counts(client, sqlite_engine):
    at = lambda minutes, seconds=0: BASE + timedelta(minutes=minutes, seconds=seconds)  # noqa: E731
    a = add_job(sqlite_engine, target="gpu", sla_ms=300, total_ms=450, finished_at=at(5, 10))
    b = add_job(sqlite_engine, target="gpu", sla_ms=300, total_ms=900, finished_at=at(5, 40), kind="task")
    c = add_job(sqlite_engine, target="edge", sla_ms=2000, total_ms=2500, finished_at=at(7))
    d = add_job(sqlite_engine, target="gpu", sla_ms=300, total_ms=350, finished_at=at(90))
    add_job(sqlite_engine, target="edge", sla_ms=2000, total_ms=1000, finished_at=at(8))  # met
    add_job(sqlite_engine, target="edge", sla_ms=100, total_ms=5000, finished_at=at(9), status="failed")
    add_job(sqlite_engine, target="gpu", sla_ms=300, total_ms=999, finished_at=BASE - timedelta(days=2))  # too old
    body = client.get("/api/sla-events", params=SINCE).json()
    assert [(i["job_id"], i["target"], i["margin_ms"]) for i in body["items"]] == [
        (d, "gpu", 50.0),
        (c, "edge", 500.0),
        (b, "gpu", 600.0),
        (a, "gpu", 150.0),
    ]
    item = body["items"][2]
    assert item["kind"] == "task" and item["sla_ms"] == 300 and item["total_ms"] == 900.0
    assert datetime.fromisoformat(item["finished_at"]) == at(5, 40)
    assert [(x["target"], datetime.fromisoformat(x["bucket_start"]), x["violations"]) for x in body["counts"]] == [
        ("gpu", at(90), 1),
        ("edge", at(7), 1),
        ("gpu", at(5), 2),
    ]
    hourly = client.get("/api/sla-events", params={**SINCE, "bucket": "hour"}).json()["counts"]
    assert [(x["target"], datetime.fromisoformat(x["bucket_start"]), x["violations"]) for x in hourly] == [
        ("gpu", BASE + timedelta(hours=1), 1),
        ("edge", BASE, 1),
        ("gpu", BASE, 2),
    ]
    only_gpu = client.get("/api/sla-events", params={**SINCE, "target": "gpu", "limit": 1}).json()
    assert [i["job_id"] for i in only_gpu["items"]] == [d]
    assert sum(x["violations"] for x in only_gpu["counts"]) == 3, "counts are not cut by limit"


def test_sla_events_default_to_the_last_day(client, sqlite_engine):
    now = datetime.now(UTC)
    recent = add_job(sqlite_engine, target="gpu", sla_ms=100, total_ms=200, finished_at=now - timedelta(hours=1))
    add_job(sqlite_engine, target="gpu", sla_ms=100, total_ms=200, finished_at=now - timedelta(hours=30))
    assert [i["job_id"] for i in client.get("/api/sla-events").json()["items"]] == [recent]


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 201}, {"bucket": "day"}, {"since": "last week"}, {"target": "t" * 65}]
)
def test_bad_sla_event_queries_are_422(client, params):
    assert client.get("/api/sla-events", params=params).status_code == 422


def test_model_metrics_compare_predictions_with_actuals_per_target(client, sqlite_engine):
    at = lambda minutes: BASE + timedelta(minutes=minutes)  # noqa: E731
    gpu = [(100.0, 150.0, 80.0), (100.0, 150.0, 160.0), (50.0, 90.0, 60.0)]  # predicted, p95, actual
    for minute, (predicted, p95, actual) in enumerate(gpu):
        add_job(sqlite_engine, target="gpu", sla_ms=2000, total_ms=actual + 5, finished_at=at(minute),
                predicted_ms=predicted, predicted_p95_ms=p95, latency_ms=actual, cost_usd=0.004)  # fmt: skip
    add_job(sqlite_engine, target="edge", sla_ms=2000, total_ms=120, finished_at=at(1),
            predicted_ms=200.0, latency_ms=100.0)  # fmt: skip
    # Not comparable: served by a failover target, no prediction, or failed.
    add_job(sqlite_engine, target="gpu", sla_ms=2000, total_ms=900, finished_at=at(5), decision={"chosen": "edge"},
            predicted_ms=100.0, predicted_p95_ms=150.0, latency_ms=900.0, cost_usd=0.0042)  # fmt: skip
    add_job(sqlite_engine, target="gpu", sla_ms=2000, total_ms=70, finished_at=at(6), latency_ms=70.0)
    add_job(sqlite_engine, target="gpu", sla_ms=2000, total_ms=70, finished_at=at(7), status="failed",
            predicted_ms=100.0, predicted_p95_ms=150.0, latency_ms=5000.0)  # fmt: skip
    body = client.get("/api/model-metrics", params={**SINCE, "points": 2}).json()
    by_target = {t["target"]: t for t in body["targets"]}
    assert list(by_target) == ["edge", "gpu"]
    g = by_target["gpu"]
    errors = [p - a for p, _, a in gpu]
    assert g["jobs"] == 3
    assert g["mae_ms"] == pytest.approx(sum(abs(e) for e in errors) / 3, abs=0.01)
    assert g["bias_ms"] == pytest.approx(sum(errors) / 3, abs=0.01)
    assert g["p95_calibration"] == pytest.approx(2 / 3, abs=1e-4)
    assert g["cost_per_job_usd"] == pytest.approx(0.004)
    assert [(p["predicted_ms"], p["actual_ms"]) for p in g["points"]] == [(100.0, 160.0), (50.0, 60.0)]
    assert datetime.fromisoformat(g["points"][-1]["at"]) == at(2)
    e = by_target["edge"]
    assert (e["jobs"], e["mae_ms"], e["bias_ms"], e["p95_calibration"], e["cost_per_job_usd"]) == (
        1,
        100.0,
        100.0,
        None,
        None,
    )


def test_model_metrics_default_to_the_last_day_and_bound_points(client, sqlite_engine):
    add_job(sqlite_engine, target="gpu", sla_ms=2000, total_ms=90, finished_at=datetime.now(UTC) - timedelta(hours=30),
            predicted_ms=50.0, latency_ms=80.0)  # fmt: skip
    assert client.get("/api/model-metrics").json() == {"targets": []}
    assert client.get("/api/model-metrics", params={"points": 501}).status_code == 422


def test_a_replay_returns_the_task_even_after_its_runner_was_disabled(client):
    runner = {"name": "runner-x", "tier": "cloud", "url": AGENT, "contract": "run"}
    client.post("/register_agent", json=runner)
    headers = {"Idempotency-Key": "replay-1"}
    first = client.post("/route_task", json=TASK, headers=headers)
    client.post("/register_agent", json={**runner, "enabled": False})
    again = client.post("/route_task", json=TASK, headers=headers)
    assert first.status_code == again.status_code == 202 and again.json()["task_id"] == first.json()["task_id"]
    assert client.post("/route_task", json=TASK).status_code == 503, "a new task still needs a runner"
    assert client.post("/route_task", json={**TASK, "sla_ms": 9}, headers=headers).status_code == 409
