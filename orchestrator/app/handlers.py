"""The one place where errors become HTTP responses.

Every 4xx/5xx body is ``{"error": {"code", "message", "field"?}}``. Validation messages name
the field but never echo the submitted value: it may be a child's observations.
"""

from __future__ import annotations

import logging

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestrator.constants import RETRY_AFTER_SECONDS
from orchestrator.db import is_connection_error
from orchestrator.errors import (
    DatabaseUnavailable,
    OrchestratorError,
    QueueUnavailable,
    QuotaExceeded,
    ServiceUnavailable,
)
from orchestrator.metrics import DB_ERRORS

log = logging.getLogger(__name__)

POSTGRES_NUL_MESSAGE = "cannot contain NUL (0x00) characters"
"""What psycopg2 raises (a ValueError, before any SQL) for a NUL in a text parameter."""

DATA_ERROR_MESSAGE = (
    "a value cannot be stored (for example a NUL character or an unpaired surrogate in text or JSON, "
    "or a number out of range)"
)

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
}


def error_response(status: int, code: str, message: str, field: str | None = None, **extra) -> JSONResponse:
    body: dict = {"code": code, "message": message}
    if field:
        body["field"] = field
    body.update(extra)
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else None
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _field_name(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or (str(loc[0]) if loc else "body")


def _validation_message(errors: list[dict]) -> tuple[str, str | None, list[dict]]:
    fields = []
    for item in errors:
        invalid_json = item.get("type") == "json_invalid"
        name = "body" if invalid_json else _field_name(tuple(item.get("loc", ())))
        msg = "must be valid JSON" if invalid_json else item.get("msg", "invalid")
        msg = msg.removeprefix("Value error, ")
        fields.append({"field": name, "message": msg})
    first = fields[0] if fields else {"field": None, "message": "invalid request"}
    message = "; ".join(f"{f['field']}: {f['message']}" for f in fields) or "invalid request"
    return message, first["field"], fields


INVALID_JSON_ERRORS = [{"type": "json_invalid", "loc": ("body",)}]
"""What FastAPI reports for a body that is not JSON; a body that is not UTF-8 is answered alike."""

UNSUPPORTED_MEDIA_MESSAGE = "send application/json (the Content-Type of this request is not JSON)"


def invalid_json_response() -> JSONResponse:
    """The one answer to a body that cannot be read as JSON: not JSON, or not UTF-8."""
    message, field, fields = _validation_message(INVALID_JSON_ERRORS)
    return error_response(422, "validation_error", message, field, fields=fields)


def unsupported_media_response() -> JSONResponse:
    return error_response(415, "unsupported_media_type", UNSUPPORTED_MEDIA_MESSAGE)


def database_error_response(exc: SQLAlchemyError) -> JSONResponse:
    """503 when Postgres is unreachable; 422 when it refused a value validation let through."""
    DB_ERRORS.labels("api").inc()
    if is_connection_error(exc):
        unavailable = DatabaseUnavailable()
        log.warning("database unavailable", extra={"error": type(exc).__name__})
        return error_response(503, unavailable.code, unavailable.message)
    if isinstance(exc, DataError):
        log.warning("database refused a value", extra={"error": type(exc.orig).__name__})
        return error_response(422, "validation_error", DATA_ERROR_MESSAGE)
    return internal_error_response(exc, "database error")


def value_error_response(exc: ValueError) -> JSONResponse:
    """The Postgres driver refuses a NUL in text with a ValueError, before any SQL: a 422."""
    if POSTGRES_NUL_MESSAGE in str(exc):
        return error_response(422, "validation_error", "text inputs must not contain NUL characters")
    return internal_error_response(exc)


def internal_error_response(exc: Exception, what: str = "unhandled error") -> JSONResponse:
    log.error(what, exc_info=exc)
    return error_response(500, "internal_error", "Internal error; the request was not completed")


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(OrchestratorError)
    async def _domain(_: Request, exc: OrchestratorError) -> JSONResponse:
        if isinstance(exc, ServiceUnavailable):
            log.warning("backing service unavailable", extra={"code": exc.code})
        if isinstance(exc, QuotaExceeded):
            response = error_response(exc.status_code, exc.code, exc.message, limit=exc.limit)
            response.headers["Retry-After"] = str(exc.retry_after_s)
            return response
        return error_response(exc.status_code, exc.code, exc.message, exc.field)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, field, fields = _validation_message(list(exc.errors()))
        return error_response(422, "validation_error", message, field, fields=fields)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        response = error_response(exc.status_code, code, message)
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(SQLAlchemyError)
    async def _database(_: Request, exc: SQLAlchemyError) -> JSONResponse:
        return database_error_response(exc)

    @app.exception_handler(redis.RedisError)
    async def _redis(_: Request, exc: redis.RedisError) -> JSONResponse:
        unavailable = QueueUnavailable()
        log.warning("redis unavailable", extra={"error": type(exc).__name__})
        return error_response(503, unavailable.code, unavailable.message)

    @app.exception_handler(ValueError)
    async def _value(_: Request, exc: ValueError) -> JSONResponse:
        return value_error_response(exc)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        return internal_error_response(exc)
