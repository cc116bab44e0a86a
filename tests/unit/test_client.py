"""ModelClient: both contracts, and every way a model server can misbehave, classified."""

from __future__ import annotations

import json

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
