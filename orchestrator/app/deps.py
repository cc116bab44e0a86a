"""Services the API holds for its lifetime, and ``Annotated`` dependency aliases over them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated

import redis
from fastapi import Depends, Request
from rq import Queue
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.db import make_intake_session_factory, make_session_factory, session_scope
from orchestrator.principals import Principal
from orchestrator.queue_rq import get_queue
from orchestrator.routing import RedisStatsStore, Router
from orchestrator.routing.config import DEFAULT_CONFIG, RoutingConfig, config_with_objectives
from orchestrator.settings import Settings


@dataclass
class Services:
    """Built once by the app factory and kept on ``app.state.services``."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    redis: redis.Redis
    queue: Queue
    principals: dict[str, Principal] = field(default_factory=dict)
    """sha256 digest of each accepted key -> its principal; empty in dev mode."""
    routing_config: RoutingConfig = DEFAULT_CONFIG
    """The routing policy's knobs, with the operator's SLO objectives (ROUTING_SLO_*)."""
    intake_sessions: sessionmaker[Session] | None = None
    """Sessions of the submit routes and their quota reads (``make_intake_session_factory``:
    autocommit on Postgres); built from ``engine`` when not given."""

    def __post_init__(self) -> None:
        if self.intake_sessions is None:
            self.intake_sessions = make_intake_session_factory(self.engine)

    @classmethod
    def over(
        cls, settings: Settings, engine: Engine, connection: redis.Redis, *, intake_engine: Engine | None = None
    ) -> Services:
        """The services on an engine and a Redis connection; the rest derives from them.
        ``intake_engine``: an autocommit engine for the submit routes (default: ``engine``)."""
        return cls(
            settings=settings,
            engine=engine,
            sessions=make_session_factory(engine),
            redis=connection,
            queue=get_queue(connection),
            principals=settings.principals,
            routing_config=config_with_objectives(
                settings.routing_slo_objectives, settings.routing_slo_default_objective
            ),
            intake_sessions=make_intake_session_factory(intake_engine or engine),
        )

    def dispose(self) -> None:
        """Close the Redis connection and every engine these services hold."""
        self.redis.close()
        self.engine.dispose()
        intake_engine = self.intake_sessions.kw["bind"] if self.intake_sessions is not None else None
        if intake_engine is not None and intake_engine.pool is not self.engine.pool:
            intake_engine.dispose()


async def get_services(request: Request) -> Services:
    # async: FastAPI runs a sync dependency in its thread pool, a hop that costs more than this.
    return request.app.state.services


def get_session(request: Request) -> Iterator[Session]:
    with session_scope(request.app.state.services.sessions) as session:
        yield session


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.services.settings


def get_router(request: Request) -> Router:
    """A router over the stats every worker shares in Redis (cheap: no I/O until used)."""
    services = request.app.state.services
    return Router(RedisStatsStore(services.redis), services.routing_config)


ServicesDep = Annotated[Services, Depends(get_services)]
SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
RouterDep = Annotated[Router, Depends(get_router)]
