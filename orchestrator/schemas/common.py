"""Field types, validators and shapes shared by the API's request and response models: text that
Postgres can store, JSON numbers, UTC instants, embeddings, target URLs, a routing decision's JSON
and the error body every 4xx/5xx answer has.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field

from orchestrator.constants import EMBEDDING_MAX_VALUES

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


def with_decided_at_iso(decision: Any) -> Any:
    """A routing decision as stored (``decided_at``: epoch seconds, the pure policy's clock) plus
    ``decided_at_iso``: the same instant in ISO 8601 (UTC), like every other time in the API."""
    if isinstance(decision, dict) and isinstance(decision.get("decided_at"), int | float):
        return {**decision, "decided_at_iso": datetime.fromtimestamp(decision["decided_at"], UTC).isoformat()}
    return decision


Decision = Annotated[Any, AfterValidator(with_decided_at_iso)]
"""A routing decision's JSON (Decision.to_dict()), with ``decided_at_iso`` added."""


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer has this shape."""

    class Detail(BaseModel):
        code: str
        message: str
        field: str | None = None

    error: Detail
