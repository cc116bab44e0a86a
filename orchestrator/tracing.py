"""Distributed tracing with OpenTelemetry: one trace per job, from the API request to the
model-server call.

    pedi-orchestrator-api     SERVER    POST /api/submit
                              PRODUCER    send pedi-screen         (trace context -> RQ job meta)
    pedi-orchestrator-worker  CONSUMER    process pedi-screen      (child of the producer span)
                              CLIENT        POST                   (traceparent -> model server)

Tracing is on when ``OTEL_COLLECTOR_URL`` (our setting: spans go to ``<url>/v1/traces``) or the
standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set, and
``OTEL_SDK_DISABLED`` is not ``true``. Otherwise nothing is installed and every helper here
returns at once: no provider, no exporter, no span objects.

Spans carry ids, route templates, targets, status codes and error kinds. Never observations,
embeddings, payloads, request bodies, raw paths, query strings or keys. Only W3C
``traceparent``/``tracestate`` cross process boundaries; ``baggage`` (free-form, client-supplied)
is neither accepted nor forwarded, so no client data can ride into Redis or to a model server.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.settings import Settings

log = logging.getLogger(__name__)

API_SERVICE = "pedi-orchestrator-api"
WORKER_SERVICE = "pedi-orchestrator-worker"
INSTRUMENTATION_NAME = "pedi-orchestrator"
TRACES_PATH = "/v1/traces"
"""OTLP/HTTP signal path appended to OTEL_COLLECTOR_URL (the standard variables are read by the exporter)."""
STANDARD_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
FLUSH_TIMEOUT_MILLIS = 5000
"""Longest a job process that is about to exit waits for its spans to reach the collector (ms)."""
MESSAGING_SYSTEM = "rq"
UNMATCHED_ROUTE = "unmatched"
"""Route of a request that matched no route: its raw path is user input and is not recorded."""

# Semantic-convention attribute names (opentelemetry-semantic-conventions, stable HTTP and
# incubating messaging). Spelled out so a semconv package bump cannot rename them silently.
HTTP_REQUEST_METHOD = "http.request.method"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
HTTP_ROUTE = "http.route"
URL_PATH = "url.path"
URL_SCHEME = "url.scheme"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"
MESSAGING_SYSTEM_ATTR = "messaging.system"
MESSAGING_DESTINATION = "messaging.destination.name"
MESSAGING_OPERATION_TYPE = "messaging.operation.type"
MESSAGING_OPERATION_NAME = "messaging.operation.name"
MESSAGING_MESSAGE_ID = "messaging.message.id"
TARGET_ATTR = "pedi.target"
JOB_STATUS_ATTR = "pedi.job.status"

_propagator = TraceContextTextMapPropagator()


@dataclass
class _State:
    tracer: Tracer | None = None
    provider: object | None = None
    pid: int = 0
    """The process that configured tracing; a forked child inherits it and must flush itself."""
    per_job_process: bool = False
    """Configured by a job in a process that exits after the job (a bare ``rq worker`` fork)."""


_state = _State()


def enabled() -> bool:
    return _state.tracer is not None


def _wanted(settings: Settings) -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(settings.otel_collector_url or any(os.environ.get(name) for name in STANDARD_ENDPOINT_VARS))


def _otlp_exporter(settings: Settings):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    if settings.otel_collector_url:
        url = settings.otel_collector_url
        return OTLPSpanExporter(endpoint=url if url.endswith(TRACES_PATH) else url + TRACES_PATH)
    return OTLPSpanExporter()  # endpoint, headers, TLS and timeout from the standard OTEL_* variables


def _resource(service_name: str):
    """``service_name`` unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES name the service."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    detected = Resource.create()
    if str(detected.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        detected = detected.merge(Resource({SERVICE_NAME: service_name}))
    return detected


def configure_tracing(settings: Settings, service_name: str, *, exporter=None, per_job_process: bool = False) -> bool:
    """Install a tracer provider exporting spans over OTLP/HTTP (batched) when tracing is wanted,
    or to ``exporter`` when one is given (tests). Idempotent: a process that already has one
    (its own, or inherited through fork) keeps it. Returns whether tracing is on."""
    if _state.tracer is not None:
        return True
    if exporter is None and not _wanted(settings):
        return False
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=_resource(service_name))
    provider.add_span_processor(BatchSpanProcessor(exporter or _otlp_exporter(settings)))
    # Not registered as the global provider: libraries that trace on their own once one is set
    # (FastAPI's native telemetry records raw paths and query strings) stay silent.
    _state.provider = provider
    _state.tracer = provider.get_tracer(INSTRUMENTATION_NAME)
    _state.pid = os.getpid()
    _state.per_job_process = per_job_process
    log.info("tracing on", extra={"service": service_name, "per_job_process": per_job_process})
    return True


def flush() -> None:
    """Send every finished span now (blocks up to FLUSH_TIMEOUT_MILLIS)."""
    if _state.provider is not None:
        _state.provider.force_flush(FLUSH_TIMEOUT_MILLIS)


def flush_if_process_ends_with_job() -> None:
    """A forked RQ job process ends with ``os._exit``, which skips the exporter's exit hook:
    flush there. A long-lived process (API, threaded worker) keeps batching."""
    if _state.provider is not None and (_state.per_job_process or os.getpid() != _state.pid):
        flush()


def shutdown_tracing() -> None:
    """Flush, stop the exporter and return to no-op tracing (process exit, tests)."""
    if _state.provider is not None:
        _state.provider.shutdown()
    _state.tracer = _state.provider = None
    _state.per_job_process = False


def _fail(span, kind: str) -> None:
    span.set_attribute(ERROR_TYPE, kind)
    span.set_status(StatusCode.ERROR, kind)


def _error_kind(exc: BaseException) -> str:
    return str(getattr(exc, "kind", None) or type(exc).__name__)


def _current_span(tracer: Tracer, name: str, kind: SpanKind, attributes: dict, context=None):
    """Start a span made current for the block. Exceptions are not recorded (their messages may
    carry data); callers mark failures with ``_fail`` and an error kind instead."""
    return tracer.start_as_current_span(
        name,
        context=context,
        kind=kind,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    )


def _messaging(queue_name: str, job_id: str, operation: str) -> dict[str, str]:
    return {
        MESSAGING_SYSTEM_ATTR: MESSAGING_SYSTEM,
        MESSAGING_DESTINATION: queue_name,
        MESSAGING_OPERATION_TYPE: operation,
        MESSAGING_OPERATION_NAME: "enqueue" if operation == "send" else operation,
        MESSAGING_MESSAGE_ID: job_id,
    }


@contextmanager
def producer_span(queue_name: str, job_id: str) -> Iterator[dict[str, str]]:
    """A PRODUCER span around putting ``job_id`` on ``queue_name``. Yields the trace context to
    store in the RQ job's meta (``{"traceparent": ...}``; empty when tracing is off)."""
    tracer = _state.tracer
    if tracer is None:
        yield {}
        return
    attributes = _messaging(queue_name, job_id, "send")
    with _current_span(tracer, f"send {queue_name}", SpanKind.PRODUCER, attributes) as span:
        carrier: dict[str, str] = {}
        _propagator.inject(carrier)
        try:
            yield carrier
        except Exception as exc:
            _fail(span, _error_kind(exc))
            raise


@contextmanager
def consumer_span(queue_name: str, job_id: str, meta: Mapping[str, object] | None) -> Iterator[object | None]:
    """A CONSUMER span for processing ``job_id``, child of the producer span whose context is
    in the RQ job's ``meta``. Yields the span (None when tracing is off)."""
    tracer = _state.tracer
    if tracer is None:
        yield None
        return
    carrier = {k: v for k, v in (meta or {}).items() if k in ("traceparent", "tracestate") and isinstance(v, str)}
    context = _propagator.extract(carrier)
    attributes = _messaging(queue_name, job_id, "process")
    with _current_span(tracer, f"process {queue_name}", SpanKind.CONSUMER, attributes, context) as span:
        try:
            yield span
        except BaseException as exc:
            _fail(span, _error_kind(exc))
            raise


def set_job_status(span, status: str | None) -> None:
    """Record the job's outcome (completed, failed, skipped) on its consumer span."""
    if span is not None and status:
        span.set_attribute(JOB_STATUS_ATTR, status)


class _NoCall:
    headers: Mapping[str, str] = MappingProxyType({})

    def response(self, status_code: int) -> None:
        return None


_NO_CALL = _NoCall()


class _Call:
    def __init__(self, span, headers: dict[str, str]) -> None:
        self.span = span
        self.headers = headers

    def response(self, status_code: int) -> None:
        self.span.set_attribute(HTTP_RESPONSE_STATUS_CODE, status_code)


@contextmanager
def client_span(method: str, url: str, target: str) -> Iterator[_Call | _NoCall]:
    """A CLIENT span for one HTTP call to a model server. The yielded object's ``headers``
    (W3C traceparent) go on the outgoing request; call ``response(status)`` once answered. An
    exception marks the span failed with its kind (ModelCallError.kind or the type name)."""
    tracer = _state.tracer
    if tracer is None:
        yield _NO_CALL
        return
    parts = urlsplit(url)
    attributes = {
        HTTP_REQUEST_METHOD: method,
        SERVER_ADDRESS: parts.hostname or "",
        SERVER_PORT: parts.port or (443 if parts.scheme == "https" else 80),
        URL_SCHEME: parts.scheme,
        URL_PATH: parts.path,  # our own contract path (/infer, /run); never a query
        TARGET_ATTR: target,
    }
    with _current_span(tracer, method, SpanKind.CLIENT, attributes) as span:
        headers: dict[str, str] = {}
        _propagator.inject(headers)
        try:
            yield _Call(span, headers)
        except Exception as exc:
            _fail(span, _error_kind(exc))
            raise


class TracingMiddleware:
    """Pure ASGI middleware: one SERVER span per HTTP request, named ``METHOD /route/{template}``,
    continuing the caller's trace when it sends a W3C ``traceparent``. A no-op pass-through
    when tracing is off."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracer = _state.tracer
        if tracer is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope.get("headers") or []
            if name in (b"traceparent", b"tracestate")
        }
        method = scope["method"]
        host, port = scope.get("server") or ("", 0)
        attributes = {HTTP_REQUEST_METHOD: method, URL_SCHEME: scope.get("scheme", "http"), SERVER_ADDRESS: host or ""}
        if port:
            attributes[SERVER_PORT] = port
        span = tracer.start_span(
            method, context=_propagator.extract(carrier), kind=SpanKind.SERVER, attributes=attributes
        )
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
                await self.app(scope, receive, send_wrapper)
        finally:
            self._finish(span, scope, method, status)

    @staticmethod
    def _finish(span, scope: Scope, method: str, status: int) -> None:
        route = getattr(scope.get("route"), "path", None) or UNMATCHED_ROUTE
        span.update_name(f"{method} {route}")
        # url.path holds the route template: path segments are user input and are not recorded.
        span.set_attributes({HTTP_ROUTE: route, URL_PATH: route, HTTP_RESPONSE_STATUS_CODE: status})
        if status >= 500:
            _fail(span, str(status))
        span.end()
