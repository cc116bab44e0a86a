"""Request and response models of screening jobs, generic tasks and cases (submit, status, lists,
audit trail, erase, export).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictFloat, field_validator

from orchestrator.constants import AGE_MONTHS_MAX, OBSERVATIONS_MAX_CHARS
from orchestrator.principals import DEFAULT_TENANT
from orchestrator.schemas.common import (
    EMBEDDING_B64_MAX_CHARS,
    EMBEDDING_B64_PATTERN,
    NOT_BLANK_PATTERN,
    Decision,
    RouteChoice,
    StatusName,
    Text,
    decode_embedding,
    json_int,
    not_blank,
)


class JobCreate(BaseModel):
    """A screening case to submit. Unknown fields are rejected so typos are not silently lost."""

    model_config = ConfigDict(extra="forbid")

    case_id: uuid.UUID | None = Field(None, description="Existing case to attach this job to")
    age_months: json_int(ge=0, le=AGE_MONTHS_MAX) = Field(..., description="Child's age in months")
    observations: Annotated[Text, AfterValidator(not_blank)] = Field(
        ...,
        max_length=OBSERVATIONS_MAX_CHARS,
        pattern=NOT_BLANK_PATTERN,
        description="Free text describing the child (not blank, no NUL)",
    )
    embedding_b64: str | None = Field(
        None,
        min_length=1,
        max_length=EMBEDDING_B64_MAX_CHARS,
        pattern=EMBEDDING_B64_PATTERN,
        description="base64 of little-endian float32 values (1 to 4096; padded); leave out or null for none",
    )
    preferred_target: RouteChoice = "auto"
    sla_ms: json_int(ge=1, le=3_600_000) | None = Field(None, description="Latency SLA (ms)")
    strict_sla: StrictBool = Field(False, description="Fail fast when no target can meet the SLA")
    budget_usd: StrictFloat | None = Field(None, ge=0, le=1000, description="Per-job cost budget (USD)")

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


class OutcomePublic(BaseModel):
    """What happened to a job or task: shared by JobPublic and TaskPublic."""

    status: StatusName
    result: Any | None
    target: str | None
    routing: Decision | None = Field(
        None, description="The routing decision with every candidate (decided_at: epoch s; decided_at_iso: ISO 8601)"
    )
    error: str | None
    error_kind: str | None
    sla_ms: int
    sla_met: bool | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    latency_ms: float | None = Field(None, description="Measured model-call latency (ms)")
    total_ms: float | None = Field(None, description="Submit to finish (ms)")
    cost_usd: float | None
    attempts: list[AttemptPublic] = []
    erased: bool = Field(False, description="The PHI (inputs and result) was erased: those fields are null")


class JobPublic(OutcomePublic):
    """Everything the API says about one job."""

    job_id: uuid.UUID
    case_id: uuid.UUID | None
    kind: str
    preferred_target: str
    tenant: str = Field(DEFAULT_TENANT, description="The tenant the job belongs to (its submitting key's)")


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


# --- generic tasks (POST /route_task, GET /task/{id}) ------------------------------------------

TASK_PAYLOAD_MAX_DEPTH = 32
"""Deepest nesting of a task payload (levels). Real payloads are a few levels deep; a deeper one
is a mistake or an attack on the JSON tooling of every hop that handles it."""


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a JSON value, giving up (returning limit + 1) past ``limit``."""
    stack, deepest = [(value, 1)], 0
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


class TaskCreate(BaseModel):
    """A generic inference task. The payload is stored in Postgres only and sent to the chosen
    runner; it is never logged or echoed in an error."""

    model_config = ConfigDict(extra="forbid")

    task_type: str = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$")
    payload: dict[str, Any] = Field(..., description="JSON object passed to the runner as is")
    sla_ms: json_int(ge=1, le=3_600_000) | None = Field(None, description="Latency SLA (ms)")
    preferred_target: RouteChoice = "auto"
    strict_sla: StrictBool = Field(False, description="Fail fast when no target can meet the SLA")
    budget_usd: StrictFloat | None = Field(None, ge=0, le=1000, description="Per-task cost budget (USD)")
    consent: StrictBool | None = Field(None, description="Must be true: the submitter has consent to process")

    @field_validator("task_type")
    @classmethod
    def _not_screening(cls, value: str) -> str:
        if value == "screening":
            raise ValueError("screening cases go to POST /api/submit")
        return value

    @field_validator("payload")
    @classmethod
    def _shallow(cls, value: dict[str, Any]) -> dict[str, Any]:
        if _depth(value, TASK_PAYLOAD_MAX_DEPTH) > TASK_PAYLOAD_MAX_DEPTH:
            raise ValueError(f"must nest at most {TASK_PAYLOAD_MAX_DEPTH} levels deep")
        return value


class TaskAccepted(BaseModel):
    task_id: uuid.UUID
    status: StatusName
    status_url: str


class TaskPublic(OutcomePublic):
    """Everything the API says about one task."""

    task_id: uuid.UUID
    task_type: str | None


# --- cases (DELETE /api/cases/{case_id}, GET /api/cases/{case_id}/export) ----------------------


class CaseErased(BaseModel):
    """What DELETE /api/cases/{case_id} did. A second erase answers the same way, with every job
    under ``already_erased_job_ids``."""

    case_id: uuid.UUID
    erased_job_ids: list[uuid.UUID] = Field(description="Jobs whose PHI this request erased")
    already_erased_job_ids: list[uuid.UUID] = Field(description="Jobs whose PHI was erased before")
    cancelled_job_ids: list[uuid.UUID] = Field(
        description="Jobs still queued or running that this request ended (failed, error_kind erased)"
    )


class CaseExport(BaseModel):
    """Everything stored about a case (GET /api/cases/{case_id}/export)."""

    case: dict[str, Any]
    jobs: list[dict[str, Any]]
    audit: list[dict[str, Any]]
    exported_at: datetime
    exported_by: str
