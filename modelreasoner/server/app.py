"""The reference model server's ASGI app: the screening baseline behind the inference (/infer) and
runner (/run) contracts, with per-instance tier emulation (latency, failures, capacity, cost, faults).

``cli.py`` serves it: ``python -m modelreasoner.server --tier edge --port 8001`` (options in
docs/model-server.md).
Request bodies hold PHI (observations): nothing here logs them, and validation errors name the field
without echoing the submitted value.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelreasoner.server.emulation import (
    LatencyWindow,
    Profile,
    apply_changes,
    make_rng,
    sample_outcome,
)
from modelreasoner.server.screening import MAX_AGE_MONTHS, MAX_OBSERVATION_CHARS, MODEL_VERSION, screen

logger = logging.getLogger("modelreasoner.server")

MAX_EMBEDDING_VALUES = 4096  # contract limit on float32 values in embedding_b64
MAX_EMBEDDING_B64_CHARS = 4 * ((MAX_EMBEDDING_VALUES * 4 + 2) // 3)  # base64 length of that many floats
FAULT_STALL_S = 3600.0  # "timeout"/"hang_after_headers" stall far beyond any client timeout
DISCONNECT_POLL_S = 0.25  # how often a stalled request checks whether its client has gone
SHUTDOWN_GRACE_S = 3.0  # stalled fault requests would otherwise hold shutdown for an hour
BROKEN_JSON_BODY = b'{"risk_level": "low", "flagged_domains": ['  # a truncated answer, as a crash would leave
DROP_DECLARED_LENGTH = b"512"  # close_connection promises this many body bytes, then sends none


class InferRequest(BaseModel):
    """Body of POST /infer, and the payload of a screening /run task."""

    model_config = ConfigDict(extra="ignore")

    job_id: str | None = None
    age_months: Annotated[int, Field(strict=True, ge=0, le=MAX_AGE_MONTHS)]
    observations: Annotated[str, Field(strict=True, max_length=MAX_OBSERVATION_CHARS)]
    embedding_b64: str | None = None
    sla_ms: Annotated[int, Field(strict=True, ge=0)] | None = None

    @field_validator("embedding_b64")
    @classmethod
    def _embedding_decodes(cls, value: str | None) -> str | None:
        """The baseline ignores the embedding but checks it is base64 float32 within the size limit."""
        if value is None:
            return None
        if len(value) > MAX_EMBEDDING_B64_CHARS:
            raise ValueError(f"more than {MAX_EMBEDDING_VALUES} float32 values")
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("not valid base64") from None
        if len(raw) % 4:
            raise ValueError("decoded length is not a whole number of float32 values")
        if len(raw) // 4 > MAX_EMBEDDING_VALUES:
            raise ValueError(f"more than {MAX_EMBEDDING_VALUES} float32 values")
        return value


class RunRequest(BaseModel):
    """Body of POST /run (runner contract)."""

    model_config = ConfigDict(extra="ignore")

    task_id: Annotated[str, Field(strict=True, min_length=1, max_length=256)]
    task_type: Annotated[str, Field(strict=True, min_length=1, max_length=128)]
    payload: dict[str, Any] | None = None
    sla_ms: Annotated[int, Field(strict=True, ge=0)] | None = None


class ProfileChanges(BaseModel):
    """Body of POST /admin/profile: any subset of the emulation options."""

    model_config = ConfigDict(extra="forbid")

    tier: str | None = None
    latency_ms: float | None = None
    jitter: float | None = None
    fail_rate: float | None = None
    capacity: Annotated[int, Field(strict=True)] | None = None
    cost_usd: float | None = None
    seed: Annotated[int, Field(strict=True)] | None = None
    fault: str | None = None


class _Runtime:
    """Mutable per-app state: the current profile, its RNG, the capacity slots and counters."""

    def __init__(self, profile: Profile, rng: random.Random | None) -> None:
        self.profile = profile
        self.rng = rng or make_rng(profile.seed)
        self.in_flight = 0  # requests inside emulation, queued or running
        self.busy = 0  # requests holding a capacity slot
        self.served_total = 0
        self.errors_total = 0
        self.latencies = LatencyWindow()
        self._slots: asyncio.Semaphore | None = None
        self._slots_loop: asyncio.AbstractEventLoop | None = None

    def slots(self) -> asyncio.Semaphore:
        """The capacity semaphore, created per event loop (tests run several loops in one process)."""
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots_loop is not loop:
            self._slots, self._slots_loop = asyncio.Semaphore(self.profile.capacity), loop
        return self._slots

    def set_profile(self, new: Profile, reseed: bool) -> None:
        # Requests already holding the old semaphore release it; new ones queue on the new one.
        if new.capacity != self.profile.capacity:
            self._slots = None
        if reseed:
            self.rng = make_rng(new.seed)
        self.profile = new


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _describe(errors: list[Any], prefix: str = "") -> str:
    """``<field>: <problem>`` for the first validation error, built from pydantic's message templates
    (which never contain the submitted value)."""
    err = errors[0] if errors else {}
    if err.get("type") == "json_invalid":
        return "body: invalid JSON"
    loc = [str(part) for part in err.get("loc", ()) if part != "body"]
    field = ".".join([p for p in (prefix, *loc) if p]) or "body"
    message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{field}: {message}"


def _sha256_json(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


async def _stall(request: Request) -> None:
    """Sleep up to FAULT_STALL_S, returning early once the client disconnects (frees the task)."""
    deadline = time.monotonic() + FAULT_STALL_S
    while time.monotonic() < deadline and not await request.is_disconnected():
        await asyncio.sleep(DISCONNECT_POLL_S)


class EmulatedConnectionDrop(Exception):
    """Raised after response headers to make the ASGI server close the connection mid-response."""


class _DropConnection(Response):
    """Sends headers promising a body, then aborts: the server closes the socket without a body."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", DROP_DECLARED_LENGTH)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        raise EmulatedConnectionDrop("emulated close_connection fault")


async def _fault_response(fault: str, request: Request) -> Response:
    """The deterministic fault behaviours (see docs/model-server.md)."""
    if fault == "timeout":
        await _stall(request)
        return _error(504, "emulated_timeout", "emulated timeout fault")
    if fault == "http_500":
        return _error(500, "emulated_fault", "emulated http_500 fault")
    if fault == "invalid_json":
        return Response(BROKEN_JSON_BODY, status_code=200, media_type="application/json")
    if fault == "hang_after_headers":

        async def body() -> AsyncIterator[bytes]:
            await _stall(request)
            yield b""

        return StreamingResponse(body(), status_code=200, media_type="application/json")
    return _DropConnection()


async def _emulated(rt: _Runtime, request: Request, work: Callable[[], Any]) -> tuple[Any, float] | Response:
    """Run ``work`` under the current profile: fault, capacity queue, delay, failure.

    Returns (output, handling latency in ms) or the error/fault response to send instead.
    """
    started = time.perf_counter()
    profile = rt.profile
    if profile.fault != "none":
        rt.errors_total += 1
        return await _fault_response(profile.fault, request)
    outcome = sample_outcome(profile, rt.rng)
    rt.in_flight += 1
    try:
        async with rt.slots():
            rt.busy += 1
            try:
                if outcome.delay_ms > 0:
                    await asyncio.sleep(outcome.delay_ms / 1000.0)
                output = None if outcome.fail else work()
            finally:
                rt.busy -= 1
    finally:
        rt.in_flight -= 1
    if outcome.fail:
        rt.errors_total += 1
        return _error(503, "emulated_failure", f"emulated transient failure (fail_rate {profile.fail_rate:g})")
    latency_ms = (time.perf_counter() - started) * 1000.0
    rt.served_total += 1
    rt.latencies.record(latency_ms, time.monotonic())
    return output, latency_ms


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "validation_error", _describe(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else "http_error"
        return _error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, EmulatedConnectionDrop):  # deliberate; the server closes the socket
            logger.error("unhandled %s while serving a request", type(exc).__name__)
        return _error(500, "internal_error", "internal error")


def _install_contract_routes(app: FastAPI, rt: _Runtime) -> None:
    @app.post("/infer")
    async def infer(body: InferRequest, request: Request) -> Response:
        result = await _emulated(rt, request, lambda: screen(body.age_months, body.observations).to_dict())
        return result if isinstance(result, Response) else JSONResponse(result[0])

    @app.post("/run")
    async def run(body: RunRequest, request: Request) -> Response:
        cost = rt.profile.cost_usd
        if body.task_type == "screening":
            try:
                task = InferRequest.model_validate(body.payload)
            except ValidationError as exc:
                return _error(422, "validation_error", _describe(exc.errors(), prefix="payload"))
            result = await _emulated(rt, request, lambda: screen(task.age_months, task.observations).to_dict())
        else:
            summary = {"task_type": body.task_type, "payload_sha256": _sha256_json(body.payload)}
            result = await _emulated(rt, request, lambda: summary)
        if isinstance(result, Response):
            return result
        output, latency_ms = result
        return JSONResponse(
            {
                "actual_latency_ms": round(latency_ms, 3),
                "actual_cost_usd": cost,
                "output_ref": f"inline:{body.task_id}",
                "output": output,
            }
        )


def _install_ops_routes(app: FastAPI, rt: _Runtime, admin: bool) -> None:
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "tier": rt.profile.tier, "model_version": MODEL_VERSION}

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        now, capacity = time.monotonic(), rt.profile.capacity
        return {
            "tier": rt.profile.tier,
            "in_flight": rt.in_flight,
            "capacity": capacity,
            "utilization": round(min(rt.busy, capacity) / capacity, 4),
            "served_total": rt.served_total,
            "errors_total": rt.errors_total,
            "p50_ms": round(rt.latencies.percentile(50, now), 3),
            "p95_ms": round(rt.latencies.percentile(95, now), 3),
        }

    if not admin:
        return  # the admin routes do not exist, so they answer 404

    @app.get("/admin/profile")
    async def get_profile() -> dict[str, Any]:
        return rt.profile.to_dict()

    @app.post("/admin/profile")
    async def set_profile(changes: ProfileChanges) -> Response:
        given = changes.model_dump(exclude_unset=True)
        try:
            new = apply_changes(rt.profile, given)
        except ValueError as exc:
            return _error(422, "validation_error", str(exc))
        rt.set_profile(new, reseed="seed" in given)
        logger.warning("emulation profile changed: %s", new.to_dict())
        return JSONResponse(new.to_dict())


def create_app(profile: Profile | None = None, *, admin: bool = False, rng: random.Random | None = None) -> FastAPI:
    """Build the model-server ASGI app.

    profile: emulation settings (default: tier "none", no emulation); admin: expose /admin/profile;
    rng: optional RNG to inject (default: seeded from ``profile.seed``).
    """
    rt = _Runtime(profile or Profile(), rng)
    app = FastAPI(title="pedi-orchestrator reference model server", version=MODEL_VERSION)
    app.state.runtime = rt
    _install_error_handlers(app)
    _install_contract_routes(app, rt)
    _install_ops_routes(app, rt, admin)
    return app
