"""Pure ASGI middleware: request metrics by route template, the request-body size limit, the
JSON body gate (415 for another content type, the invalid-JSON 422 for a body that is not UTF-8),
and each request's database deadline."""

from __future__ import annotations

import json
import time

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.app.handlers import HTTP_CODES, error_response, invalid_json_response, unsupported_media_response
from orchestrator.db import request_deadline
from orchestrator.metrics import observe_http
from orchestrator.settings import Settings

UNMATCHED_ROUTE = "unmatched"
"""Label for requests that matched no route, so random paths cannot explode label cardinality."""


class MetricsMiddleware:
    """Counts and times every HTTP request by method, route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED_ROUTE
            observe_http(scope["method"], template, status, time.perf_counter() - started)


class BodySizeLimitMiddleware:
    """Answers 413 when a request body exceeds ``max_bytes``, by Content-Length up front or by
    counting a streamed body, before the application parses any of it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI re-raises HTTPException from body parsing; the handler answers 413.
                    raise HTTPException(413, f"Request body exceeds {self.max_bytes} bytes")
            return message

        await self.app(scope, limited_receive, send)

    async def _reject(self, send: Send) -> None:
        body = json.dumps(
            {"error": {"code": "payload_too_large", "message": f"Request body exceeds {self.max_bytes} bytes"}}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
"""Methods whose body the API reads; every such route takes JSON."""


def is_json_media_type(content_type: bytes | None) -> bool:
    """``application/json`` or ``application/<anything>+json``, parameters (charset) ignored."""
    if not content_type:
        return False
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


class JsonBodyMiddleware:
    """Every request body the API reads is JSON in UTF-8 (RFC 8259). A body sent with another
    content type answers 415 ("send application/json") before anything parses it; a JSON body
    that is not valid UTF-8 answers exactly like invalid JSON (422, field ``body``), instead of
    the framework's own 400. Sits inside BodySizeLimitMiddleware, so what it reads is bounded."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        has_body = b"transfer-encoding" in headers or (declared is not None and declared.strip() not in (b"", b"0"))
        if not has_body:
            await self.app(scope, receive, send)
            return
        if not is_json_media_type(headers.get(b"content-type")):
            await unsupported_media_response()(scope, receive, send)
            return
        try:
            messages, body = await _read_body(receive)
        except HTTPException as exc:  # BodySizeLimitMiddleware's 413 while streaming
            await error_response(exc.status_code, HTTP_CODES.get(exc.status_code, "http_error"), exc.detail)(
                scope, receive, send
            )
            return
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            await invalid_json_response()(scope, receive, send)
            return
        await self.app(scope, _replay(messages, receive), send)


async def _read_body(receive: Receive) -> tuple[list[Message], bytes]:
    messages: list[Message] = []
    chunks: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return messages, b"".join(chunks)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


class DatabaseDeadlineMiddleware:
    """Gives each request one budget for all its Postgres waits (DB_REQUEST_BUDGET_SECONDS, from
    arrival): past it the database layer closes the connection it waits on and the request
    answers 503 database_unavailable. The deadline is a context variable, so it follows the
    request into the threads FastAPI runs sync endpoints and dependencies in."""

    def __init__(self, app: ASGIApp, budget_seconds: float) -> None:
        self.app = app
        self.budget_seconds = budget_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with request_deadline(self.budget_seconds):
            await self.app(scope, receive, send)


def install_request_guards(app: Starlette, settings: Settings) -> None:
    """The guards between the size limit and the routes: the JSON body gate and the deadline.
    Call before adding BodySizeLimitMiddleware (added later = further out), so the gate reads a
    bounded body."""
    app.add_middleware(JsonBodyMiddleware)
    app.add_middleware(DatabaseDeadlineMiddleware, budget_seconds=settings.db_request_budget_seconds)
