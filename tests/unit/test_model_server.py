"""In-process tests of the reference model server (modelreasoner.server.app) over httpx's ASGI transport.

Stalling faults are checked with a short client-side deadline (asyncio.wait_for): the ASGI transport
has no network timeouts of its own. Faults that act below HTTP (headers then silence, or a dropped
connection) are checked by driving the ASGI app directly and recording what it sends.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import struct
from typing import Any

import httpx
import pytest

from modelreasoner.server.app import EmulatedConnectionDrop, create_app
from modelreasoner.server.emulation import Profile, profile_for_tier
from modelreasoner.server.screening import MODEL_VERSION

MARKER = "PHI-MARKER-7f3a9c"  # a unique string inside observations; must never come back or be logged
CLIENT_DEADLINE_S = 0.5
INFER_KEYS = {
    "risk_level",
    "flagged_domains",
    "rationale",
    "model_version",
    "milestones_flagged",
    "age_band_months",
    "disclaimer",
}


async def _requests(app: Any, calls: list[tuple[str, str, Any]], deadline: float | None) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://model.test") as client:
        out = []
        for method, path, body in calls:
            pending = client.request(method, path, json=body)
            out.append(await (asyncio.wait_for(pending, deadline) if deadline else pending))
        return out


def call(app: Any, method: str, path: str, body: Any = None, deadline: float | None = None) -> httpx.Response:
    """One request to the in-process app; ``deadline`` (s) emulates a client timeout."""
    return asyncio.run(_requests(app, [(method, path, body)], deadline))[0]


def infer_body(observations: str = "He doesn't kick a ball.", age: int = 24, **extra: Any) -> dict:
    return {"job_id": "job-1", "age_months": age, "observations": observations, "sla_ms": 2000, **extra}


def embedding(n: int) -> str:
    return base64.b64encode(struct.pack(f"<{n}f", *([0.5] * n))).decode()


@pytest.fixture
def app():
    return create_app()


@pytest.fixture
def admin_app():
    return create_app(Profile(seed=1), admin=True)


# ---------------------------------------------------------------- /healthz and /infer


def test_healthz_reports_tier_and_model_version():
    r = call(create_app(profile_for_tier("edge", latency_ms=0.0)), "GET", "/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "tier": "edge", "model_version": MODEL_VERSION}


def test_infer_happy_path(app):
    r = call(app, "POST", "/infer", infer_body("He doesn't kick a ball.", embedding_b64=embedding(8)))
    assert r.status_code == 200
    body = r.json()
    assert set(body) == INFER_KEYS
    assert body["risk_level"] == "moderate"
    assert body["flagged_domains"] == ["motor"]
    assert body["milestones_flagged"] == [{"domain": "motor", "milestone": "kicks a ball", "expected_by_months": 24}]
    assert "kicks a ball" in body["rationale"]
    assert body["age_band_months"] == 24


def test_infer_accepts_minimal_body_and_ignores_unknown_fields(app):
    r = call(app, "POST", "/infer", {"age_months": 60, "observations": "", "extra": 1})
    assert r.status_code == 200
    assert r.json()["risk_level"] == "insufficient_information", "an empty text is not screened as low risk"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"observations": f"{MARKER} walks"}, "age_months"),
        ({"age_months": 217, "observations": f"{MARKER} walks"}, "age_months"),
        ({"age_months": -1, "observations": MARKER}, "age_months"),
        ({"age_months": "24", "observations": MARKER}, "age_months"),
        ({"age_months": 24.5, "observations": MARKER}, "age_months"),
        ({"age_months": 24}, "observations"),
        ({"age_months": 24, "observations": MARKER + "x" * 4000}, "observations"),
        ({"age_months": 24, "observations": [MARKER]}, "observations"),
        ({"age_months": 24, "observations": MARKER, "embedding_b64": "%%%" + MARKER}, "embedding_b64"),
        ({"age_months": 24, "observations": MARKER, "embedding_b64": "AAA="}, "embedding_b64"),
        ({"age_months": 24, "observations": MARKER, "embedding_b64": embedding(4097)}, "embedding_b64"),
        ({"age_months": 24, "observations": MARKER, "sla_ms": -5}, "sla_ms"),
        ([MARKER], "body"),
    ],
)
def test_invalid_infer_is_422_naming_the_field_without_echoing_observations(app, body, field):
    r = call(app, "POST", "/infer", body)
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "validation_error"
    assert error["message"].startswith(f"{field}: ")
    assert MARKER not in r.text


def test_malformed_json_is_422(app):
    async def post_raw() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://model.test") as client:
            return await client.post("/infer", content=b'{"observations": "' + MARKER.encode(), headers={})

    r = asyncio.run(post_raw())
    assert r.status_code == 422
    assert r.json()["error"]["message"].startswith("body: ")
    assert MARKER not in r.text


def test_observations_are_never_logged(app, caplog):
    caplog.set_level(logging.DEBUG)
    call(app, "POST", "/infer", infer_body(f"{MARKER} doesn't walk"))
    call(app, "POST", "/infer", {"age_months": 999, "observations": MARKER})
    call(create_app(Profile(fail_rate=1.0)), "POST", "/infer", infer_body(MARKER))
    assert MARKER not in caplog.text


# ---------------------------------------------------------------- /run


def test_run_screening_returns_the_infer_output_cost_and_ref():
    app = create_app(profile_for_tier("gpu", latency_ms=0.0, fail_rate=0.0))
    payload = infer_body("She stopped saying mama.")
    r = call(app, "POST", "/run", {"task_id": "t-42", "task_type": "screening", "payload": payload, "sla_ms": 500})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"actual_latency_ms", "actual_cost_usd", "output_ref", "output"}
    assert body["output"] == call(app, "POST", "/infer", payload).json()
    assert body["output"]["risk_level"] == "high"
    assert body["actual_cost_usd"] == pytest.approx(0.0040)
    assert body["output_ref"] == "inline:t-42"
    assert isinstance(body["actual_latency_ms"], float) and body["actual_latency_ms"] >= 0.0


def test_run_other_task_types_return_a_deterministic_summary(app):
    def run(payload: Any) -> dict:
        r = call(app, "POST", "/run", {"task_id": "t", "task_type": "embed", "payload": payload})
        assert r.status_code == 200
        return r.json()["output"]

    first = run({"b": [1, 2], "a": "x"})
    assert first["task_type"] == "embed"
    assert len(first["payload_sha256"]) == 64
    assert run({"a": "x", "b": [1, 2]}) == first  # key order does not matter
    assert run({"a": "y", "b": [1, 2]}) != first
    assert run(None)["payload_sha256"] != first["payload_sha256"]


def test_run_reports_emulated_delay_in_actual_latency():
    app = create_app(Profile(latency_ms=60.0, cost_usd=0.5))
    body = call(app, "POST", "/run", {"task_id": "t", "task_type": "noop", "payload": {}}).json()
    assert body["actual_latency_ms"] >= 60.0
    assert body["actual_cost_usd"] == 0.5


def test_run_screening_with_invalid_payload_is_422_without_echo(app):
    payload = {"observations": MARKER}
    r = call(app, "POST", "/run", {"task_id": "t", "task_type": "screening", "payload": payload})
    assert r.status_code == 422
    assert r.json()["error"]["message"].startswith("payload.age_months: ")
    assert MARKER not in r.text
    r = call(app, "POST", "/run", {"task_type": "screening", "payload": infer_body(MARKER)})
    assert r.status_code == 422
    assert r.json()["error"]["message"].startswith("task_id: ")


# ---------------------------------------------------------------- /stats and capacity


def test_stats_counts_served_and_errors(app):
    async def scenario() -> dict:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://model.test") as client:
            for _ in range(3):
                await client.post("/infer", json=infer_body())
            return (await client.get("/stats")).json()

    stats = asyncio.run(scenario())
    assert stats["tier"] == "none"
    assert stats["served_total"] == 3
    assert stats["errors_total"] == 0
    assert stats["in_flight"] == 0
    assert stats["capacity"] == 1000
    assert stats["utilization"] == 0.0
    assert 0.0 < stats["p50_ms"] <= stats["p95_ms"]


def test_requests_beyond_capacity_queue_and_show_in_stats():
    app = create_app(Profile(latency_ms=150.0, capacity=2))

    async def scenario() -> tuple[dict, list[float]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://model.test") as client:
            body = {"task_id": "t", "task_type": "noop", "payload": {}}
            runs = [asyncio.create_task(client.post("/run", json=body)) for _ in range(4)]
            await asyncio.sleep(0.05)
            mid = (await client.get("/stats")).json()
            latencies = [(await r).json()["actual_latency_ms"] for r in runs]
            return mid, latencies

    mid, latencies = asyncio.run(scenario())
    assert mid["in_flight"] == 4
    assert mid["utilization"] == 1.0
    latencies.sort()
    assert latencies[0] >= 150.0
    assert latencies[-1] >= 290.0  # the last two waited for a free slot: about two service times


# ---------------------------------------------------------------- emulated failures and admin


def test_fail_rate_one_answers_503_json():
    app = create_app(Profile(fail_rate=1.0))
    r = call(app, "POST", "/infer", infer_body())
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "emulated_failure"
    assert call(app, "GET", "/stats").json()["errors_total"] == 1
    assert call(app, "GET", "/healthz").status_code == 200  # health is not emulated


def test_seeded_failures_repeat_exactly():
    def statuses() -> list[int]:
        app = create_app(Profile(fail_rate=0.5, seed=2024))
        calls = [("POST", "/infer", infer_body())] * 20
        return [r.status_code for r in asyncio.run(_requests(app, calls, None))]

    first = statuses()
    assert first == statuses()
    assert set(first) == {200, 503}


@pytest.mark.parametrize(("method", "path"), [("POST", "/admin/profile"), ("GET", "/admin/profile")])
def test_admin_is_404_unless_enabled(app, method, path):
    r = call(app, method, path, {"fail_rate": 1.0} if method == "POST" else None)
    assert r.status_code == 404
    assert call(app, "POST", "/infer", infer_body()).status_code == 200


def test_admin_profile_changes_behaviour(admin_app):
    calls = [
        ("POST", "/admin/profile", {"fail_rate": 1.0}),
        ("POST", "/infer", infer_body()),
        ("POST", "/admin/profile", {"fail_rate": 0.0, "fault": "http_500"}),
        ("POST", "/infer", infer_body()),
        ("POST", "/admin/profile", {"tier": "gpu", "latency_ms": 0.0, "fault": "none"}),
        ("POST", "/infer", infer_body()),
        ("GET", "/healthz", None),
        ("GET", "/admin/profile", None),
    ]
    r = asyncio.run(_requests(admin_app, calls, None))
    assert r[0].json()["fail_rate"] == 1.0
    assert r[1].status_code == 503
    assert r[3].status_code == 500
    assert r[4].json() == {
        "tier": "gpu",
        "latency_ms": 0.0,
        "jitter": 0.25,
        "fail_rate": 0.002,
        "capacity": 8,
        "cost_usd": 0.004,
        "seed": 1,
        "fault": "none",
    }
    assert r[6].json()["tier"] == "gpu"
    assert r[7].json() == r[4].json()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"fail_rate": 2}, "fail_rate"),
        ({"fault": "boom"}, "fault"),
        ({"latency": 5}, "latency"),
        ([], "body"),
    ],
)
def test_admin_rejects_invalid_changes(admin_app, changes, field):
    r = call(admin_app, "POST", "/admin/profile", changes)
    assert r.status_code == 422
    assert r.json()["error"]["message"].startswith(f"{field}: ")
    assert call(admin_app, "GET", "/admin/profile").json()["fail_rate"] == 0.0


# ---------------------------------------------------------------- fault modes


def test_fault_timeout_never_answers_within_the_client_deadline():
    app = create_app(Profile(fault="timeout"))
    with pytest.raises(TimeoutError):
        call(app, "POST", "/infer", infer_body(), deadline=CLIENT_DEADLINE_S)


def test_fault_http_500():
    r = call(create_app(Profile(fault="http_500")), "POST", "/run", {"task_id": "t", "task_type": "x"})
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "emulated_fault"


def test_fault_invalid_json_is_200_with_a_body_that_does_not_parse():
    r = call(create_app(Profile(fault="invalid_json")), "POST", "/infer", infer_body())
    assert r.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.content)


def _raw_asgi(body: bytes) -> tuple[dict, Any, Any, list[dict]]:
    """Scope and channels for driving the app directly; the client never disconnects."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/infer",
        "raw_path": b"/infer",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"model.test"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000),
        "server": ("model.test", 80),
    }
    sent: list[dict] = []
    delivered = False

    async def receive() -> dict:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict) -> None:
        sent.append(message)

    return scope, receive, send, sent


def test_fault_hang_after_headers_sends_200_headers_then_no_body():
    app = create_app(Profile(fault="hang_after_headers"))
    scope, receive, send, sent = _raw_asgi(json.dumps(infer_body()).encode())

    async def scenario() -> None:
        await asyncio.wait_for(app(scope, receive, send), CLIENT_DEADLINE_S)

    with pytest.raises(TimeoutError):
        asyncio.run(scenario())
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 200
    body_messages = [m for m in sent if m["type"] == "http.response.body"]
    assert all(not m.get("body") and m.get("more_body", False) for m in body_messages)


def test_fault_close_connection_aborts_after_headers():
    # Under uvicorn the exception makes the server close the socket mid-response (see the e2e test).
    app = create_app(Profile(fault="close_connection"))
    scope, receive, send, sent = _raw_asgi(json.dumps(infer_body()).encode())
    with pytest.raises(EmulatedConnectionDrop):
        asyncio.run(app(scope, receive, send))
    assert [m["type"] for m in sent] == ["http.response.start"]
    assert (b"content-length", b"512") in sent[0]["headers"]
