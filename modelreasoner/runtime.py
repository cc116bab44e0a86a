"""A worker's job context: settings, DB sessions, Redis, the router, the HTTP clients.

``build_runtime`` builds one without opening a connection; modelreasoner.bootstrap decides when,
for which process, and hands it to every job explicitly. Never built at import.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

import httpx
import redis
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from modelreasoner.client import KEEPALIVE_EXPIRY_SECONDS, ModelClient
from modelreasoner.lease import LeaseKeeper
from modelreasoner.pinned_transport import http_client
from modelreasoner.resilient_stats import ResilientStatsStore
from modelreasoner.simulated import SimulatedClient, simulated_targets
from modelreasoner.stats_writer import StatsWriter
from orchestrator.audit import fit_actor
from orchestrator.db import make_engine, make_session_factory
from orchestrator.errors import ConfigError
from orchestrator.models import Audit, Job, init_db
from orchestrator.queue_rq import make_redis
from orchestrator.routing import RedisStatsStore, Router, Target
from orchestrator.routing.config import config_with_objectives
from orchestrator.settings import Settings
from orchestrator.targets import configured_targets, merge_targets, registered_targets
from orchestrator.url_policy import policy_for

REGISTERED_TARGETS_TTL_SECONDS = 5.0
"""How stale the worker's copy of agents registered through the API may be (s): a new agent
is routed to within this long, without a restart."""


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    """Autocommit on Postgres: a session's statements are each their own transaction. Code that
    needs a transaction of several statements (the reconciler) uses an engine of its own."""
    sessions: sessionmaker[Session]
    redis: redis.Redis
    router: Router
    client: ModelClient | SimulatedClient
    http: httpx.Client
    leases: LeaseKeeper
    worker_id: str
    static_targets: list[Target]
    simulate: bool = False
    stats_writer: StatsWriter | None = None
    """Takes post-call stats updates off the job's path (the threaded worker sets one)."""
    _registered: list[Target] = field(default_factory=list)
    _registered_at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def targets(self, refresh: bool = False) -> list[Target]:
        """Configured targets plus agents registered through the API (cached a few seconds;
        ``refresh`` reads the registered ones again now)."""
        now = time.monotonic()
        with self._lock:
            if refresh or now - self._registered_at > REGISTERED_TARGETS_TTL_SECONDS:
                self._registered = load_registered_targets(self.sessions)
                self._registered_at = now
            registered = list(self._registered)
        return merge_targets(self.static_targets, registered)


def load_registered_targets(sessions: sessionmaker[Session]) -> list[Target]:
    with sessions() as session:
        return registered_targets(session)


def new_worker_id(hostname: str | None = None) -> str:
    """``<host>:<pid>:<hex>``, made to fit the audit's actor column (``fit_actor``): a 63-character
    pod name must not make every claim's audit row fail."""
    return fit_actor(f"{hostname or socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}")


def check_id_fits(engine: Engine, worker_id: str) -> None:
    """At start: refuse to run when the database's columns cannot hold this worker's id (the
    live schema, not the models: a migration may differ). Raises ConfigError naming the column."""
    limits = {
        ("audit", "actor"): Audit.__table__.c.actor.type.length,
        ("jobs", "worker_id"): Job.__table__.c.worker_id.type.length,
    }
    if engine.dialect.name == "postgresql":
        from sqlalchemy import text

        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT table_name, column_name, character_maximum_length FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND (table_name, column_name) IN "
                    "(('audit', 'actor'), ('jobs', 'worker_id'))"
                )
            ).all()
        limits.update({(table, column): length for table, column, length in rows if length is not None})
    for (table, column), length in limits.items():
        if length is not None and len(worker_id) > length:
            raise ConfigError(
                f"The worker id ({len(worker_id)} characters) does not fit {table}.{column} (VARCHAR({length})); "
                "set WORKER_HOSTNAME to a shorter name"
            )


def build_runtime(settings: Settings, *, concurrency: int | None = None) -> Runtime:
    concurrency = concurrency or settings.worker_concurrency
    # No pre-ping: a stale connection (after a Postgres restart) fails the step, and the
    # worker's database retry (DB_RETRY_ATTEMPTS) runs it again on a fresh connection.
    # Autocommit (Postgres): every job transition is one statement (orchestrator.job_sql), its
    # own transaction, with no BEGIN or COMMIT round trip; nothing here needs a longer one.
    engine = make_engine(settings, pool_size=concurrency + 2, pre_ping=False, autocommit=True)
    if settings.database_url.startswith("sqlite"):
        init_db(engine)  # the embedded dev default: a worker may start before the API
    sessions = make_session_factory(engine)
    connection = make_redis(settings)
    url_policy = policy_for(settings)
    # Both clients connect only to addresses the URL policy checked (no DNS rebinding between
    # the pre-call check and the connection: modelreasoner.pinned_transport).
    http = http_client(
        httpx.Limits(
            max_connections=concurrency * 4,
            max_keepalive_connections=concurrency * 2,
            keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS,
        ),
        url_policy,
    )
    # A call whose reused connection the server had closed is retried once on this client:
    # no keep-alive, so always a fresh connection.
    fresh = http_client(httpx.Limits(max_keepalive_connections=0), url_policy)
    worker_id = new_worker_id(settings.worker_hostname)
    client = ModelClient(http, fresh=fresh, url_policy=url_policy)
    static_targets = configured_targets(settings)
    if settings.worker_simulate:
        client, static_targets = SimulatedClient(), simulated_targets()
    return Runtime(
        settings=settings,
        engine=engine,
        sessions=sessions,
        redis=connection,
        router=Router(  # a Redis blip must not fail a job
            ResilientStatsStore(RedisStatsStore(connection)),
            config_with_objectives(settings.routing_slo_objectives, settings.routing_slo_default_objective),
        ),
        client=client,
        http=http,
        leases=LeaseKeeper(sessions, worker_id=worker_id, lease_seconds=settings.job_lease_seconds),
        worker_id=worker_id,
        static_targets=static_targets,
        simulate=settings.worker_simulate,
    )
