"""The API app factory, and the module-level ASGI ``app`` built from it on first use.

Run either ``uvicorn orchestrator.app.main:app --port 9000`` or
``uvicorn orchestrator.app.main:create_app --factory --port 9000``: the same app, the same
defaults. Importing this module reads no setting and connects to nothing; ``app`` calls
``create_app()`` on its first ASGI call (uvicorn's lifespan start). Settings are read and
validated then, once; a bad variable stops the start with a message that names it. Logs are JSON
from the first line.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from orchestrator import __version__, fleet
from orchestrator.api_router import api_router
from orchestrator.app.auth import DEV_MODE, api_principals, auth_mode
from orchestrator.app.deps import Services
from orchestrator.app.handlers import install_handlers
from orchestrator.app.middleware import BodySizeLimitMiddleware, MetricsMiddleware, install_request_guards
from orchestrator.app.openapi import install_openapi
from orchestrator.db import make_engine
from orchestrator.errors import ConfigError
from orchestrator.logs import configure_logging
from orchestrator.metrics import StateCollector, register_state_collector
from orchestrator.models import init_db
from orchestrator.queue_rq import make_redis
from orchestrator.reconciler import Reconciler, actor_name
from orchestrator.retention import retention_overdue_probe
from orchestrator.settings import Settings, get_settings
from orchestrator.targets import configured_targets
from orchestrator.tracing import API_SERVICE, TracingMiddleware, configure_tracing

log = logging.getLogger("orchestrator.api")

NO_FASTAPI_TELEMETRY = {"tracing": False, "metrics": False, "logs": False, "auto_configure": False}
"""FastAPI's own OpenTelemetry spans record the raw path and query string (user input) and
forward client baggage; orchestrator.tracing's server span records the route template only."""

DESCRIPTION = """Durable, SLA-aware routing of pediatric developmental-screening cases to model
servers (edge, cloud, GPU). Submit a case, poll its status, read its routing explanation.
Every /api route needs an `x-api-key` header naming a principal (tenant and scopes: submit, read,
operate, admin) unless the server runs in dev mode (no keys configured).
Errors: every 4xx/5xx body is `{"error": {"code", "message", "field"?}}` (ErrorBody)."""


def build_services(settings: Settings) -> Services:
    engine = make_engine(settings)
    # On Postgres the submit routes get their own pool, autocommit from the start (orchestrator.intake).
    intake_engine = make_engine(settings, autocommit=True) if settings.is_postgres else None
    return Services.over(settings, engine, make_redis(settings), intake_engine=intake_engine)


def state_collector(services: Services) -> StateCollector:
    return StateCollector(
        queue_depth=partial(fleet.queue_depth, services.queue),
        oldest_queued_age=partial(fleet.oldest_queued_age_seconds, services.engine),
        jobs_by_status=partial(fleet.jobs_by_status, services.engine),
        workers_alive=partial(fleet.workers_alive, services.redis, services.queue),
        circuit_states=partial(fleet.circuit_states, services.redis),
        reconciler_last_pass_age=partial(fleet.reconciler_last_pass_age_seconds, services.redis),
        phi_retention_overdue=(
            retention_overdue_probe(services.sessions, services.settings.phi_retention_days)
            if services.settings.phi_retention_days is not None
            else None
        ),
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    services: Services = app.state.services
    settings = services.settings
    if not settings.is_postgres and settings.database_url.startswith("sqlite"):
        init_db(services.engine)
    if not services.principals:
        log.warning(
            "DEV MODE: no API keys configured (API_KEY, API_KEYS_JSON, API_KEYS_FILE); every caller is an"
            " anonymous administrator of every tenant. Never use this with real data (ENV=production refuses it)",
            extra={"auth": DEV_MODE},
        )
    unregister = register_state_collector(state_collector(services))
    reconciler = None
    if settings.reconciler_enabled and app.state.owns_services:  # injected services: the owner decides
        reconciler = Reconciler(services.sessions, services.queue, settings, actor=actor_name("api")).start()
    log.info("api started", extra={"version": __version__, "auth": auth_mode(services.principals)})
    try:
        yield
    finally:
        if reconciler is not None:
            reconciler.stop()
        unregister()
        if app.state.owns_services:  # injected services belong to whoever built them
            services.dispose()
        log.info("api stopped")


def create_app(settings: Settings | None = None, *, services: Services | None = None) -> FastAPI:
    """Build the API. ``settings`` defaults to the process-wide validated settings; ``services``
    (engine, Redis, queue) are built from them unless given (unit tests pass fakes).

    A configuration error (a bad variable, a broken TARGETS_FILE or API_KEYS_FILE, no keys with
    ENV=production) stops the process with the message and exit code 2, not a traceback."""
    try:
        settings = services.settings if services else (settings or get_settings())
        configured_targets(settings)  # read and validate TARGETS_FILE once, at start
        api_principals(settings)  # and the keys: API_KEYS_FILE is read here
    except ConfigError as exc:
        print(f"api: {exc.message}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    configure_logging(settings.log_level)
    configure_tracing(settings, API_SERVICE)
    app = FastAPI(
        title="pedi-orchestrator",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        telemetry=NO_FASTAPI_TELEMETRY,
    )
    app.state.services = services or build_services(settings)
    app.state.owns_services = services is None
    install_handlers(app)
    install_request_guards(app, settings)  # JSON gate and DB deadline, inside the size limit
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(TracingMiddleware)  # outermost of ours: the server span covers the rest
    app.include_router(api_router)
    install_openapi(app, keys_required=bool(app.state.services.principals))
    return app


class LazyApp:
    """An ASGI app that builds the real one with ``factory`` on its first call (or first
    attribute read, e.g. ``app.openapi()``), so that importing the module has no side effects."""

    def __init__(self, factory: Callable[[], FastAPI]) -> None:
        self._factory = factory
        self._app: FastAPI | None = None
        self._lock = threading.Lock()

    def build(self) -> FastAPI:
        with self._lock:
            if self._app is None:
                self._app = self._factory()
            return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            app = self._app or self.build()
        except (SystemExit, Exception) as exc:
            # create_app printed a configuration error (SystemExit). In a lifespan call, report a
            # failed start so uvicorn exits: with "lifespan auto" it would otherwise log "lifespan
            # unsupported" and serve requests that each try to build the app again.
            if scope["type"] != "lifespan":
                raise
            if not isinstance(exc, SystemExit):
                log.error("api could not start", exc_info=exc)
            await receive()
            await send({"type": "lifespan.startup.failed", "message": "the API could not start (see above)"})
            return
        await app(scope, receive, send)

    def __getattr__(self, name: str):
        return getattr(self.build(), name)


app = LazyApp(create_app)
"""``uvicorn orchestrator.app.main:app``: ``create_app()`` with the process-wide settings."""
