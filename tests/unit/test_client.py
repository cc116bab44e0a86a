"""ModelClient: both contracts, and every way a model server can misbehave, classified."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from modelreasoner.client import MAX_RESPONSE_BYTES, CallInput, ModelClient
from orchestrator.errors import ModelCallError
from orchestrator.routing import Target

INFER = Target("gpu", "gpu", url="http://gpu.test", cost_per_call_usd=0.004)
RUN = Target("gpu-runner", "gpu", url="http://runner.test", contract="run", cost_per_call_usd=0.004)
JOB = CallInput(job_id="j1", sla_ms=2000, age_months=24, observations="does not point")
GOOD = {"risk_level": "moderate", "flagged_domains": ["communication"], "rationale": "r", "model_version": "v1"}


def client_for(handler) -> ModelClient:
    return ModelClient(httpx.Client(transport=httpx.MockTransport(handler)))


def test_the_inference_contract_posts_the_case_and_validates_the_answer():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["url"], seen["body"] = str(request.url), json.loads(request.content)
        return httpx.Response(200, json=GOOD)

    result = client_for(handler).call(INFER, JOB, timeout_s=1.0)
    assert seen["url"] == "http://gpu.test/infer"
    assert seen["body"]["age_months"] == 24 and seen["body"]["observations"] == "does not point"
    assert result.result == GOOD and result.cost_usd == 0.004 and result.latency_ms >= 0


def test_the_runner_contract_posts_a_task_and_takes_the_reported_cost():
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert str(request.url) == "http://runner.test/run"
        assert body["task_id"] == "j1" and body["task_type"] == "screening" and body["payload"]["age_months"] == 24
        return httpx.Response(
            200, json={"actual_latency_ms": 12.5, "actual_cost_usd": 0.0031, "output_ref": "inline:j1"}
        )

    result = client_for(handler).call(RUN, JOB, timeout_s=1.0)
    assert result.cost_usd == 0.0031 and result.result["output_ref"] == "inline:j1"


@pytest.mark.parametrize(
    ("response", "kind"),
    [
        (httpx.Response(500, json={"error": "boom"}), "http_5xx"),
        (httpx.Response(503), "http_5xx"),
        (httpx.Response(404), "http_4xx"),
        (httpx.Response(200, content=b"<html>not json"), "invalid_response"),
        (httpx.Response(200, json=["a", "list"]), "invalid_response"),
        (httpx.Response(200, json={**GOOD, "risk_level": "catastrophic"}), "invalid_response"),
        (httpx.Response(200, json={k: v for k, v in GOOD.items() if k != "rationale"}), "invalid_response"),
        (httpx.Response(200, content=b"x" * (MAX_RESPONSE_BYTES + 1)), "invalid_response"),
    ],
)
def test_bad_answers_are_classified(response, kind):
    with pytest.raises(ModelCallError) as excinfo:
        client_for(lambda request: response).call(INFER, JOB, timeout_s=1.0)
    assert excinfo.value.kind == kind


@pytest.mark.parametrize(
    ("exception", "kind"),
    [
        (httpx.ReadTimeout("slow"), "timeout"),
        (httpx.ConnectTimeout("unreachable"), "connect_error"),
        (httpx.ConnectError("refused"), "connect_error"),
        (httpx.RemoteProtocolError("peer closed"), "transport_error"),
    ],
)
def test_transport_failures_are_classified(exception, kind):
    def handler(request: httpx.Request) -> httpx.Response:
        raise exception

    with pytest.raises(ModelCallError) as excinfo:
        client_for(handler).call(INFER, JOB, timeout_s=1.0)
    assert excinfo.value.kind == kind


def test_a_runner_answer_missing_its_cost_is_invalid():
    with pytest.raises(ModelCallError, match="actual_cost_usd") as excinfo:
        client_for(lambda r: httpx.Response(200, json={"actual_latency_ms": 1, "output_ref": "x"})).call(RUN, JOB, 1.0)
    assert excinfo.value.kind == "invalid_response"


def test_error_messages_carry_no_observations():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, text="echo: " + json.loads(request.content)["observations"])

    with pytest.raises(ModelCallError) as excinfo:
        client_for(handler).call(INFER, JOB, timeout_s=1.0)
    assert "does not point" not in str(excinfo.value)


# --- issue 11: strict answers, any exception typed, stale keep-alive connections ---------------------

NAN_BODY = json.dumps(GOOD)[:-1].encode() + b', "score": NaN}'
DEEP_33 = json.loads("[" * 32 + "1" + "]" * 32)
"""Inside the answer object: 33 levels in all, one past MAX_JSON_DEPTH."""


def raw(body: bytes, content_type: str = "application/json", status: int = 200, **headers: str) -> httpx.Response:
    """A response whose body is decoded only when read (as from a real server)."""
    return httpx.Response(status, stream=httpx.ByteStream(body), headers={"content-type": content_type, **headers})


@pytest.mark.parametrize(
    ("case", "response"),
    [
        ("risk_level is a list", httpx.Response(200, json={**GOOD, "risk_level": ["high"]})),
        ("1,000,000 brackets", raw(b"[" * 1_000_000)),
        ("gzip garbage", raw(b"\x1f\x8b\x08\x00garbage" * 20, **{"content-encoding": "gzip"})),
        ("NaN", raw(NAN_BODY)),
        ("Infinity", raw(NAN_BODY.replace(b"NaN", b"Infinity"))),
        ("a float overflowing to inf", raw(NAN_BODY.replace(b"NaN", b"1e400"))),
        ("an integer with 5,000 digits", raw(NAN_BODY.replace(b"NaN", b"7" * 5000))),
        ("NUL in a string", httpx.Response(200, json={**GOOD, "rationale": "a\u0000b"})),
        ("NUL in a key", httpx.Response(200, json={**GOOD, "x\u0000": 1})),
        ("a lone surrogate", raw(NAN_BODY.replace(b"NaN", b'"\\ud800"'))),
        ("nested 33 deep", raw(json.dumps({**GOOD, "deep": DEEP_33}).encode())),
        ("not UTF-8", raw(b'{"risk_level": "low", "flagged_domains": [], "rationale": "\xff", "model_version": "v"}')),
        ("flagged_domains of numbers", httpx.Response(200, json={**GOOD, "flagged_domains": [1, 2]})),
        ("model_version a number", httpx.Response(200, json={**GOOD, "model_version": 3})),
        ("a 200 HTML error page", raw(b"<html><h1>502 Bad Gateway</h1></html>", "text/html")),
        ("JSON sent as text/plain", raw(json.dumps(GOOD).encode(), "text/plain")),
        ("a redirect elsewhere", raw(b"{}", status=302, location="http://elsewhere.test/infer")),
        ("204 No Content", httpx.Response(204)),
    ],
)
def test_every_hostile_answer_is_an_invalid_response(case, response):
    with pytest.raises(ModelCallError) as excinfo:
        client_for(lambda request: response).call(INFER, JOB, timeout_s=1.0)
    assert excinfo.value.kind == "invalid_response", case


def test_an_answer_that_passes_can_always_be_stored():
    """What validation accepts round-trips through a strict JSON encoder (JSONB's rules)."""
    from modelreasoner.client import parse_answer

    accepted = parse_answer(json.dumps({**GOOD, "extra": {"nested": [1.5, -2, "ünïcode ✓"]}}).encode())
    assert json.loads(json.dumps(accepted, allow_nan=False)) == accepted


@pytest.mark.parametrize("risk", ["low", "moderate", "high", "insufficient_information"])
def test_every_contract_risk_level_is_a_valid_answer(risk):
    result = client_for(lambda r: httpx.Response(200, json={**GOOD, "risk_level": risk})).call(INFER, JOB, 1.0)
    assert result.result["risk_level"] == risk


def test_a_runner_answer_with_nan_cost_is_invalid():
    body = b'{"actual_latency_ms": 1, "actual_cost_usd": NaN, "output_ref": "x"}'
    with pytest.raises(ModelCallError) as excinfo:
        client_for(lambda r: raw(body)).call(RUN, JOB, 1.0)
    assert excinfo.value.kind == "invalid_response"


@pytest.mark.parametrize("exception", [ZeroDivisionError("bug"), RuntimeError("x"), KeyError("k"), MemoryError()])
def test_any_exception_class_leaves_the_client_as_a_model_call_error(exception):
    def handler(request: httpx.Request) -> httpx.Response:
        raise exception

    with pytest.raises(ModelCallError) as excinfo:
        client_for(handler).call(INFER, JOB, timeout_s=1.0)
    assert excinfo.value.kind in {"transport_error", "invalid_response"}
    assert type(exception).__name__ in excinfo.value.message, "named by its class, never by its text"


@pytest.fixture
def hostile():
    from tests.support.env import free_port
    from tests.support.hostile_server import serve

    server = serve(free_port(), "ok")
    yield server
    server.shutdown()
    server.server_close()


def hostile_target(server) -> Target:
    host, port = server.server_address
    return Target("edge", "edge", url=f"http://{host}:{port}", cost_per_call_usd=0.001)


def test_a_reused_connection_the_server_closed_is_retried_once_on_a_new_one(hostile, request):
    """Issue 11, defect 11, deterministically: the server answers one call with keep-alive, then
    reads the next request on that connection and closes it without a byte of answer (a server
    closing an idle connection just as the client reuses it). The call succeeds on a fresh
    connection, and the retry is counted."""
    from modelreasoner.client import STALE_RETRIES
    from tests.support.hostile_server import GOOD as HOSTILE_GOOD

    target = hostile_target(hostile)
    fresh = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))
    pooled, plain = httpx.Client(), httpx.Client()
    request.addfinalizer(lambda: [http.close() for http in (pooled, fresh, plain)])
    client = ModelClient(pooled, fresh=fresh)
    before = STALE_RETRIES.labels("edge")._value.get()
    assert client.call(target, JOB, 2.0).result == HOSTILE_GOOD
    hostile.state.mode = "stale"
    assert client.call(target, JOB, 2.0).result == HOSTILE_GOOD
    assert STALE_RETRIES.labels("edge")._value.get() == before + 1
    assert hostile.state.calls == 2, "the model answered each call once"
    # The control: the same race fails a plain pooled client, so the test reproduces it.
    plain.post(f"{target.url}/infer", json={})
    with pytest.raises(httpx.RemoteProtocolError):
        plain.post(f"{target.url}/infer", json={})


def test_a_new_connection_that_breaks_is_not_retried(hostile):
    """The request may have reached the server (it read it): never sent twice."""
    hostile.state.mode = "drop"
    with httpx.Client() as http, pytest.raises(ModelCallError) as excinfo:
        ModelClient(http, fresh=http).call(hostile_target(hostile), JOB, 2.0)
    assert excinfo.value.kind == "transport_error" and hostile.state.calls == 1


@pytest.mark.parametrize(("mode", "kind"), [("slow_drip", "timeout"), ("truncated", "transport_error")])
def test_slow_and_truncated_bodies_end_within_the_deadline(hostile, mode, kind):
    hostile.state.mode = mode
    started = time.monotonic()
    with httpx.Client() as http, pytest.raises(ModelCallError) as excinfo:
        ModelClient(http).call(hostile_target(hostile), JOB, 1.0)
    assert excinfo.value.kind == kind
    assert time.monotonic() - started < 2.0, "total deadline: at most the call timeout plus one read"


def test_the_keep_alive_expiry_is_below_uvicorns_idle_timeout():
    import inspect

    import uvicorn

    from modelreasoner.client import KEEPALIVE_EXPIRY_SECONDS

    server_idle = inspect.signature(uvicorn.Config).parameters["timeout_keep_alive"].default
    assert server_idle > KEEPALIVE_EXPIRY_SECONDS
