"""Size and content limits: a body over MAX_BODY_BYTES is a 413 before parsing (declared or
streamed, in-process and through uvicorn); observations and embeddings have length limits; text
Postgres cannot store is a 422, never a 500; and no error message echoes what was sent."""

from __future__ import annotations

import base64
import json
import struct

import httpx
import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from orchestrator.app.deps import Services, SessionDep
from orchestrator.app.main import create_app
from orchestrator.constants import EMBEDDING_MAX_VALUES, OBSERVATIONS_MAX_CHARS
from orchestrator.db import make_engine
from orchestrator.models import Job
from orchestrator.queue_rq import make_redis
from orchestrator.settings import load_settings

pytestmark = pytest.mark.security

MARKER = "LIMIT-PHI-MARKER-5d1c"


def embedding(count: int) -> str:
    return base64.b64encode(struct.pack(f"<{count}f", *([0.5] * count))).decode()


def in_process(sqlite_engine, fake_redis, monkeypatch, max_body_bytes: int) -> TestClient:
    monkeypatch.setenv("MAX_BODY_BYTES", str(max_body_bytes))
    settings = load_settings()
    services = Services.over(settings, sqlite_engine, fake_redis)
    return TestClient(create_app(services=services))


@pytest.fixture
def client(sqlite_engine, fake_redis, monkeypatch):
    """A 4 KiB body limit."""
    with in_process(sqlite_engine, fake_redis, monkeypatch, 4096) as test_client:
        yield test_client


@pytest.fixture
def roomy(sqlite_engine, fake_redis, monkeypatch):
    """The default 64 KiB body limit, so the field limits are what refuses."""
    with in_process(sqlite_engine, fake_redis, monkeypatch, 65536) as test_client:
        yield test_client


def jobs_stored(engine) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(Job))


def test_a_declared_oversize_body_is_a_413_and_nothing_is_stored(client, sqlite_engine):
    body = {"age_months": 10, "observations": MARKER + "x" * 5000}
    response = client.post("/api/submit", json=body)
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"
    assert MARKER not in response.text and jobs_stored(sqlite_engine) == 0


def test_a_streamed_oversize_body_without_length_is_a_413(client, sqlite_engine):
    def chunks():
        yield b'{"age_months": 10, "observations": "'
        for _ in range(10):
            yield MARKER.encode() * 40
        yield b'"}'

    response = client.post("/api/submit", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and MARKER not in response.text and jobs_stored(sqlite_engine) == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"age_months": 10, "observations": MARKER + "x" * OBSERVATIONS_MAX_CHARS}, "observations"),
        ({"age_months": 1, "observations": "x", "embedding_b64": embedding(EMBEDDING_MAX_VALUES + 1)}, "embedding_b64"),
        ({"age_months": 10, "observations": MARKER + "\x00"}, "observations"),
        ({"age_months": 10, "observations": "ok", "notes": MARKER}, "notes"),
        ({"age_months": MARKER, "observations": "ok"}, "age_months"),
    ],
    ids=["observations-too-long", "embedding-too-long", "nul-character", "unknown-field", "wrong-type"],
)
def test_over_the_limits_is_a_422_naming_the_field_never_echoing_the_value(roomy, sqlite_engine, body, field):
    response = roomy.post("/api/submit", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error" and error["field"] == field
    assert MARKER not in response.text and jobs_stored(sqlite_engine) == 0


def test_at_the_limits_is_accepted(roomy):
    body = {"age_months": 10, "observations": "x" * OBSERVATIONS_MAX_CHARS, "embedding_b64": embedding(4096)}
    assert roomy.post("/api/submit", json=body).status_code == 202


@pytest.mark.postgres
@pytest.mark.redis
def test_nul_characters_are_a_422_on_postgres_too(pg_url, redis_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", pg_url)
    monkeypatch.setenv("REDIS_URL", redis_url)
    settings = load_settings()
    engine, connection = make_engine(settings), make_redis(settings)
    services = Services.over(settings, engine, connection)
    with TestClient(create_app(services=services), raise_server_exceptions=False) as test_client:
        body = test_client.post("/api/submit", json={"age_months": 3, "observations": MARKER + "\x00"})
        query = test_client.get("/api/jobs", params={"target": MARKER + "\x00"})
    engine.dispose()
    connection.close()
    assert body.status_code == 422 and body.json()["error"]["field"] == "observations"
    assert query.status_code == 422 and query.json()["error"]["code"] == "validation_error"
    assert MARKER not in body.text + query.text


@pytest.mark.postgres
@pytest.mark.redis
def test_a_value_postgres_refuses_is_a_422_never_a_500(pg_url, redis_url, monkeypatch):
    """The safety net for routes whose validation lets through JSON Postgres cannot store."""
    monkeypatch.setenv("DATABASE_URL", pg_url)
    monkeypatch.setenv("REDIS_URL", redis_url)
    settings = load_settings()
    engine, connection = make_engine(settings), make_redis(settings)
    services = Services.over(settings, engine, connection)
    router = APIRouter()

    @router.post("/api/store-probe")
    def store(body: dict, session: SessionDep) -> dict:
        session.execute(text("SELECT CAST(:doc AS jsonb)"), {"doc": json.dumps(body)})
        return {}

    app = create_app(services=services)
    app.include_router(router)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        fine = test_client.post("/api/store-probe", json={"note": "ok"})
        refused = test_client.post(
            "/api/store-probe",
            content=b'{"note": "' + MARKER.encode() + b'\\u0000"}',
            headers={"content-type": "application/json"},
        )
    engine.dispose()
    connection.close()
    assert fine.status_code == 200
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "validation_error", refused.text
    assert MARKER not in refused.text


@pytest.mark.e2e
@pytest.mark.postgres
@pytest.mark.redis
def test_the_limit_holds_through_uvicorn(stack):
    api = stack.api(MAX_BODY_BYTES="2048")
    declared = api.http.post("/api/submit", json={"age_months": 5, "observations": MARKER * 200})
    streamed = api.http.post(
        "/api/submit",
        content=iter([b'{"age_months": 5, "observations": "', MARKER.encode() * 200, b'"}']),
        headers={"content-type": "application/json"},
    )
    for response in (declared, streamed):
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "payload_too_large" and MARKER not in response.text
    assert httpx.get(f"{api.url}/healthz").status_code == 200
