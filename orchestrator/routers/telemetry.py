"""Telemetry ingestion: targets and agents push latency, load and health samples."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from orchestrator import catalogue, telemetry
from orchestrator.app.auth import OperateDep
from orchestrator.app.deps import RouterDep, SessionDep, SettingsDep
from orchestrator.models import utcnow
from orchestrator.schemas import ErrorBody, TelemetryAccepted

ERRORS = {401: {"model": ErrorBody}, 413: {"model": ErrorBody}, 422: {"model": ErrorBody}, 503: {"model": ErrorBody}}

router = APIRouter(tags=["telemetry"], responses=ERRORS)

EXAMPLES = {
    "one sample": {"value": {"target": "gpu", "latency_ms": 80, "utilization": 0.42, "queue_depth": 3, "up": True}},
    "a batch, mixed units": {
        "value": {
            "samples": [
                {"target": "edge", "latency": "0.12s", "utilization": "55%", "timestamp": "2026-01-01T12:00:00Z"},
                {"target": "cloud", "latency_s": 0.4, "utilization": 37, "timestamp": 1767268800.5},
                {"target": "gpu", "up": False, "source": "gpu-agent-1"},
            ]
        }
    },
}


@router.post(
    "/api/telemetry",
    status_code=202,
    response_model=TelemetryAccepted,
    summary="Push telemetry samples (one, or up to 500 as {samples: [...]})",
    # The body is parsed by telemetry.parse_body (to name samples.<i>.<field>); document its rules.
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": telemetry.body_schema()}}}},
)
def ingest(
    body: Annotated[dict[str, Any], Body(openapi_examples=EXAMPLES)],
    session: SessionDep,
    settings: SettingsDep,
    routing: RouterDep,
    principal: OperateDep,
) -> TelemetryAccepted:
    """Normalize units (ms, 0-1, UTC), blend the samples into the routers' shared stats and
    store them in ``telemetry_samples`` (kept TELEMETRY_RETENTION_HOURS). The whole batch is
    refused (422, naming ``samples.<i>.<field>``) if any sample is invalid."""
    try:
        parsed = telemetry.parse_body(body)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_input=False)) from None
    now = utcnow()
    retention = timedelta(hours=settings.telemetry_retention_hours)
    known = {entry.target.name for entry in catalogue.entries(session, settings)}
    normalized = [
        telemetry.normalize(raw, prefix, known, actor=principal.key_id, now=now, retention=retention)
        for prefix, raw in parsed
    ]
    kept = [sample for sample in normalized if sample is not None]
    if kept:
        # Stats first: a retry after a database error re-blends identical samples, a no-op.
        telemetry.feed(routing, kept)
        telemetry.store(session, kept, now=now, retention=retention)
    return TelemetryAccepted(accepted=len(kept), dropped=len(normalized) - len(kept))
