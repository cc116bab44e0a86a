"""Request and response models of targets (catalogue, registration, removal), the routing dry run
and telemetry.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictFloat, field_validator

from orchestrator.constants import AGE_MONTHS_MAX
from orchestrator.schemas.common import (
    RESERVED_TARGET_NAMES,
    TARGET_URL_PATTERN,
    RouteChoice,
    json_int,
    with_decided_at_iso,
)

# --- targets (GET /api/targets, POST /register_agent) -------------------------------------------


class TargetRegister(BaseModel):
    """A model server or agent to add to the catalogue (or replace, by name). Options left out
    take the tier's defaults."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        ...,
        min_length=1,
        max_length=64,
        pattern=r"^[a-z0-9][a-z0-9_.-]*$",
        description="Lower-case letters, digits, '.', '_' and '-', starting with a letter or digit",
    )
    tier: Literal["edge", "cloud", "gpu"]
    url: str = Field(
        ...,
        min_length=1,
        max_length=512,
        pattern=TARGET_URL_PATTERN,
        description="http(s)://host[:port][/path], no credentials, query or fragment",
    )
    contract: Literal["infer", "run"] = Field("infer", description="infer: POST /infer; run: POST /run")
    cost_per_call_usd: StrictFloat | None = Field(None, ge=0, le=1000, allow_inf_nan=False)
    capacity: json_int(ge=1, le=100_000) | None = Field(None, description="Calls served at once")
    prior_latency_ms: StrictFloat | None = Field(None, gt=0, le=3_600_000, allow_inf_nan=False)
    enabled: StrictBool = True
    override: StrictBool = Field(
        False, description="Required (with the admin scope) to replace or disable a target configured by env or file"
    )

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_TARGET_NAMES:
            raise ValueError(f"{value!r} is reserved")
        return value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parsed = urlsplit(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parsed.username is not None or parsed.password is not None:
            raise ValueError("must not contain credentials")
        if parsed.query or parsed.fragment:
            raise ValueError("must not have a query or fragment")
        try:
            parsed.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError:
            raise ValueError("has an invalid port") from None
        return value.rstrip("/")


class TargetStatsPublic(BaseModel):
    latency_p50_ms: float | None = Field(None, description="Predicted median of one more call now (ms)")
    latency_p95_ms: float | None = Field(None, description="Predicted p95 of one more call now (ms)")
    error_rate: float
    in_flight: int
    samples: float = Field(..., description="Decayed weight of observed calls; 0: prediction from the prior")
    calls: int
    failures: int


class CircuitPublic(BaseModel):
    state: Literal["closed", "half_open", "open"]
    until: datetime | None = Field(None, description="When an open circuit turns half-open")
    open_count: int


class TelemetryPublic(BaseModel):
    latency_ms: float | None
    utilization: float | None
    queue_depth: int | None
    up: bool | None
    at: datetime


class TargetPublic(BaseModel):
    name: str
    tier: str
    url: str
    contract: str
    cost_per_call_usd: float
    capacity: int
    prior_latency_ms: float
    timeout_seconds: float | None
    enabled: bool
    source: Literal["env", "file", "registered", "simulated"]
    stats: TargetStatsPublic
    circuit: CircuitPublic
    telemetry: TelemetryPublic | None


class TargetList(BaseModel):
    targets: list[TargetPublic]


class TargetReplaced(BaseModel):
    """What a registration replaced or a removal took away (never credentials)."""

    source: Literal["env", "file", "registered", "simulated"]
    url: str
    tier: str
    contract: str
    cost_per_call_usd: float
    enabled: bool


class TargetRegistered(TargetPublic):
    replaced: TargetReplaced | None = Field(None, description="The target of this name before; null: new name")


class TargetRemoved(BaseModel):
    name: str
    removed: TargetReplaced
    restored: TargetReplaced | None = Field(None, description="The configured target of this name, in use again")


# --- routing dry run (POST /api/route) ----------------------------------------------------------


class RouteDryRun(BaseModel):
    """A hypothetical job to route. Nothing is stored or queued."""

    model_config = ConfigDict(extra="forbid")

    sla_ms: json_int(ge=1, le=3_600_000) | None = Field(None, description="Latency SLA (ms); default DEFAULT_SLA_MS")
    preferred_target: RouteChoice = "auto"
    strict_sla: StrictBool = False
    budget_usd: StrictFloat | None = Field(None, ge=0, le=1000)
    age_months: json_int(ge=0, le=AGE_MONTHS_MAX) | None = Field(None, description="Informational only")
    kind: Literal["screening", "task"] = Field("screening", description="task: runner-contract targets only")


class RouteDryRunResult(BaseModel):
    decision: Annotated[dict[str, Any], AfterValidator(with_decided_at_iso)]
    targets_considered: int


# --- telemetry (POST /api/telemetry) ------------------------------------------------------------


class TelemetryAccepted(BaseModel):
    accepted: int = Field(..., description="Samples stored and blended into the routing stats")
    dropped: int = Field(0, description="Samples older than TELEMETRY_RETENTION_HOURS, ignored")
