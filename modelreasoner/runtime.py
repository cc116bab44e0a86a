"""Per-process resources of a worker: settings, DB sessions, Redis, the router, the HTTP client.

Built lazily on first use in each process (``get_runtime``), never at import: the forking
``rq worker`` runs jobs in a child process that must not share the parent's sockets, so the
runtime is keyed by pid.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import redis
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from modelreasoner.client import ModelClient
from modelreasoner.lease import LeaseKeeper
from modelreasoner.resilient_stats import ResilientStatsStore
from modelreasoner.simulated import SimulatedClient, simulated_targets
from modelreasoner.stats_writer import StatsWriter
from orchestrator.db import make_engine, make_session_factory
from orchestrator.models import init_db
from orchestrator.queue_rq import make_redis
from orchestrator.routing import RedisStatsStore, Router, Target
from orchestrator.settings import Settings, get_settings
from orchestrator.targets import configured_targets, merge_targets, registered_targets
from orchestrator.url_policy import policy_for

REGISTERED_TARGETS_TTL_SECONDS = 5.0
"""How stale the worker's copy of agents registered through the API may be (s): a new agent
is routed to within this long, without a restart."""


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
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


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def build_runtime(settings: Settings, *, concurrency: int | None = None) -> Runtime:
    concurrency = concurrency or settings.worker_concurrency
    # No pre-ping: a stale connection (after a Postgres restart) fails the step, and the
    # worker's database retry (DB_RETRY_ATTEMPTS) runs it again on a fresh connection.
    engine = make_engine(settings, pool_size=concurrency + 2, pre_ping=False)
    if settings.database_url.startswith("sqlite"):
        init_db(engine)  # the embedded dev default: a worker may start before the API
    sessions = make_session_factory(engine)
    connection = make_redis(settings)
    http = httpx.Client(
        limits=httpx.Limits(max_connections=concurrency * 4, max_keepalive_connections=concurrency * 2),
        follow_redirects=False,
    )
    worker_id = new_worker_id()
    client = ModelClient(http, policy_for(settings))
    static_targets = configured_targets(settings)
    if settings.worker_simulate:
        client, static_targets = SimulatedClient(), simulated_targets()
    return Runtime(
        settings=settings,
        engine=engine,
        sessions=sessions,
        redis=connection,
        router=Router(ResilientStatsStore(RedisStatsStore(connection))),  # a Redis blip must not fail a job
        client=client,
        http=http,
        leases=LeaseKeeper(sessions, worker_id=worker_id, lease_seconds=settings.job_lease_seconds),
        worker_id=worker_id,
        static_targets=static_targets,
        simulate=settings.worker_simulate,
    )


_runtimes: dict[int, Runtime] = {}
_runtimes_lock = threading.Lock()
_factory: Callable[[], Runtime] | None = None


def install_runtime(runtime: Runtime) -> None:
    """Use ``runtime`` for this process (the worker entry point and tests build their own)."""
    with _runtimes_lock:
        _runtimes[os.getpid()] = runtime


def get_runtime() -> Runtime:
    """This process's runtime, built from the validated settings on first use."""
    pid = os.getpid()
    with _runtimes_lock:
        runtime = _runtimes.get(pid)
        if runtime is None:
            runtime = build_runtime(get_settings())
            _runtimes[pid] = runtime
        return runtime
