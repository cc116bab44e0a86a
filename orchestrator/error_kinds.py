"""Why a model call or a job failed: one typed vocabulary for calls, dispatch, the worker, the
reconciler, the router's learning, the simulated client and the benchmarks.

``ErrorKind`` is a ``StrEnum``: a member equals its text (``ErrorKind.TIMEOUT == "timeout"``),
so it is what ``jobs.error_kind`` stores, what the API shows and what ``Outcome.error_kind``
carries, and older code that compares with the text keeps working.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    # One model-server call (``ModelCallError.kind``, ``Outcome.error_kind``, attempt rows).
    TIMEOUT = "timeout"
    CONNECT_ERROR = "connect_error"
    TRANSPORT_ERROR = "transport_error"
    HTTP_5XX = "http_5xx"
    HTTP_4XX = "http_4xx"
    INVALID_RESPONSE = "invalid_response"
    URL_REFUSED = "url_refused"
    CANCELLED = "cancelled"
    """A hedge's loser, cancelled once the other call answered: teaches nothing about errors."""
    DEADLINE_PASSED = "deadline_passed"
    """A strict job's next call was not made: its deadline had passed (no request left)."""

    # A whole job (``jobs.error_kind`` of a ``failed`` job).
    NO_TARGETS = "no_targets"
    SLA_UNMEETABLE = "sla_unmeetable"
    NO_ELIGIBLE_TARGET = "no_eligible_target"
    ALL_TARGETS_FAILED = "all_targets_failed"
    DATABASE_UNAVAILABLE = "database_unavailable"
    INTERNAL_ERROR = "internal_error"
    ABANDONED = "abandoned"
    UNDELIVERABLE = "undeliverable"
    ERASED = "erased"


COST_BEARING = frozenset({ErrorKind.TIMEOUT, ErrorKind.HTTP_5XX, ErrorKind.INVALID_RESPONSE, ErrorKind.TRANSPORT_ERROR})
"""Failed calls the model server may still bill: it received the request."""

CALL_KINDS = frozenset(
    {
        ErrorKind.TIMEOUT,
        ErrorKind.CONNECT_ERROR,
        ErrorKind.TRANSPORT_ERROR,
        ErrorKind.HTTP_5XX,
        ErrorKind.HTTP_4XX,
        ErrorKind.INVALID_RESPONSE,
        ErrorKind.URL_REFUSED,
        ErrorKind.CANCELLED,
    }
)
"""The kinds one model-server call can end with."""
