"""Property-based fuzzing of the API's own parsers, beyond the seeded schemathesis run.

schemathesis generates what the OpenAPI schema describes; the 500s of defect 7 hid in values the
schema allows (a cursor string, an ISO time that does not exist in UTC). Here Hypothesis aims at
each parser directly and through the real app on Postgres and Redis:

* cursors and query times: any text, and structured near-misses (naive times, every UTC offset at
  the ends of the calendar, numbers);
* headers: Idempotency-Key, Content-Type, x-api-key;
* bodies: arbitrary JSON values and arbitrary bytes, on every JSON endpoint.

Promise: never a 5xx; every 4xx is the one error shape; a parser raises only its own error.
Seeded, so a failure reproduces.
"""

from __future__ import annotations

import base64
import json
import string
import uuid
from datetime import UTC, datetime, timedelta, timezone

import hypothesis
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck
from hypothesis import strategies as st

from orchestrator import jobs
from orchestrator.app.main import build_services, create_app
from orchestrator.errors import BadRequest
from orchestrator.schemas import utc_instant
from orchestrator.settings import load_settings

pytestmark = pytest.mark.security

SEED = 20261203
EXAMPLES = 150
QUERY_ENDPOINTS = ("/api/jobs", "/api/sla-events", "/api/model-metrics")
BODY_ENDPOINTS = ("/api/submit", "/route_task", "/api/telemetry", "/api/route", "/register_agent")
KEY = "fuzz-key-0002"

fuzzing = hypothesis.settings(
    max_examples=EXAMPLES,
    database=None,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

offsets = st.builds(
    timezone, st.timedeltas(min_value=-timedelta(hours=23, minutes=59), max_value=timedelta(hours=23, minutes=59))
)
edge_years = st.sampled_from([1, 2, 1969, 1970, 2026, 9998, 9999])
moments = st.one_of(
    st.datetimes(timezones=st.none() | offsets),
    st.builds(
        lambda year, tz, late: datetime(year, 12 if late else 1, 31 if late else 1, 23 if late else 0, tzinfo=tz),
        edge_years,
        st.none() | offsets,
        st.booleans(),
    ),
)
positive = st.timedeltas(min_value=timedelta(minutes=1), max_value=timedelta(hours=23, minutes=59))
outside_utc = st.one_of(  # an instant that exists in its zone but not in UTC: the 500s of defect 7
    st.builds(lambda off: datetime(1, 1, 1, tzinfo=timezone(off)).isoformat(), positive),
    st.builds(lambda off: datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(-off)).isoformat(), positive),
)
time_texts = st.one_of(
    outside_utc,
    moments.map(datetime.isoformat),
    st.floats(allow_nan=True).map(str),
    st.integers().map(str),
    st.text(max_size=40),
    st.text(alphabet=string.digits + "-:T+Z. ", max_size=32),
)
cursor_texts = st.one_of(
    st.text(max_size=80),
    st.tuples(time_texts, st.one_of(st.uuids().map(str), st.text(max_size=40))).map(
        lambda parts: base64.urlsafe_b64encode(f"{parts[0]}|{parts[1]}".encode()).decode().rstrip("=")
    ),
    st.binary(max_size=60).map(lambda raw: base64.urlsafe_b64encode(raw).decode().rstrip("=")),
)
header_texts = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=300).map(
    lambda text: text.encode("latin-1")  # bytes: what reaches a server, non-ASCII included
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=15), children, max_size=6),
    max_leaves=25,
)
submit_like = st.fixed_dictionaries(
    {"age_months": st.integers(-5, 300) | st.text(max_size=5), "observations": st.text(max_size=60)},
    optional={
        "preferred_target": st.text(max_size=70),
        "sla_ms": json_values,
        "case_id": st.uuids().map(str) | st.text(max_size=40),
        "embedding_b64": st.text(max_size=40),
        "budget_usd": json_values,
    },
)


# --- the parsers, directly ---------------------------------------------------------------------


@hypothesis.seed(SEED)
@fuzzing
@hypothesis.given(text=time_texts)
def test_a_query_time_parses_to_utc_or_raises_value_error(text):
    try:
        parsed = utc_instant(text)
    except ValueError as exc:
        assert text.strip() not in str(exc) or len(text.strip()) < 3, "the message echoed the value"
        return
    assert parsed.utcoffset() == timedelta(0)
    assert parsed.tzinfo is UTC


@hypothesis.seed(SEED)
@fuzzing
@hypothesis.given(cursor=cursor_texts)
def test_a_cursor_decodes_to_an_aware_time_and_a_uuid_or_is_a_bad_request(cursor):
    try:
        created, job_id = jobs._decode_cursor(cursor)
    except BadRequest as exc:
        assert exc.field == "cursor"
        return
    assert created.utcoffset() == timedelta(0) and isinstance(job_id, uuid.UUID)


# --- through the app, on Postgres and Redis ---------------------------------------------------


@pytest.fixture
def client(pg_url, redis_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", pg_url)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("API_KEY", KEY)
    for name in ("GPU_MODEL_URL", "EDGE_AGENT_URL"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # configured, never called: the API only queues
    settings = load_settings()
    services = build_services(settings)
    with TestClient(create_app(services=services), raise_server_exceptions=False) as test_client:
        yield test_client
    services.redis.close()
    services.engine.dispose()


def assert_clean(response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["code"] and error["message"], response.text[:300]


@pytest.mark.postgres
@pytest.mark.redis
@hypothesis.seed(SEED)
@fuzzing
@hypothesis.given(
    endpoint=st.sampled_from(QUERY_ENDPOINTS),
    since=st.none() | time_texts,
    until=st.none() | time_texts,
    cursor=st.none() | cursor_texts,
    extra=st.dictionaries(
        st.sampled_from(["limit", "status", "target", "kind", "bucket", "points"]), st.text(max_size=20), max_size=3
    ),
)
def test_query_parameters_never_answer_5xx(client, endpoint, since, until, cursor, extra):
    params = {k: v for k, v in {"since": since, "until": until, "cursor": cursor, **extra}.items() if v is not None}
    response = client.get(endpoint, params=params, headers={"x-api-key": KEY})
    assert_clean(response)
    for name in ("since", "until", "cursor"):
        value = params.get(name, "")
        if response.status_code == 422 and len(value.strip()) > 3:
            assert value not in response.text, f"{name} was echoed"


@pytest.mark.postgres
@pytest.mark.redis
@hypothesis.seed(SEED)
@fuzzing
@hypothesis.given(
    idempotency_key=st.none() | header_texts,
    content_type=st.none()
    | header_texts
    | st.sampled_from([b"application/json", b"application/json; charset=latin-1"]),
    api_key=st.sampled_from([KEY.encode()]) | header_texts,
    body=submit_like,
)
def test_headers_never_answer_5xx(client, idempotency_key, content_type, api_key, body):
    headers = {"x-api-key": api_key}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    if content_type is not None:
        headers["content-type"] = content_type
    assert_clean(client.post("/api/submit", content=json.dumps(body).encode(), headers=headers))


@pytest.mark.postgres
@pytest.mark.redis
@hypothesis.seed(SEED)
@fuzzing
@hypothesis.given(endpoint=st.sampled_from(BODY_ENDPOINTS), body=json_values | submit_like)
def test_any_json_body_never_answers_5xx(client, endpoint, body):
    response = client.post(endpoint, json=body, headers={"x-api-key": KEY})
    assert_clean(response)


@pytest.mark.postgres
@pytest.mark.redis
@hypothesis.seed(SEED)
@fuzzing
@hypothesis.given(
    timestamp=time_texts | st.floats() | st.integers(),
    latency=st.floats(min_value=0, max_value=1e4) | st.floats() | st.text(max_size=10),
    target=st.sampled_from(["gpu", "edge-agent"]) | st.text(max_size=10),
)
def test_telemetry_samples_never_answer_5xx(client, timestamp, latency, target):
    sample = {"target": target, "latency_ms": latency, "timestamp": timestamp}
    response = client.post(
        "/api/telemetry",
        content=json.dumps(sample).encode(),
        headers={"x-api-key": KEY, "content-type": "application/json"},
    )
    assert_clean(response)


@pytest.mark.postgres
@pytest.mark.redis
@hypothesis.seed(SEED)
@fuzzing
@hypothesis.given(endpoint=st.sampled_from(BODY_ENDPOINTS), raw=st.binary(max_size=200))
def test_any_bytes_as_json_never_answer_5xx(client, endpoint, raw):
    response = client.post(endpoint, content=raw, headers={"x-api-key": KEY, "content-type": "application/json"})
    assert_clean(response)
