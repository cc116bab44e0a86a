"""How a worker process starts, one sequence per role, and the job context it hands to jobs.

    role                                   logging, tracing   job context (engine, Redis, router, HTTP)
    python -m modelreasoner.worker         at start           built and checked at start
    forking parent (RQ_CONFIG, -w ...)     at start           prepared at start, unconnected;
                                                              each job process adopts it after the fork
    job process of a bare ``rq worker``    on its first job   built on its first job
    tests                                  their own          ``install``

The job context is a ``Runtime`` (modelreasoner.runtime): ``process_job`` obtains it once with
``job_context()`` and every function below it takes it as an argument, as arq's ``ctx``. No
connection crosses a fork: a context is keyed by the process that uses it, and the one a forking
parent prepares has opened none (its engine pool is disposed again in the child, its Redis pool
resets itself on a new pid, its HTTP clients have never connected).
"""

from __future__ import annotations

import dataclasses
import gc
import os
import threading

from modelreasoner.lease import LeaseKeeper, check_targets_fit_the_lease
from modelreasoner.runtime import Runtime, build_runtime, check_id_fits, load_registered_targets, new_worker_id
from modelreasoner.stats_writer import StatsWriter
from orchestrator import tracing
from orchestrator.errors import ConfigError
from orchestrator.logs import configure_logging, ensure_logging
from orchestrator.settings import Settings, get_settings

NO_TARGETS_MESSAGE = (
    "No model server is configured. Set EDGE_MODEL_URL, CLOUD_MODEL_URL or GPU_MODEL_URL (or "
    "EDGE_AGENT_URL, CLOUD_RUNNER_URL, GPU_RUNNER_URL, or TARGETS_FILE), register an agent "
    "through POST /register_agent, or choose simulated targets explicitly with --simulate "
    "(WORKER_SIMULATE=1) for a demo."
)

_contexts: dict[int, Runtime] = {}
_prepared: Runtime | None = None
"""The context a forking parent built before any fork, for its job processes to adopt."""
_lock = threading.Lock()


def start_observability(settings: Settings, *, per_job_process: bool = False) -> None:
    """JSON logs and tracing for this process. A job process only adds what it lacks: it may
    have inherited both from its parent."""
    if per_job_process:
        ensure_logging(settings.log_level)
    else:
        configure_logging(settings.log_level)
    tracing.configure_tracing(settings, tracing.WORKER_SERVICE, per_job_process=per_job_process)


def start_threaded_worker(settings: Settings, *, concurrency: int | None = None) -> Runtime:
    """``python -m modelreasoner.worker``: logs, tracing, and a checked job context installed for
    this process. Raises ConfigError naming what is wrong."""
    start_observability(settings)
    rt = build_runtime(settings, concurrency=concurrency)
    check_worker(rt)
    rt.stats_writer = StatsWriter()
    install(rt)
    return rt


def check_worker(rt: Runtime) -> None:
    """Refuse to run without a target, with an id the database cannot hold, or with a target
    whose timeout outlives the lease (ConfigError)."""
    if not (rt.static_targets or rt.simulate or _registered_targets(rt)):
        raise ConfigError(NO_TARGETS_MESSAGE)
    check_id_fits(rt.engine, rt.worker_id)
    check_targets_fit_the_lease(rt.settings, rt.static_targets)


def _registered_targets(rt: Runtime) -> bool:
    try:
        return bool(load_registered_targets(rt.sessions))
    except Exception as exc:
        raise ConfigError(f"Cannot read registered targets from the database ({type(exc).__name__})") from None


def prepare_forking_parent(settings: Settings | None = None) -> Settings:
    """A forking ``rq worker``'s parent, before its first fork: logs, tracing, every import, and
    the job context built without opening a connection, so a job process starts with nothing
    left to set up. Idempotent. Raises ConfigError on invalid settings."""
    global _prepared
    settings = settings or get_settings()
    start_observability(settings)
    with _lock:
        if _prepared is None:
            _prepared = build_runtime(settings, concurrency=1)
    # Everything allocated so far lives as long as the worker: keep the collector from touching
    # it in each job process, where every touched page is a copy-on-write copy.
    gc.freeze()
    return settings


def install(rt: Runtime) -> None:
    """Use ``rt`` as this process's job context (the threaded worker, tests)."""
    with _lock:
        _contexts[os.getpid()] = rt


def job_context() -> Runtime:
    """This process's job context: the installed one; in a forking parent's job process, the
    prepared one adopted after the fork; else (a bare ``rq worker``) one built now."""
    pid = os.getpid()
    with _lock:
        rt = _contexts.get(pid)
        if rt is None:
            rt = _adopt(_prepared) if _prepared is not None else build_runtime(get_settings())
            _contexts[pid] = rt
        return rt


def _adopt(prepared: Runtime) -> Runtime:
    """The parent's prepared context for this (forked) process: the engine's pool forgets any
    connection the parent might hold (without closing it: it is the parent's), and the process
    gets its own worker id, lease keeper and target cache."""
    prepared.engine.dispose(close=False)
    worker_id = new_worker_id(prepared.settings.worker_hostname)
    leases = LeaseKeeper(prepared.sessions, worker_id=worker_id, lease_seconds=prepared.settings.job_lease_seconds)
    return dataclasses.replace(
        prepared, worker_id=worker_id, leases=leases, _registered=[], _registered_at=0.0, _lock=threading.Lock()
    )
