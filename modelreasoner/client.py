"""Calls one model server under one of the two contracts, with a hard deadline, and classifies
every way it can go wrong.

Inference contract: ``POST {url}/infer`` -> ``{risk_level, flagged_domains, rationale,
model_version}``. Runner contract: ``POST {url}/run`` -> ``{actual_latency_ms,
actual_cost_usd, output_ref}`` (and optionally ``output``). README "Model-server contracts".
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import httpx

from orchestrator import tracing
from orchestrator.error_kinds import ErrorKind
from orchestrator.errors import ModelCallError
from orchestrator.metrics import STALE_RETRIES
from orchestrator.routing.types import Target
from orchestrator.url_policy import UrlPolicy

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 1024 * 1024
"""A model answer is a few hundred bytes; anything past 1 MiB is a broken server."""
MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects accepted in an answer (levels); the contracts need 3."""
CONNECT_TIMEOUT_CAP_SECONDS = 2.0
"""Connecting to a healthy server takes milliseconds; waiting longer only delays failover."""
KEEPALIVE_EXPIRY_SECONDS = 2.0
"""How long an idle pooled connection is reused (s): below every server's idle timeout (uvicorn
closes idle connections after 5 s, nginx after 75 s, cloud load balancers after 60 s), so the
client drops a connection before the server does. At exactly the server's timeout the two race,
and a request written to a connection the server is closing fails (issue 11, defect 11)."""
RISK_LEVELS = frozenset({"low", "moderate", "high", "insufficient_information"})
"""``insufficient_information``: the model recognised nothing it could judge; a valid answer."""
JSON_TYPES = ("application/json",)
STALE_CONNECTION_ERRORS = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
"""How a reused connection that the server closed fails when a request is written to it."""


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


def _invalid(message: str) -> ModelCallError:
    return ModelCallError(ErrorKind.INVALID_RESPONSE, message)


def validate_infer(data: Any) -> dict[str, Any]:
    """The inference contract's answer, type by type (a bad answer raises invalid_response)."""
    if not isinstance(data, dict):
        raise _invalid("answer is not a JSON object")
    risk = data.get("risk_level")
    if not isinstance(risk, str) or risk not in RISK_LEVELS:
        raise _invalid("risk_level missing or not low|moderate|high|insufficient_information")
    domains = data.get("flagged_domains")
    if not isinstance(domains, list) or not all(isinstance(d, str) for d in domains):
        raise _invalid("flagged_domains missing or not a list of strings")
    if not isinstance(data.get("rationale"), str) or not isinstance(data.get("model_version"), str):
        raise _invalid("rationale or model_version missing or not a string")
    return data


def validate_run(data: Any) -> dict[str, Any]:
    """The runner contract's answer, type by type (a bad answer raises invalid_response)."""
    if not isinstance(data, dict):
        raise _invalid("answer is not a JSON object")
    for name in ("actual_latency_ms", "actual_cost_usd"):
        value = data.get(name)
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise _invalid(f"{name} missing or not a non-negative number")
    if not isinstance(data.get("output_ref"), str):
        raise _invalid("output_ref missing or not a string")
    return data


def _reject_constant(name: str) -> None:
    raise _invalid(f"answer contains {name}, which JSON does not allow")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _invalid("answer contains a number too large for a float")
    return value


def parse_answer(raw: bytes) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity, every float finite, at most MAX_JSON_DEPTH levels,
    no NUL and no lone surrogate in any string or key. What passes can always be stored (JSONB)."""
    try:
        text = raw.decode("utf-8")
        data = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except ModelCallError:
        raise
    except RecursionError:
        raise _invalid(f"answer nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError:  # JSONDecodeError, UnicodeDecodeError, an integer with too many digits
        raise _invalid("answer is not valid JSON") from None
    _check_storable(data)
    return data


def _check_storable(data: Any) -> None:
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise _invalid(f"answer nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(value, str):
            _check_text(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                _check_text(key)
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)


def _check_text(value: str) -> None:
    if "\x00" in value:
        raise _invalid("answer contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _invalid("answer contains a lone surrogate") from None


class ModelClient:
    """Calls model servers over a shared, thread-safe ``httpx.Client`` (connection pooling).

    ``fresh`` (default: the same client) sends the one retry of a call whose reused connection
    the server had closed: a client without keep-alive, so a new connection. ``url_policy``, when
    given, is checked before every call: a refused URL is a failed attempt (``url_refused``)."""

    def __init__(
        self, http: httpx.Client, *, fresh: httpx.Client | None = None, url_policy: UrlPolicy | None = None
    ) -> None:
        self._http = http
        self._fresh = fresh or http
        self._url_policy = url_policy

    def call(self, target: Target, job: CallInput, timeout_s: float) -> CallResult:
        """One call to ``target``, finished within ``timeout_s`` in total or raise
        ``ModelCallError`` (kind: timeout, connect_error, transport_error, http_5xx, http_4xx,
        invalid_response, url_refused). Any other exception, of any class, while calling, reading,
        decoding or validating is mapped here too: nothing but a ModelCallError leaves this method."""
        if self._url_policy is not None:  # before every call: a refused URL is a failed attempt
            self._url_policy.check_call(target.url)
        run = target.contract == "run"
        url = f"{target.url}/run" if run else f"{target.url}/infer"
        body = _run_body(job) if run else _infer_body(job)
        started = time.perf_counter()
        try:
            with tracing.client_span("POST", url, target.name) as span:  # traceparent -> span.headers
                try:
                    return self._call(target, url, body, timeout_s, started, span, run)
                except Exception as exc:  # typed inside the span, so the span records the kind
                    raise classify(exc, timeout_s) from None
        except ModelCallError:
            raise
        except Exception as exc:  # the one boundary: a failed attempt, never a crashed job
            raise classify(exc, timeout_s) from None

    def _call(self, target: Target, url: str, body, timeout_s: float, started: float, span, run: bool) -> CallResult:
        raw = self._post_once_more_if_stale(url, body, timeout_s, started, span, target.name)
        data = parse_answer(raw)
        latency_ms = (time.perf_counter() - started) * 1000.0
        if run:
            checked = validate_run(data)
            return CallResult(result=checked, latency_ms=latency_ms, cost_usd=float(checked["actual_cost_usd"]))
        return CallResult(result=validate_infer(data), latency_ms=latency_ms, cost_usd=target.cost_per_call_usd)

    def _post_once_more_if_stale(self, url, body, timeout_s: float, started: float, span, target: str) -> bytes:
        """POST; if it failed on a reused connection before any byte of an answer came back (the
        server had closed it: it never read the request), POST once more on a fresh connection
        within the same total deadline, and count it."""
        events: list[str] = []
        try:
            return self._post(self._http, url, body, timeout_s, started, span, events)
        except STALE_CONNECTION_ERRORS as exc:
            if not _stale(events):
                raise classify(exc, timeout_s) from None
        left = timeout_s - (time.perf_counter() - started)
        if left <= 0:
            raise ModelCallError(ErrorKind.TIMEOUT, f"no answer within {timeout_s * 1000:.0f} ms")
        STALE_RETRIES.labels(target).inc()
        log.info("reused connection was closed by the server; retrying once on a new one", extra={"target": target})
        return self._post(self._fresh, url, body, left, time.perf_counter(), span, [])

    def _post(self, http: httpx.Client, url: str, body, timeout_s: float, started: float, span, events: list) -> bytes:
        timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, CONNECT_TIMEOUT_CAP_SECONDS))

        def trace(name: str, _info: dict) -> None:  # httpcore's trace hook: what happened on the wire
            events.append(name)

        with http.stream(
            "POST", url, json=body, timeout=timeout, headers=span.headers, extensions={"trace": trace}
        ) as response:
            span.response(response.status_code)
            if response.status_code >= 500:
                raise ModelCallError(ErrorKind.HTTP_5XX, f"HTTP {response.status_code}", status=response.status_code)
            if response.status_code >= 400:
                raise ModelCallError(ErrorKind.HTTP_4XX, f"HTTP {response.status_code}", status=response.status_code)
            if response.status_code >= 300:
                raise _invalid(f"HTTP {response.status_code}: redirects are not followed")
            if response.status_code != 200:
                raise _invalid(f"HTTP {response.status_code} instead of 200")
            content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type not in JSON_TYPES and not content_type.endswith("+json"):
                raise _invalid("answer is not application/json")
            return self._read_capped(response, timeout_s, started)

    @staticmethod
    def _read_capped(response: httpx.Response, timeout_s: float, started: float) -> bytes:
        chunks, size = [], 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise _invalid(f"answer larger than {MAX_RESPONSE_BYTES} bytes")
            if time.perf_counter() - started > timeout_s:
                raise httpx.ReadTimeout("total deadline passed while reading")
            chunks.append(chunk)
        return b"".join(chunks)


def _stale(events: list[str]) -> bool:
    """The failed request went out on a reused connection (no TCP connect was traced) and no
    answer header came back."""
    if not events:  # no trace (not an httpcore transport): nothing is known, nothing is retried
        return False
    reused = not any(e.startswith("connection.connect_tcp") for e in events)
    return reused and "http11.receive_response_headers.complete" not in events


def classify(exc: BaseException, timeout_s: float) -> ModelCallError:
    """Any exception raised while calling a target, as the typed failure of that attempt. The
    message names the exception's class only: its text may quote the answer."""
    if isinstance(exc, ModelCallError):
        return exc
    if isinstance(exc, httpx.ConnectTimeout):
        # Nothing accepted the connection: the target is unreachable, not slow.
        return ModelCallError(ErrorKind.CONNECT_ERROR, "could not connect in time (unreachable)")
    if isinstance(exc, httpx.TimeoutException):
        return ModelCallError(ErrorKind.TIMEOUT, f"no answer within {timeout_s * 1000:.0f} ms")
    if isinstance(exc, httpx.ConnectError):
        return ModelCallError(ErrorKind.CONNECT_ERROR, "connection refused or unreachable")
    if isinstance(exc, httpx.TransportError):
        return ModelCallError(ErrorKind.TRANSPORT_ERROR, f"connection broke ({type(exc).__name__})")
    if isinstance(exc, httpx.DecodingError):
        return _invalid("answer could not be decoded (content encoding)")
    if isinstance(exc, httpx.HTTPError | ValueError | TypeError | RecursionError | UnicodeError | LookupError):
        return _invalid(f"answer could not be read ({type(exc).__name__})")
    return ModelCallError(ErrorKind.TRANSPORT_ERROR, f"call failed ({type(exc).__name__})")
