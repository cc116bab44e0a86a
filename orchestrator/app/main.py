"""The API app factory.

Run: ``uvicorn orchestrator.app.main:create_app --factory --host 0.0.0.0 --port 9000``.
Settings are read and validated here, once; a bad variable stops the start with a message that
names it. Logs are JSON from the first line.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI

from orchestrator import __version__, fleet
from orchestrator.api_router import api_router
from orchestrator.app.auth import DEV_MODE, api_principals, auth_mode
from orchestrator.app.deps import Services
from orchestrator.app.handlers import install_handlers
from orchestrator.app.middleware import BodySizeLimitMiddleware, MetricsMiddleware, install_request_guards
from orchestrator.db import make_engine
from orchestrator.errors import ConfigError
from orchestrator.logs import configure_logging
from orchestrator.metrics import StateCollector, register_state_collector
from orchestrator.models import init_db
from orchestrator.queue_rq import make_redis
from orchestrator.reconciler import Reconciler, actor_name
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
operate, admin) unless the server runs in dev mode (no keys configured)."""


def build_services(settings: Settings) -> Services:
    return Services.over(settings, make_engine(settings), make_redis(settings))


def state_collector(services: Services) -> StateCollector:
    return StateCollector(
        queue_depth=partial(fleet.queue_depth, services.queue),
        oldest_queued_age=partial(fleet.oldest_queued_age_seconds, services.engine),
        jobs_by_status=partial(fleet.jobs_by_status, services.engine),
        workers_alive=partial(fleet.workers_alive, services.redis, services.queue),
        circuit_states=partial(fleet.circuit_states, services.redis),
        reconciler_last_pass_age=partial(fleet.reconciler_last_pass_age_seconds, services.redis),
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
            services.redis.close()
            services.engine.dispose()
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
    return app
