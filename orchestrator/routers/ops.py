"""Operational endpoints: liveness, readiness and Prometheus metrics. No auth, no PHI."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from orchestrator.app.auth import auth_mode
from orchestrator.app.deps import ServicesDep
from orchestrator.constants import RETRY_AFTER_SECONDS
from orchestrator.db import ping
from orchestrator.metrics import DB_ERRORS, REDIS_ERRORS

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up. Never touches Postgres or Redis, so it is safe as a liveness probe."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(services: ServicesDep) -> JSONResponse:
    """Postgres and Redis are reachable: 200, else 503 naming what is down. ``auth`` says how
    callers are authenticated: ``keys``, or ``dev-mode`` (no keys: everyone is an administrator)."""
    checks = {}
    try:
        ping(services.engine)
        checks["database"] = "ok"
    except Exception as exc:
        DB_ERRORS.labels("readyz").inc()
        checks["database"] = f"unavailable ({type(exc).__name__})"
    try:
        services.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        REDIS_ERRORS.labels("readyz").inc()
        checks["redis"] = f"unavailable ({type(exc).__name__})"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks, "auth": auth_mode(services.principals)},
        status_code=200 if ready else 503,
        headers=None if ready else {"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


@router.get("/metrics", include_in_schema=False)
def metrics() -> Response:
    """Prometheus text exposition of this process's metrics plus live backlog state."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
