"""Telemetry pushed by targets and agents: parse, normalize, store, prune, and blend into routing.

A sample may give latency as ``latency_ms``, ``latency_s`` or a string with a unit (``"80ms"``,
``"0.08s"``, ``"500us"``); utilization as a fraction 0-1, a percent (any number above 1) or a
string such as ``"42%"``; and its time as epoch seconds, epoch milliseconds or ISO-8601 (a time
without a zone is UTC). Everything is stored normalized (ms, 0-1, USD, UTC) in
``telemetry_samples`` and folded into the routers' shared stats with ``Router.record_telemetry``.

Time rules: a sample up to ``FUTURE_SKEW_SECONDS`` ahead of the server clock is taken as "now"
(clock skew; a future time would otherwise mask every real sample after it); further ahead it
is refused. A sample older than the retention is dropped and counted, not refused: an agent
flushing an old buffer should not be stuck retrying it.

Retention: every batch prunes, for the targets it reports on, at most ``PRUNE_BATCH_ROWS`` rows
older than ``TELEMETRY_RETENTION_HOURS``. A batch holds at most ``MAX_SAMPLES_PER_BATCH``
samples, fewer than a prune removes, so a target's old rows never pile up faster than they go.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictFloat, WithJsonSchema
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from orchestrator.errors import BadRequest
from orchestrator.models import TelemetrySample
from orchestrator.routing import Router
from orchestrator.schemas import json_int

MAX_SAMPLES_PER_BATCH = 500
"""Samples in one POST; a minute of one-second samples from eight targets fits comfortably."""
LATENCY_MAX_MS = 3_600_000.0
"""One hour (ms). No model call takes longer; a larger value is a unit mistake."""
EPOCH_MS_THRESHOLD = 1e11
"""A numeric timestamp above this is epoch milliseconds: in seconds it would be after year 5000."""
EPOCH_MAX_SECONDS = 253_402_300_799.0
"""9999-12-31T23:59:59Z, the last second a datetime can hold."""
FUTURE_SKEW_SECONDS = 300.0
"""How far ahead of the server clock a sample may be (s) and still be taken as "now"."""
PRUNE_BATCH_ROWS = 1000
"""Most rows one request deletes (bounded work per request; larger than a full batch)."""

_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
_DURATION = re.compile(rf"^\s*{_NUMBER}\s*(ms|s|us|µs)\s*$", re.IGNORECASE)
_PERCENT = re.compile(rf"^\s*{_NUMBER}\s*%\s*$")
_MS_PER_UNIT = {"ms": 1.0, "s": 1000.0, "us": 0.001, "µs": 0.001}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_latency(value: Any) -> Any:
    """A duration string (``"80ms"``, ``"0.08s"``, ``"500us"``) in ms."""
    if value is None:
        return None
    if _number(value):
        raise ValueError("a bare number needs a unit: use latency_ms, latency_s or a string such as '80ms'")
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError("must be a duration such as '80ms', '0.08s' or '500us'")
    per_unit = _MS_PER_UNIT.get(match.group(2).lower())
    if per_unit is None:  # IGNORECASE also folds letters such as U+017F (long s) onto "s"
        raise ValueError("must be a duration such as '80ms', '0.08s' or '500us'")
    return float(match.group(1)) * per_unit


def parse_utilization(value: Any) -> Any:
    """A fraction 0-1, a percent (a number above 1, up to 100) or ``"42%"``, as a fraction."""
    if value is None:
        return None
    if _number(value):
        if value > 100:
            raise ValueError("must be a fraction 0-1 or a percent 0-100")
        return value / 100.0 if value > 1 else value
    match = _PERCENT.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError("must be a fraction 0-1, a percent 0-100, or a string such as '42%'")
    percent = float(match.group(1))
    if percent > 100:
        raise ValueError("must be a fraction 0-1 or a percent 0-100")
    return percent / 100.0


def parse_timestamp(value: Any) -> Any:
    """Epoch seconds, epoch milliseconds or ISO-8601 (no zone: UTC), as epoch seconds."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            return _iso_seconds(text)
    if not _number(value) or not math.isfinite(value) or value < 0:
        raise ValueError("must be epoch seconds (or ms) or an ISO-8601 time")
    seconds = value / 1000.0 if value > EPOCH_MS_THRESHOLD else float(value)
    if seconds > EPOCH_MAX_SECONDS:
        raise ValueError("must be epoch seconds (or ms) or an ISO-8601 time")
    return seconds


def _iso_seconds(text: str) -> float:
    """An ISO-8601 time (no zone: UTC) as epoch seconds; one that does not exist in UTC
    (0001-01-01T00:00:00+05:00, 9999-12-31T23:59:59-05:00) is refused, not a 500 later."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("must be epoch seconds (or ms) or an ISO-8601 time") from None
    seconds = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    if not 0 <= seconds <= EPOCH_MAX_SECONDS:
        raise ValueError("must be epoch seconds (or ms) or an ISO-8601 time")
    return seconds


_UPTO = {digits: rf"(?:[0-9]{{1,{digits}}}(?:\.[0-9]+)?|\.[0-9]+)" for digits in (2, 3, 6)}
LATENCY_TEXT_PATTERN = rf"^\s*(?:{_UPTO[6]}\s*(?:[mM]|[uU]|µ)[sS]|{_UPTO[3]}\s*[sS])\s*$"
"""The duration strings the document offers: within LATENCY_MAX_MS by their digits (at most
999999 ms or us, 999 s). The parser also takes longer forms (exponents, more digits) when the
value is in range."""
PERCENT_TEXT_PATTERN = rf"^\s*(?:100(?:\.0+)?|{_UPTO[2]})\s*%\s*$"
"""A percent string within 0-100 (the parser also takes longer forms of the same values)."""
TIMESTAMP_MAX = EPOCH_MAX_SECONDS * 1000.0
"""The largest numeric timestamp: 9999-12-31T23:59:59Z in epoch milliseconds."""


def _nullable(*schemas: dict[str, Any]) -> WithJsonSchema:
    return WithJsonSchema({"anyOf": [*schemas, {"type": "null"}], "default": None})


class SampleIn(BaseModel):
    """One telemetry sample as sent. Validators normalize units; ``normalize`` does the rest."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    target: str = Field(..., min_length=1, max_length=64)
    latency_ms: StrictFloat | None = Field(None, ge=0, le=LATENCY_MAX_MS)
    latency_s: StrictFloat | None = Field(None, ge=0, le=LATENCY_MAX_MS / 1000)
    latency: Annotated[
        float | None,
        BeforeValidator(parse_latency),
        _nullable({"type": "string", "pattern": LATENCY_TEXT_PATTERN}),
    ] = Field(None, ge=0, le=LATENCY_MAX_MS)
    utilization: Annotated[
        float | None,
        BeforeValidator(parse_utilization),
        _nullable(
            {"type": "number", "minimum": 0, "maximum": 100},
            {"type": "string", "pattern": PERCENT_TEXT_PATTERN},
        ),
    ] = Field(None, ge=0, le=1)
    queue_depth: json_int(ge=0, le=1_000_000) | None = None
    cost_usd: StrictFloat | None = Field(None, ge=0, le=1000)
    up: StrictBool | None = None
    timestamp: Annotated[
        float | None,
        BeforeValidator(parse_timestamp),
        _nullable({"type": "number", "minimum": 0, "maximum": TIMESTAMP_MAX}, {"type": "string", "minLength": 1}),
    ] = None
    source: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:@/-]+$")


class SampleBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    samples: list[SampleIn] = Field(..., min_length=1, max_length=MAX_SAMPLES_PER_BATCH)


@dataclass(frozen=True)
class Sample:
    """A normalized sample: latency in ms, utilization 0-1, cost in USD, ``at`` in UTC."""

    target: str
    at: datetime
    source: str
    latency_ms: float | None = None
    utilization: float | None = None
    queue_depth: int | None = None
    cost_usd: float | None = None
    up: bool | None = None


METRICS = ("latency_ms", "latency_s", "latency", "utilization", "queue_depth", "cost_usd", "up")
LATENCIES = ("latency_ms", "latency_s", "latency")


def _given(*names: str) -> dict[str, Any]:
    """JSON Schema: every one of ``names`` is present and not null."""
    return {"required": list(names), "properties": {name: {"not": {"type": "null"}} for name in names}}


def body_schema() -> dict[str, Any]:
    """The request body ``parse_body`` and ``normalize`` accept, for the OpenAPI document: one
    sample, or ``{"samples": [...]}``; a sample gives at least one metric and at most one
    latency. (The target must exist and the time must not be ahead of the server's clock: rules
    a static schema cannot state.)"""
    sample = SampleIn.model_json_schema()
    sample["allOf"] = [
        {"anyOf": [_given(name) for name in METRICS]},
        {"not": {"anyOf": [_given(a, b) for i, a in enumerate(LATENCIES) for b in LATENCIES[i + 1 :]]}},
    ]
    batch = {
        "type": "object",
        "additionalProperties": False,
        "required": ["samples"],
        "properties": {"samples": {"type": "array", "minItems": 1, "maxItems": MAX_SAMPLES_PER_BATCH, "items": sample}},
    }
    return {"title": "Telemetry", "anyOf": [sample, batch]}


def parse_body(body: Any) -> list[tuple[str, SampleIn]]:
    """``(field prefix, sample)`` for a body that is one sample or ``{"samples": [...]}``.
    Raises pydantic's ValidationError, whose locations name the offending field."""
    if isinstance(body, dict) and "samples" in body:
        batch = SampleBatch.model_validate(body)
        return [(f"samples.{i}.", sample) for i, sample in enumerate(batch.samples)]
    return [("", SampleIn.model_validate(body))]


def normalize(
    raw: SampleIn, prefix: str, known: set[str], *, actor: str, now: datetime, retention: timedelta
) -> Sample | None:
    """The normalized sample, or None when it is older than the retention (dropped).
    Raises BadRequest naming the field (``samples.<i>.<field>``)."""
    if raw.target not in known:
        raise BadRequest(
            f"{prefix}target: no target named {raw.target!r} (GET /api/targets lists them)", field=prefix + "target"
        )
    given = [v for v in (raw.latency_ms, raw.latency_s, raw.latency) if v is not None]
    if len(given) > 1:
        raise BadRequest(f"{prefix}latency: give only one of latency_ms, latency_s, latency", field=prefix + "latency")
    latency_ms = raw.latency_s * 1000.0 if raw.latency_s is not None else (given[0] if given else None)
    if all(v is None for v in (latency_ms, raw.utilization, raw.queue_depth, raw.cost_usd, raw.up)):
        where = prefix.rstrip(".") or "body"
        raise BadRequest(
            f"{where}: a sample needs at least one of latency, utilization, queue_depth, cost_usd, up", field=where
        )
    at = now if raw.timestamp is None else datetime.fromtimestamp(raw.timestamp, UTC)
    if at > now + timedelta(seconds=FUTURE_SKEW_SECONDS):
        raise BadRequest(
            f"{prefix}timestamp: more than {FUTURE_SKEW_SECONDS:.0f} s in the future; check the sender's clock "
            "and the unit (epoch seconds, epoch ms or ISO-8601)",
            field=prefix + "timestamp",
        )
    if at < now - retention:
        return None
    return Sample(
        target=raw.target,
        at=min(at, now),
        source=raw.source or actor,
        latency_ms=latency_ms,
        utilization=raw.utilization,
        queue_depth=raw.queue_depth,
        cost_usd=raw.cost_usd,
        up=raw.up,
    )


def feed(router: Router, samples: Iterable[Sample]) -> None:
    """Blend samples into the shared routing stats, oldest first (a store keeps the newest)."""
    for sample in sorted(samples, key=lambda s: s.at):
        router.record_telemetry(
            sample.target,
            at=sample.at.timestamp(),
            latency_ms=sample.latency_ms,
            utilization=sample.utilization,
            queue_depth=sample.queue_depth,
            up=sample.up,
        )


def store(session: Session, samples: list[Sample], *, now: datetime, retention: timedelta) -> int:
    """Insert ``samples``, prune old rows of their targets, and commit. Returns rows pruned."""
    session.add_all(
        TelemetrySample(
            target=s.target,
            at=s.at,
            received_at=now,
            latency_ms=s.latency_ms,
            utilization=s.utilization,
            queue_depth=s.queue_depth,
            cost_usd=s.cost_usd,
            up=s.up,
            source=s.source,
        )
        for s in samples
    )
    pruned = prune(session, now - retention, targets={s.target for s in samples})
    session.commit()
    return pruned


def prune(session: Session, cutoff: datetime, *, targets: set[str] | None = None, limit: int = PRUNE_BATCH_ROWS) -> int:
    """Delete at most ``limit`` samples taken before ``cutoff`` (of ``targets``, or of every
    target when None). Rows another transaction is pruning are skipped, not waited for. The
    caller commits."""
    old = select(TelemetrySample.id).where(TelemetrySample.at < cutoff)
    if targets is not None:
        if not targets:
            return 0
        old = old.where(TelemetrySample.target.in_(sorted(targets)))
    old = old.limit(limit).with_for_update(skip_locked=True)
    result = session.execute(
        delete(TelemetrySample).where(TelemetrySample.id.in_(old)).execution_options(synchronize_session=False)
    )
    return result.rowcount or 0
