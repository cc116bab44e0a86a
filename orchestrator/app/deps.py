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

from orchestrator.db import make_session_factory, session_scope
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

    @classmethod
    def over(cls, settings: Settings, engine: Engine, connection: redis.Redis) -> Services:
        """The services on an engine and a Redis connection; the rest derives from them."""
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
        )


def get_services(request: Request) -> Services:
    return request.app.state.services


def get_session(request: Request) -> Iterator[Session]:
    with session_scope(request.app.state.services.sessions) as session:
        yield session


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.services.settings


def get_router(request: Request) -> Router:
    """A router over the stats every worker shares in Redis (cheap: no I/O until used)."""
    services = request.app.state.services
    return Router(RedisStatsStore(services.redis), services.routing_config)


ServicesDep = Annotated[Services, Depends(get_services)]
SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
RouterDep = Annotated[Router, Depends(get_router)]
