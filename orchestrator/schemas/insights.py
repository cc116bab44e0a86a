"""Response models of the insights endpoints: SLA violations and the latency model's accuracy."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field


class SlaEvent(BaseModel):
    job_id: uuid.UUID
    kind: str
    target: str | None
    sla_ms: int
    total_ms: float = Field(..., description="Submit to finish (ms)")
    margin_ms: float = Field(..., description="total_ms - sla_ms (> 0)")
    finished_at: datetime


class SlaCount(BaseModel):
    target: str | None
    bucket_start: datetime
    violations: int


class SlaEvents(BaseModel):
    items: list[SlaEvent]
    counts: list[SlaCount]


class ModelPoint(BaseModel):
    at: datetime
    predicted_ms: float
    predicted_p95_ms: float | None
    actual_ms: float


class TargetModelMetrics(BaseModel):
    target: str
    jobs: int
    mae_ms: float
    bias_ms: float = Field(..., description="Mean of predicted - actual (ms); > 0: predictions too slow")
    p95_calibration: float | None = Field(None, description="Share of actuals <= predicted p95; ideal ~0.95")
    cost_per_job_usd: float | None
    points: list[ModelPoint]


class ModelMetrics(BaseModel):
    targets: list[TargetModelMetrics]
