"""The HTTP API in-process on SQLite and fakeredis: validation, idempotency, auth, paging."""

from __future__ import annotations

import base64
import struct
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestrator.models import Audit, Case, Job
from tests.support.app import in_process_app

MARKER = "PHI-MARKER-7f3a"
KEY_A, KEY_B = "key-alpha-0001", "key-bravo-0002"


def make_client(sqlite_engine, fake_redis, monkeypatch, **env: str) -> TestClient:
    return TestClient(in_process_app(sqlite_engine, fake_redis, monkeypatch, **env))


@pytest.fixture
def client(sqlite_engine, fake_redis, monkeypatch):
    with make_client(sqlite_engine, fake_redis, monkeypatch) as test_client:
        yield test_client


def count(engine, model) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(model))


def embedding(values: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def test_submit_stores_the_job_then_queues_only_its_id(client, sqlite_engine, fake_redis):
    response = client.post("/api/submit", json={"age_months": 30, "observations": f"no words yet {MARKER}"})
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued" and body["status_url"] == f"/api/status/{body['job_id']}"
    with Session(sqlite_engine) as session:
        job = session.get(Job, uuid.UUID(body["job_id"]))
        assert job.status == "queued" and job.observations.endswith(MARKER) and job.sla_ms == 2000
        assert session.get(Case, job.case_id) is not None
        events = session.scalars(select(Audit.event).where(Audit.job_id == job.id)).all()
        assert events == ["submitted"]
    assert fake_redis.lrange("rq:queue:pedi-screen", 0, -1) == [body["job_id"].encode()]
    for key in fake_redis.keys("*"):
        dump = str(fake_redis.dump(key))
        assert MARKER not in dump, f"PHI reached Redis key {key!r}"


def test_a_second_job_can_join_an_existing_case(client):
    first = client.post("/api/submit", json={"age_months": 12, "observations": "a"}).json()
    case_id = client.get(first["status_url"]).json()["case_id"]
    second = client.post("/api/submit", json={"case_id": case_id, "age_months": 13, "observations": "b"})
    assert second.status_code == 202
    assert client.get(second.json()["status_url"]).json()["case_id"] == case_id
    unknown = client.post("/api/submit", json={"case_id": str(uuid.uuid4()), "age_months": 13, "observations": "b"})
    assert unknown.status_code == 422 and unknown.json()["error"]["field"] == "case_id"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"age_months": 217, "observations": MARKER}, "age_months"),
        ({"age_months": -1, "observations": MARKER}, "age_months"),
        ({"observations": MARKER}, "age_months"),
        ({"age_months": 5, "observations": MARKER * 600}, "observations"),
        ({"age_months": 5, "observations": MARKER, "embedding_b64": "not base64!"}, "embedding_b64"),
        (
            {"age_months": 5, "observations": MARKER, "embedding_b64": base64.b64encode(b"abc").decode()},
            "embedding_b64",
        ),
        ({"age_months": 5, "observations": MARKER, "preferred_target": "mainframe"}, "preferred_target"),
        ({"age_months": 5, "observations": MARKER, "sla_ms": 0}, "sla_ms"),
        ({"age_months": 5, "observations": MARKER, "colour": "blue"}, "colour"),
    ],
)
def test_bad_input_is_a_422_naming_the_field_and_nothing_is_written(client, sqlite_engine, fake_redis, body, field):
    response = client.post("/api/submit", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error" and error["field"] == field and field in error["message"]
    assert MARKER not in response.text, "the error echoed the submitted observations"
    assert count(sqlite_engine, Job) == 0 and count(sqlite_engine, Case) == 0 and count(sqlite_engine, Audit) == 0
    assert fake_redis.llen("rq:queue:pedi-screen") == 0


def test_an_embedding_of_4096_floats_is_accepted_and_4097_is_not(client):
    ok = client.post(
        "/api/submit", json={"age_months": 5, "observations": "x", "embedding_b64": embedding([0.5] * 4096)}
    )
    assert ok.status_code == 202
    too_many = client.post(
        "/api/submit", json={"age_months": 5, "observations": "x", "embedding_b64": embedding([0.5] * 4097)}
    )
    assert too_many.status_code == 422 and too_many.json()["error"]["field"] == "embedding_b64"


def test_malformed_json_names_the_body(client):
    response = client.post("/api/submit", content=b"{nope", headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["error"]["field"] == "body"


def test_a_body_over_the_limit_is_a_413_before_parsing(client, sqlite_engine):
    response = client.post("/api/submit", content=b"x" * 70_000, headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"
    chunks = (b"x" * 10_000 for _ in range(10))  # no Content-Length: counted while streaming
    streamed = client.post("/api/submit", content=chunks, headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert count(sqlite_engine, Job) == 0


def test_the_same_idempotency_key_and_body_returns_the_same_job(client, sqlite_engine, fake_redis):
    body = {"age_months": 40, "observations": "speaks in short sentences"}
    first = client.post("/api/submit", json=body, headers={"Idempotency-Key": "intake-42"})
    again = client.post("/api/submit", json=body, headers={"Idempotency-Key": "intake-42"})
    assert first.status_code == again.status_code == 202
    assert first.json()["job_id"] == again.json()["job_id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert count(sqlite_engine, Job) == 1 and fake_redis.llen("rq:queue:pedi-screen") == 1


def test_the_same_idempotency_key_with_another_body_is_a_409(client, sqlite_engine):
    client.post("/api/submit", json={"age_months": 40, "observations": "a"}, headers={"Idempotency-Key": "k"})
    conflict = client.post(
        "/api/submit", json={"age_months": 41, "observations": "a"}, headers={"Idempotency-Key": "k"}
    )
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "idempotency_conflict"
    assert count(sqlite_engine, Job) == 1


def test_status_of_an_unknown_job_is_a_404_and_a_bad_id_is_a_422(client):
    assert client.get(f"/api/status/{uuid.uuid4()}").status_code == 404
    bad = client.get("/api/status/not-a-uuid")
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "job_id"


def test_jobs_are_listed_newest_first_a_page_at_a_time(client):
    ids = [client.post("/api/submit", json={"age_months": i, "observations": "x"}).json()["job_id"] for i in range(5)]
    first = client.get("/api/jobs", params={"limit": 2}).json()
    second = client.get("/api/jobs", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    third = client.get("/api/jobs", params={"limit": 2, "cursor": second["next_cursor"]}).json()
    listed = [j["job_id"] for page in (first, second, third) for j in page["items"]]
    assert listed == list(reversed(ids)) and third["next_cursor"] is None
    assert client.get("/api/jobs", params={"status": "completed"}).json()["items"] == []
    assert client.get("/api/jobs", params={"limit": 201}).status_code == 422
    assert client.get("/api/jobs", params={"cursor": "garbage"}).json()["error"]["field"] == "cursor"


def test_job_events_are_its_audit_trail(client):
    job = client.post("/api/submit", json={"age_months": 3, "observations": "x"}).json()
    events = client.get(f"/api/jobs/{job['job_id']}/events").json()
    assert [e["event"] for e in events] == ["submitted"] and events[0]["actor"] == "anonymous"


def test_with_api_key_set_every_api_route_needs_one_of_the_keys(sqlite_engine, fake_redis, monkeypatch):
    with make_client(sqlite_engine, fake_redis, monkeypatch, API_KEY=f"{KEY_A},{KEY_B}") as client:
        body = {"age_months": 3, "observations": "x"}
        assert client.post("/api/submit", json=body).status_code == 401
        assert client.post("/api/submit", json=body, headers={"x-api-key": "wrong-key-000"}).status_code == 401
        assert client.get("/api/jobs").status_code == 401
        for key in (KEY_A, KEY_B):  # rotation: both keys work
            assert client.post("/api/submit", json=body, headers={"x-api-key": key}).status_code == 202
        assert client.get("/healthz").status_code == 200  # operational endpoints stay open
    with Session(sqlite_engine) as session:
        actors = set(session.scalars(select(Audit.actor)).all())
    assert len(actors) == 2 and all(a.startswith("key-") for a in actors)
    assert not any(KEY_A in a or KEY_B in a for a in actors)


def test_openapi_docs_are_served(client):
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/api/submit", "/api/status/{job_id}", "/api/jobs", "/healthz", "/readyz"} <= set(spec["paths"])


def test_metrics_are_labelled_by_route_template_never_by_id(client):
    job = client.post("/api/submit", json={"age_months": 3, "observations": "x"}).json()
    client.get(job["status_url"])
    text = client.get("/metrics").text
    assert 'route="/api/status/{job_id}"' in text
    assert job["job_id"] not in text
    assert "pedi_queue_depth 1.0" in text and 'pedi_jobs{status="queued"} 1.0' in text


def test_a_registered_target_can_be_preferred_by_name(client):
    agent = {"name": "gpu-eu", "tier": "gpu", "url": "http://gpu-eu.internal:8001", "cost_per_call_usd": 0.003}
    assert client.post("/register_agent", json=agent).status_code == 201
    named = client.post("/api/submit", json={"age_months": 3, "observations": "x", "preferred_target": "gpu-eu"})
    assert named.status_code == 202
    assert client.get(named.json()["status_url"]).json()["preferred_target"] == "gpu-eu"
    unknown = client.post("/api/submit", json={"age_months": 3, "observations": "x", "preferred_target": "gpu-mars"})
    assert unknown.status_code == 422 and unknown.json()["error"]["field"] == "preferred_target"


def test_times_without_a_zone_are_taken_as_utc(client):
    client.post("/api/submit", json={"age_months": 3, "observations": "x"})
    assert len(client.get("/api/jobs", params={"since": "2000-01-01T00:00:00"}).json()["items"]) == 1
    assert client.get("/api/jobs", params={"until": "2000-01-01T00:00:00"}).json()["items"] == []
