"""Pydantic request and response models of the HTTP API (tables live in ``models``)."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestrator.constants import AGE_MONTHS_MAX, EMBEDDING_MAX_VALUES, OBSERVATIONS_MAX_CHARS

PreferredTarget = Literal["auto", "edge", "cloud", "gpu"]
StatusName = Literal["queued", "running", "completed", "failed"]


def decode_embedding(value: str) -> bytes:
    """Decode base64 of little-endian float32 values; raise ValueError naming the problem."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be base64") from None
    if len(raw) % 4:
        raise ValueError("must decode to whole float32 values (a multiple of 4 bytes)")
    if len(raw) // 4 > EMBEDDING_MAX_VALUES:
        raise ValueError(f"must hold at most {EMBEDDING_MAX_VALUES} float32 values")
    if not raw:
        raise ValueError("must hold at least one value")
    return raw


class JobCreate(BaseModel):
    """A screening case to submit. Unknown fields are rejected so typos are not silently lost."""

    model_config = ConfigDict(extra="forbid")

    case_id: uuid.UUID | None = Field(None, description="Existing case to attach this job to")
    age_months: int = Field(..., ge=0, le=AGE_MONTHS_MAX, description="Child's age in months")
    observations: str = Field(..., max_length=OBSERVATIONS_MAX_CHARS, description="Free text")
    embedding_b64: str | None = Field(
        None,
        max_length=(EMBEDDING_MAX_VALUES * 4 * 4) // 3 + 4,
        description="base64 of little-endian float32 values (at most 4096)",
    )
    preferred_target: PreferredTarget = "auto"
    sla_ms: int | None = Field(None, ge=1, le=3_600_000, description="Latency SLA (ms)")
    strict_sla: bool = Field(False, description="Fail fast when no target can meet the SLA")
    budget_usd: float | None = Field(None, ge=0, le=1000, description="Per-job cost budget (USD)")

    @field_validator("embedding_b64")
    @classmethod
    def _valid_embedding(cls, value: str | None) -> str | None:
        if value is not None:
            decode_embedding(value)
        return value


class JobAccepted(BaseModel):
    job_id: uuid.UUID
    status: StatusName
    status_url: str


class AttemptPublic(BaseModel):
    target: str | None
    outcome: str | None
    latency_ms: float | None
    at: datetime
    error_kind: str | None = None
    hedge: bool = False


class JobPublic(BaseModel):
    """Everything the API says about one job."""

    job_id: uuid.UUID
    case_id: uuid.UUID | None
    kind: str
    status: StatusName
    result: Any | None
    target: str | None
    routing: Any | None = Field(None, description="The routing decision with every candidate")
    error: str | None
    error_kind: str | None
    preferred_target: str
    sla_ms: int
    sla_met: bool | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    latency_ms: float | None = Field(None, description="Measured model-call latency (ms)")
    total_ms: float | None = Field(None, description="Submit to finish (ms)")
    cost_usd: float | None
    attempts: list[AttemptPublic] = []


class JobSummary(BaseModel):
    job_id: uuid.UUID
    case_id: uuid.UUID | None
    kind: str
    status: StatusName
    target: str | None
    sla_ms: int
    sla_met: bool | None
    error_kind: str | None
    created_at: datetime
    finished_at: datetime | None
    latency_ms: float | None


class JobPage(BaseModel):
    items: list[JobSummary]
    next_cursor: str | None


class AuditPublic(BaseModel):
    event: str
    at: datetime
    actor: str
    target: str | None
    outcome: str | None
    latency_ms: float | None
    details: Any | None


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer has this shape."""

    class Detail(BaseModel):
        code: str
        message: str
        field: str | None = None

    error: Detail
