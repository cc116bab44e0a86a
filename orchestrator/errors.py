"""The one exception tree of pedi-orchestrator.

    OrchestratorError                 500 internal_error
    ├── ConfigError                   (start-up only: names the variable, never reaches HTTP)
    ├── BadRequest                    422 validation_error
    ├── Unauthorized                  401 unauthorized
    ├── Forbidden                     403 forbidden
    ├── NotFound                      404 not_found
    ├── Conflict                      409 conflict
    │   └── IdempotencyConflict       409 idempotency_conflict
    ├── QuotaExceeded                 429 quota_exceeded (+ Retry-After, names the limit)
    ├── ServiceUnavailable            503 service_unavailable (+ Retry-After)
    │   ├── DatabaseUnavailable       503 database_unavailable
    │   └── QueueUnavailable          503 queue_unavailable
    └── RoutingError                  (worker side)
        ├── StatsContention           a shared-stats update kept losing races
        └── ModelCallError            one failed model-server call; ``kind`` says how

Domain code raises these; ``orchestrator.app.handlers`` turns them into HTTP responses in one
place. Messages must never contain PHI (observations, embeddings) or API keys.
"""

from __future__ import annotations

from orchestrator.error_kinds import ErrorKind


class OrchestratorError(Exception):
    """Root of every error this project raises on purpose."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str = "", *, field: str | None = None) -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.message = message or (self.__class__.__doc__ or self.code).strip()
        self.field = field


class ConfigError(OrchestratorError):
    """The configuration is invalid."""

    code = "config_error"


class BadRequest(OrchestratorError):
    """The request is invalid."""

    status_code = 422
    code = "validation_error"


class Unauthorized(OrchestratorError):
    """A valid API key is required."""

    status_code = 401
    code = "unauthorized"


class Forbidden(OrchestratorError):
    """The API key is valid, but this action is not allowed."""

    status_code = 403
    code = "forbidden"


class NotFound(OrchestratorError):
    """No such resource."""

    status_code = 404
    code = "not_found"


class Conflict(OrchestratorError):
    """The request conflicts with the current state."""

    status_code = 409
    code = "conflict"


class IdempotencyConflict(Conflict):
    """This Idempotency-Key was already used with a different request body."""

    code = "idempotency_conflict"


class QuotaExceeded(OrchestratorError):
    """The API key is over one of its quotas; retry after ``retry_after_s``."""

    status_code = 429
    code = "quota_exceeded"

    def __init__(self, limit: str, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.limit = limit
        """Which limit: rpm, max_in_flight or daily_budget_usd."""
        self.retry_after_s = retry_after_s


class ServiceUnavailable(OrchestratorError):
    """A backing service is unavailable; retry shortly."""

    status_code = 503
    code = "service_unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    """The database is unavailable; retry shortly."""

    code = "database_unavailable"


class QueueUnavailable(ServiceUnavailable):
    """The queue (Redis) is unavailable; retry shortly."""

    code = "queue_unavailable"


class RoutingError(OrchestratorError):
    """Routing could not produce a usable decision."""

    code = "routing_error"


class StatsContention(RoutingError):
    """A shared-stats update lost too many optimistic-transaction races in a row."""

    code = "stats_contention"


class ModelCallError(RoutingError):
    """One call to a model server failed.

    ``kind`` is an ``ErrorKind`` of ``CALL_KINDS`` (timeout, connect_error, http_5xx, ...;
    url_refused: the target URL policy refused the call). It is safe to log and to use as a
    metric label. Its text is accepted too, and checked: an unknown kind raises ValueError.
    """

    code = "model_call_failed"

    def __init__(self, kind: ErrorKind | str, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = ErrorKind(kind)
        self.status = status
