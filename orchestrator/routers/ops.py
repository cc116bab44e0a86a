"""Operational endpoints: liveness, readiness and Prometheus metrics. No auth, no PHI."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from orchestrator.app.auth import auth_mode
from orchestrator.constants import RETRY_AFTER_SECONDS
from orchestrator.db import ping, request_deadline
from orchestrator.metrics import DB_ERRORS, REDIS_ERRORS

router = APIRouter(tags=["operations"])

READYZ_DEADLINE_SECONDS = 1.5
"""/readyz answers within this (s) plus a few ms, whatever its dependencies do: a check without
an answer by then counts as unavailable (503). Under the 2 s a typical readiness probe allows."""


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up. Never touches Postgres or Redis (nor a worker thread), so it is safe as
    a liveness probe: a hung dependency must not get the API restarted."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Postgres and Redis answered within READYZ_DEADLINE_SECONDS: 200, else 503 naming what is
    down. The checks run on threads of their own, not FastAPI's pool, so a pool full of requests
    stuck on a hung database cannot delay this answer. ``auth`` says how callers are
    authenticated: ``keys``, or ``dev-mode`` (no keys: everyone is an administrator)."""
    services = request.app.state.services
    probes = {
        "database": _probe(lambda: ping(services.engine), DB_ERRORS.labels("readyz").inc),
        "redis": _probe(services.redis.ping, REDIS_ERRORS.labels("readyz").inc),
    }
    await asyncio.wait(probes.values(), timeout=READYZ_DEADLINE_SECONDS)
    checks = {name: _verdict(future) for name, future in probes.items()}
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks, "auth": auth_mode(services.principals)},
        status_code=200 if ready else 503,
        headers=None if ready else {"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def _probe(check: Callable[[], object], count_failure: Callable[[], None]) -> asyncio.Future:
    """Run ``check`` on a daemon thread; the future holds "ok" or the failure's class name. The
    database check carries the same deadline, so a hung ping closes its connection and ends."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future = loop.create_future()

    def settle(outcome: str) -> None:
        if not future.done():
            future.set_result(outcome)

    def run() -> None:
        try:
            with request_deadline(READYZ_DEADLINE_SECONDS):
                check()
            outcome = "ok"
        except Exception as exc:
            count_failure()
            outcome = f"unavailable ({type(exc).__name__})"
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile (shutdown): nobody waits
            loop.call_soon_threadsafe(settle, outcome)

    threading.Thread(target=run, name="readyz-probe", daemon=True).start()
    return future


def _verdict(future: asyncio.Future) -> str:
    if future.done():
        return future.result()
    future.cancel()  # a late answer is dropped (settle checks done())
    return f"unavailable (no answer within {READYZ_DEADLINE_SECONDS} s)"


@router.get("/metrics", include_in_schema=False)
def metrics() -> Response:
    """Prometheus text exposition of this process's metrics plus live backlog state."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
