"""Routing quality read from finished jobs: SLA violations and prediction accuracy per target."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from orchestrator import insights
from orchestrator.app.auth import OperateDep
from orchestrator.app.deps import SessionDep
from orchestrator.models import utcnow
from orchestrator.schemas import ErrorBody, ModelMetrics, QueryInstant, SlaEvents

ERRORS = {401: {"model": ErrorBody}, 422: {"model": ErrorBody}, 503: {"model": ErrorBody}}

router = APIRouter(prefix="/api", tags=["insights"], responses=ERRORS)

DEFAULT_WINDOW = timedelta(hours=24)
"""How far back both views look when ``since`` is not given."""
SLA_EVENTS_MAX = 200
MODEL_POINTS_MAX = 500


def _since(value: datetime | None) -> datetime:
    return utcnow() - DEFAULT_WINDOW if value is None else value


@router.get("/sla-events", response_model=SlaEvents, summary="Jobs that finished after their SLA")
def sla_events(
    session: SessionDep,
    _: OperateDep,
    limit: Annotated[int, Query(ge=1, le=SLA_EVENTS_MAX)] = 50,
    since: Annotated[QueryInstant | None, Query(description="ISO 8601; default: 24 h ago; no zone means UTC")] = None,
    target: Annotated[str | None, Query(max_length=64)] = None,
    bucket: Literal["minute", "hour"] = "minute",
) -> SlaEvents:
    """Completed jobs whose submit-to-finish time exceeded their SLA, newest first, with the
    target and the margin; plus violations per target per minute or hour (newest first)."""
    query = insights.SlaQuery(since=_since(since), limit=limit, target=target, bucket=bucket)
    return insights.sla_events(session, query)


@router.get("/model-metrics", response_model=ModelMetrics, summary="Predicted vs actual latency per target")
def model_metrics(
    session: SessionDep,
    _: OperateDep,
    since: Annotated[QueryInstant | None, Query(description="ISO 8601; default: 24 h ago; no zone means UTC")] = None,
    points: Annotated[int, Query(ge=1, le=MODEL_POINTS_MAX)] = 200,
) -> ModelMetrics:
    """Per target: MAE and bias of the predicted median, calibration of the predicted p95
    (share of actuals under it, ideal about 0.95), cost per job, and recent points."""
    return insights.model_metrics(session, since=_since(since), points=points)
