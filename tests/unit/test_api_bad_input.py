"""Bad input gets a clear 4xx naming what is wrong, never a 500, and never echoes what was sent.

Defect 7 (crafted query parameters answered 500) lives on Postgres, so the query-parameter cases
run the real app in-process on the session's Postgres and a private redis-server; the body cases
run on SQLite and fakeredis (the refusal happens before any store is touched).
"""

from __future__ import annotations

import base64
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestrator.app.deps import Services
from orchestrator.app.main import create_app
from orchestrator.db import make_engine
from orchestrator.models import Audit, Job
from orchestrator.queue_rq import make_redis
from orchestrator.settings import load_settings
from tests.support.app import in_process_app

QUERY_ENDPOINTS = ("/api/jobs", "/api/sla-events", "/api/model-metrics")


def cursor_of(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


NAIVE_CURSOR = cursor_of(f"2026-01-01T00:00:00|{uuid.uuid4()}")
"""A cursor this API never issues: its time has no zone (the 500 of defect 7)."""
BAD_TIMES = {
    "min-with-offset": "0001-01-01T00:00:00+05:00",
    "max-with-offset": "9999-12-31T23:59:59-05:00",
    "a-number": "0.5",
    "an-epoch": "1767268800",
    "garbage": "yesterday",
}


@pytest.fixture
def pg_client(pg_url, redis_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", pg_url)
    monkeypatch.setenv("REDIS_URL", redis_url)
    settings = load_settings()
    engine, connection = make_engine(settings), make_redis(settings)
    app = create_app(services=Services.over(settings, engine, connection))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client
    engine.dispose()
    connection.close()


@pytest.fixture
def client(sqlite_engine, fake_redis, monkeypatch):
    with TestClient(in_process_app(sqlite_engine, fake_redis, monkeypatch), raise_server_exceptions=False) as test:
        yield test


def stored(engine) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(Job)) + session.scalar(
            select(func.count()).select_from(Audit)
        )


def assert_422_naming(response, field: str, sent: str | None = None) -> None:
    assert response.status_code == 422, (response.status_code, response.text)
    error = response.json()["error"]
    assert error["code"] == "validation_error" and error["field"] == field and field in error["message"]
    if sent and len(sent) > 3:
        assert sent not in response.text, "the error echoed the submitted value"


# --- query parameters (defect 7) -----------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.parametrize("endpoint", QUERY_ENDPOINTS)
@pytest.mark.parametrize("value", BAD_TIMES.values(), ids=BAD_TIMES.keys())
def test_a_time_at_the_extremes_or_not_iso_is_a_422_naming_since(pg_client, endpoint, value):
    assert_422_naming(pg_client.get(endpoint, params={"since": value}), "since", value)


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.parametrize("value", BAD_TIMES.values(), ids=BAD_TIMES.keys())
def test_until_is_checked_like_since(pg_client, value):
    assert_422_naming(pg_client.get("/api/jobs", params={"until": value}), "until", value)


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.parametrize(
    "cursor",
    [
        NAIVE_CURSOR,
        cursor_of(f"0001-01-01T00:00:00+05:00|{uuid.uuid4()}"),
        cursor_of(f"9999-12-31T23:59:59-05:00|{uuid.uuid4()}"),
        cursor_of("2026-01-01T00:00:00+00:00|not-a-uuid"),
        base64.urlsafe_b64encode(b"\xff\xfe|x").decode(),
        "é-not-ascii",
        "garbage",
    ],
    ids=["naive-time", "min-with-offset", "max-with-offset", "bad-id", "not-utf8", "not-ascii", "garbage"],
)
def test_a_forged_cursor_is_a_422_naming_cursor(pg_client, cursor):
    assert_422_naming(pg_client.get("/api/jobs", params={"cursor": cursor}), "cursor")


@pytest.mark.postgres
@pytest.mark.redis
def test_good_times_and_the_api_s_own_cursors_still_work_on_postgres(pg_client):
    body = {"age_months": 9, "observations": "sits"}
    ids = [pg_client.post("/api/submit", json=body).json()["job_id"] for _ in "abc"]
    first = pg_client.get("/api/jobs", params={"limit": 2, "since": "2000-01-01", "until": "2999-01-01T00:00:00Z"})
    assert first.status_code == 200 and len(first.json()["items"]) == 2
    rest = pg_client.get("/api/jobs", params={"limit": 2, "cursor": first.json()["next_cursor"]}).json()
    assert [j["job_id"] for j in first.json()["items"] + rest["items"]] == list(reversed(ids))
    for endpoint in QUERY_ENDPOINTS:
        for since in ("0001-01-01T00:00:00Z", "2026-01-01T12:00:00+14:00", "2026-01-01T00:00:00"):
            assert pg_client.get(endpoint, params={"since": since}).status_code == 200, (endpoint, since)


# --- bodies ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"age_months=3&observations=walks", "application/x-www-form-urlencoded"),
        (b'{"age_months": 3, "observations": "walks"}', "text/plain"),
        (b'{"age_months": 3, "observations": "walks"}', "application/xml"),
        (b'{"age_months": 3, "observations": "walks"}', None),
    ],
    ids=["form", "text-plain", "xml", "none"],
)
def test_a_body_that_is_not_declared_json_is_a_415(client, sqlite_engine, content, content_type):
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/api/submit", content=content, headers=headers)
    assert response.status_code == 415, response.text
    error = response.json()["error"]
    assert error["code"] == "unsupported_media_type" and "send application/json" in error["message"]
    assert stored(sqlite_engine) == 0


def test_json_with_a_charset_or_a_json_suffix_is_accepted(client):
    body = b'{"age_months": 3, "observations": "walks"}'
    for content_type in ("application/json; charset=utf-8", "application/problem+json", "Application/JSON"):
        response = client.post("/api/submit", content=body, headers={"content-type": content_type})
        assert response.status_code == 202, (content_type, response.text)


@pytest.mark.parametrize(
    "content",
    [b'{"age_months": 3, "observations": "\xff\xfe walks"}', b"\xff" * 20, '{"a": 1}'.encode("utf-16")],
    ids=["latin1-byte", "garbage-bytes", "utf-16"],
)
def test_a_body_that_is_not_utf8_answers_exactly_like_invalid_json(client, sqlite_engine, content):
    headers = {"content-type": "application/json"}
    invalid_json = client.post("/api/submit", content=b"{nope", headers=headers)
    response = client.post("/api/submit", content=content, headers=headers)
    assert response.status_code == invalid_json.status_code == 422
    assert response.json() == invalid_json.json() and response.json()["error"]["field"] == "body"
    assert stored(sqlite_engine) == 0


@pytest.mark.parametrize(
    "observations", ["", " ", "   \n\t  ", "\u2003\u00a0"], ids=["empty", "space", "mixed", "unicode"]
)
def test_empty_or_whitespace_observations_are_a_422(client, sqlite_engine, fake_redis, observations):
    """Defect 8 at the API: nothing to screen is refused, not screened as low risk."""
    response = client.post("/api/submit", json={"age_months": 24, "observations": observations})
    assert_422_naming(response, "observations")
    assert stored(sqlite_engine) == 0 and fake_redis.llen("rq:queue:pedi-screen") == 0


@pytest.mark.parametrize("endpoint", ["/api/submit", "/route_task"])
def test_an_unknown_preferred_target_is_refused_without_echoing_it(client, endpoint):
    sent = "tpuZq81x"
    body = {"age_months": 3, "observations": "walks", "preferred_target": sent}
    if endpoint == "/route_task":
        body = {"task_type": "echo", "payload": {}, "consent": True, "preferred_target": sent}
    response = client.post(endpoint, json=body)
    assert response.status_code in (422, 503), response.text
    if response.status_code == 422:
        assert_422_naming(response, "preferred_target", sent)
    assert sent not in response.text


@pytest.mark.parametrize("value", [BAD_TIMES["min-with-offset"], BAD_TIMES["max-with-offset"]], ids=["min", "max"])
def test_a_telemetry_timestamp_that_does_not_exist_in_utc_is_a_422(sqlite_engine, fake_redis, monkeypatch, value):
    app = in_process_app(sqlite_engine, fake_redis, monkeypatch, GPU_MODEL_URL="http://127.0.0.1:9")
    with TestClient(app, raise_server_exceptions=False) as test:
        response = test.post("/api/telemetry", json={"target": "gpu", "latency_ms": 5, "timestamp": value})
    assert_422_naming(response, "timestamp", value)
