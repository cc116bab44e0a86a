"""Pydantic request and response models of the HTTP API (tables live in ``models``)."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    field_validator,
)

from orchestrator.constants import AGE_MONTHS_MAX, EMBEDDING_MAX_VALUES, OBSERVATIONS_MAX_CHARS

RouteChoice = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="auto, a tier (edge, cloud, gpu) or a target name",
    ),
]
"""Where the submitter wants a job to go first; it still fails over from there."""
StatusName = Literal["queued", "running", "completed", "failed"]
RESERVED_TARGET_NAMES = frozenset({"auto", "other", "none", "unknown"})
"""Not target names: routing choices (auto) and the label values /metrics uses for 'no target'
and 'past the bound' (orchestrator.metrics)."""


def no_nul(value: str) -> str:
    """Refuse NUL characters: Postgres text cannot store them (the message never echoes the value)."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(no_nul)]
"""A request's free-text field that Postgres can store; use it for every text input."""


def not_blank(value: str) -> str:
    """Refuse text with nothing but whitespace: a screening of nothing is not a screening."""
    if not value.strip():
        raise ValueError("must contain some text (it is empty or only whitespace)")
    return value


INSTANT_PROBLEM = "must be an ISO 8601 date-time (2026-01-31T12:00:00Z; no zone means UTC) within years 1-9999 UTC"


def utc_instant(value: object) -> datetime:
    """Parse a time given in a query string: ISO 8601 text only (a bare number such as ``0.5`` is
    refused, not read as seconds since 1970), no zone meaning UTC, and the instant must exist in
    UTC (``0001-01-01T00:00:00+05:00`` does not). Returns an aware UTC datetime. The message never
    echoes the value."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(INSTANT_PROBLEM) from None
    else:
        raise ValueError(INSTANT_PROBLEM)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError(INSTANT_PROBLEM) from None


QueryInstant = Annotated[datetime, BeforeValidator(utc_instant)]
"""A time in a query parameter (``since``, ``until``), always returned in UTC; see utc_instant."""


_B64 = "[A-Za-z0-9+/]"
EMBEDDING_B64_PATTERN = rf"^(?:{_B64}{{16}})*(?:{_B64}{{6}}==|{_B64}{{11}}=)?$"
"""Padded base64 of a whole number of float32 values (4 bytes each): whole 12-byte groups (16
characters), then 4 bytes (6 characters and ``==``) or 8 bytes (11 and ``=``). The document
carries it, so a client's validator refuses what ``decode_embedding`` would."""
EMBEDDING_B64_MAX_CHARS = 4 * -(-EMBEDDING_MAX_VALUES * 4 // 3)
"""The base64 length of EMBEDDING_MAX_VALUES float32 values: with the pattern, no more values fit."""
_PORT = "(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
TARGET_URL_PATTERN = rf"^https?://(?:[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]{{2,45}}\])(?::{_PORT})?(?:/[^?#\s]*)?$"
"""An http(s) URL with a host name, IPv4 address or [IPv6] literal, an optional port (0-65535)
and path, and no credentials, query or fragment: ``TargetRegister._http_url``'s rules, in the
document too (the validator also parses an IPv6 literal, which a pattern can only outline)."""


def json_number(value: object) -> object:
    """Refuse what JSON Schema does not call a number: ``true``/``false`` and numeric text
    (``"24"``), which pydantic's lax mode would take as 1/0 and 24."""
    if isinstance(value, bool | str):
        raise ValueError("must be a JSON number")
    return value


def json_int(*, ge: int, le: int) -> Any:
    """An integer as JSON Schema defines it, ``ge`` to ``le``: ``24`` and ``24.0``, never ``true``
    or ``"24"``. (The bounds sit inside the type so that ``json_int(...) | None`` documents them.)"""
    return Annotated[int, Field(ge=ge, le=le), BeforeValidator(json_number)]


NOT_BLANK_PATTERN = r"^[^\x00]*[^\s\x1c-\x1f\x00][^\x00]*$"
"""Some text that is not whitespace (``str.isspace``'s, with \\x1c-\\x1f), and no NUL: the rules of
``not_blank`` and ``no_nul``, in the document too."""


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


def with_decided_at_iso(decision: Any) -> Any:
    """A routing decision as stored (``decided_at``: epoch seconds, the pure policy's clock) plus
    ``decided_at_iso``: the same instant in ISO 8601 (UTC), like every other time in the API."""
    if isinstance(decision, dict) and isinstance(decision.get("decided_at"), int | float):
        return {**decision, "decided_at_iso": datetime.fromtimestamp(decision["decided_at"], UTC).isoformat()}
    return decision


Decision = Annotated[Any, AfterValidator(with_decided_at_iso)]
"""A routing decision's JSON (Decision.to_dict()), with ``decided_at_iso`` added."""


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


# --- insights (GET /api/sla-events, GET /api/model-metrics) --------------------------------------


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
