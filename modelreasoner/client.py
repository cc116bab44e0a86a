"""Calls one model server under one of the two contracts, with a hard deadline, and classifies
every way it can go wrong.

Inference contract: ``POST {url}/infer`` -> ``{risk_level, flagged_domains, rationale,
model_version}``. Runner contract: ``POST {url}/run`` -> ``{actual_latency_ms,
actual_cost_usd, output_ref}`` (and optionally ``output``). README "Model-server contracts".
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

from orchestrator import tracing
from orchestrator.errors import ModelCallError
from orchestrator.routing.types import Target
from orchestrator.url_policy import UrlPolicy

MAX_RESPONSE_BYTES = 1024 * 1024
"""A model answer is a few hundred bytes; anything past 1 MiB is a broken server."""
CONNECT_TIMEOUT_CAP_SECONDS = 2.0
"""Connecting to a healthy server takes milliseconds; waiting longer only delays failover."""
RISK_LEVELS = frozenset({"low", "moderate", "high"})


@dataclass(frozen=True)
class CallInput:
    """What a model server needs for one job. Holds PHI: never log it."""

    job_id: str
    sla_ms: int
    age_months: int | None = None
    observations: str | None = None
    embedding_b64: str | None = None
    task_type: str = "screening"
    payload: dict[str, Any] | None = None


@dataclass(frozen=True)
class CallResult:
    """A successful call: the result to store, the measured latency and the cost."""

    result: dict[str, Any]
    latency_ms: float
    cost_usd: float


def _infer_body(job: CallInput) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "age_months": job.age_months,
        "observations": job.observations or "",
        "embedding_b64": job.embedding_b64,
        "sla_ms": job.sla_ms,
    }


def _run_body(job: CallInput) -> dict[str, Any]:
    payload = job.payload if job.task_type != "screening" else _infer_body(job)
    return {"task_id": job.job_id, "task_type": job.task_type, "payload": payload, "sla_ms": job.sla_ms}


def validate_infer(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ModelCallError("invalid_response", "answer is not a JSON object")
    if data.get("risk_level") not in RISK_LEVELS:
        raise ModelCallError("invalid_response", "risk_level missing or not low|moderate|high")
    if not isinstance(data.get("flagged_domains"), list):
        raise ModelCallError("invalid_response", "flagged_domains missing or not a list")
    if not isinstance(data.get("rationale"), str) or not isinstance(data.get("model_version"), str):
        raise ModelCallError("invalid_response", "rationale or model_version missing")
    return data


def validate_run(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ModelCallError("invalid_response", "answer is not a JSON object")
    for name in ("actual_latency_ms", "actual_cost_usd"):
        if not isinstance(data.get(name), int | float) or isinstance(data.get(name), bool) or data[name] < 0:
            raise ModelCallError("invalid_response", f"{name} missing or not a non-negative number")
    if not isinstance(data.get("output_ref"), str):
        raise ModelCallError("invalid_response", "output_ref missing or not a string")
    return data


class ModelClient:
    """Calls model servers over a shared, thread-safe ``httpx.Client`` (connection pooling)."""

    def __init__(self, http: httpx.Client, url_policy: UrlPolicy | None = None) -> None:
        self._http = http
        self._url_policy = url_policy

    def call(self, target: Target, job: CallInput, timeout_s: float) -> CallResult:
        """One call to ``target``, finished within ``timeout_s`` in total or raise
        ``ModelCallError`` (kind: timeout, connect_error, transport_error, http_5xx, http_4xx,
        invalid_response, url_refused)."""
        if self._url_policy is not None:  # before every call: a refused URL is a failed attempt
            self._url_policy.check_call(target.url)
        run = target.contract == "run"
        url = f"{target.url}/run" if run else f"{target.url}/infer"
        body = _run_body(job) if run else _infer_body(job)
        started = time.perf_counter()
        with tracing.client_span("POST", url, target.name) as span:  # traceparent -> span.headers
            data = self._post(url, body, timeout_s, started, span)
            latency_ms = (time.perf_counter() - started) * 1000.0
            if run:
                checked = validate_run(data)
                return CallResult(result=checked, latency_ms=latency_ms, cost_usd=float(checked["actual_cost_usd"]))
            return CallResult(result=validate_infer(data), latency_ms=latency_ms, cost_usd=target.cost_per_call_usd)

    def _post(self, url: str, body: dict[str, Any], timeout_s: float, started: float, span) -> Any:
        timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, CONNECT_TIMEOUT_CAP_SECONDS))
        try:
            with self._http.stream("POST", url, json=body, timeout=timeout, headers=span.headers) as response:
                span.response(response.status_code)
                raw = self._read_capped(response, timeout_s, started)
        except httpx.ConnectTimeout:
            # Nothing accepted the connection: the target is unreachable, not slow.
            raise ModelCallError("connect_error", "could not connect in time (unreachable)") from None
        except httpx.TimeoutException:
            raise ModelCallError("timeout", f"no answer within {timeout_s * 1000:.0f} ms") from None
        except httpx.ConnectError:
            raise ModelCallError("connect_error", "connection refused or unreachable") from None
        except httpx.TransportError as exc:
            raise ModelCallError("transport_error", f"connection broke ({type(exc).__name__})") from None
        if response.status_code >= 500:
            raise ModelCallError("http_5xx", f"HTTP {response.status_code}", status=response.status_code)
        if response.status_code >= 400:
            raise ModelCallError("http_4xx", f"HTTP {response.status_code}", status=response.status_code)
        try:
            return json.loads(raw)
        except ValueError:
            raise ModelCallError("invalid_response", "answer is not valid JSON") from None

    @staticmethod
    def _read_capped(response: httpx.Response, timeout_s: float, started: float) -> bytes:
        chunks, size = [], 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise ModelCallError("invalid_response", f"answer larger than {MAX_RESPONSE_BYTES} bytes")
            if time.perf_counter() - started > timeout_s:
                raise httpx.ReadTimeout("total deadline passed while reading")
            chunks.append(chunk)
        return b"".join(chunks)
