"""The phases of bench.e2e that run the worker: bare RQ (the baseline), the pipeline over HTTP
(P1, P2), round trips and CPU per job (the submit path and the worker apart), and one worker
against slow model servers (P6)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import click
import httpx
import redis
from rq import Queue
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bench.e2e_probes import Counted, Probes, cpu_ms
from orchestrator import intake
from orchestrator.models import Job
from orchestrator.queue_rq import enqueue_job, get_queue
from orchestrator.schemas import JobCreate
from tests.support.procs import ManagedProcess, python
from tests.support.stack import Api, Stack

BODY = {"age_months": 24, "observations": "Walks, points and says several words.", "sla_ms": 30000}
SLOW_MODEL_MS = 200.0
TIERS = ("edge", "cloud", "gpu")


def say(message: str) -> None:
    click.echo(f"[bench.e2e] {message}", err=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


@dataclass
class Env:
    """What every phase needs: the stack, an engine that only watches (its statements are not
    counted), the probes and the API key the submits present."""

    stack: Stack
    engine: Engine  # the bench's own writes (storing jobs outside the counted phases)
    watch: Engine  # polls and reads, as an observer role whose statements are not counted
    probes: Probes
    api_key: str
    workdir: Path


# --- waiting --------------------------------------------------------------------------------


def wait_drained(env: Env, timeout: float = 600.0) -> None:
    """Until no job is queued or running (every stored job is completed or failed)."""
    deadline = time.monotonic() + timeout
    last_report = time.monotonic()
    while time.monotonic() < deadline:
        with Session(env.watch) as session:
            left = session.scalar(select(func.count()).where(Job.status.in_(["queued", "running"])))
        if left == 0:
            return
        if time.monotonic() - last_report > 10:
            say(f"  {left} jobs still queued or running")
            last_report = time.monotonic()
        time.sleep(0.05)
    raise click.ClickException(f"{left} jobs still queued or running after {timeout:.0f} s (logs: {env.workdir})")


# --- (a) bare RQ ----------------------------------------------------------------------------


def bare_rq(env: Env, jobs_count: int) -> tuple[float, Counted]:
    """jobs/s of bare RQ: one SimpleWorker drains no-op jobs while they are enqueued; and its
    Redis commands and the worker's CPU per job. The polls of the finished registry (one ZCARD
    each) are subtracted from the count."""
    url = env.stack.redis_url
    queue = Queue("bench-noop", connection=redis.Redis.from_url(url))
    worker = ManagedProcess(
        "rq-simpleworker",
        python("-m", "rq.cli", "worker", "bench-noop", "--url", url, "-w", "rq.worker.SimpleWorker", "-q"),
        env=env.stack.base_env(),
        log_path=env.workdir / "rq-simpleworker.log",
    )
    worker.start()
    time.sleep(1.0)
    cpu_before = cpu_ms(worker.pid)
    env.probes.start()
    started = time.perf_counter()
    for _ in range(jobs_count):
        queue.enqueue("bench.noop.noop", result_ttl=600)
    polls = 0
    while queue.finished_job_registry.get_job_count(cleanup=False) < jobs_count:
        polls += 1
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    counted = env.probes.stop(jobs_count, cpu_ms(worker.pid) - cpu_before)
    by_command = {**counted.redis.by_command, "zcard": counted.redis.by_command.get("zcard", 0) - polls - 1}
    counted.redis = replace(counted.redis, commands=counted.redis.commands - polls - 1, by_command=by_command)
    say(f"(bare) Redis commands per job: {counted.redis.top(jobs_count)}")
    worker.stop()
    return jobs_count / elapsed, counted


# --- submitting over HTTP -------------------------------------------------------------------


def submit_all(env: Env, api: Api, count: int, concurrency: int) -> None:
    local = threading.local()
    headers = {"x-api-key": env.api_key}

    def one(_: int) -> None:
        client = getattr(local, "client", None) or httpx.Client(base_url=api.url, headers=headers, timeout=30)
        local.client = client
        client.post("/api/submit", json=BODY).raise_for_status()

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(count)))


def open_loop(env: Env, api: Api, rate: float, count: int) -> int:
    """Submit ``count`` at a steady ``rate`` per second (arrivals do not wait for answers).
    Returns how many the API accepted; refusals are reported, not hidden."""
    interval = 1.0 / rate
    start = time.perf_counter()
    futures = []
    headers = {"x-api-key": env.api_key}
    with httpx.Client(base_url=api.url, headers=headers, timeout=30) as client, ThreadPoolExecutor(32) as pool:
        for index in range(count):
            delay = start + index * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(client.post, "/api/submit", json=BODY))
    outcomes = []
    for future in futures:
        try:
            outcomes.append(future.result().status_code)
        except httpx.HTTPError as exc:
            outcomes.append(type(exc).__name__)
    refused = [o for o in outcomes if o != 202]
    if refused:
        say(f"  {len(refused)} of {count} submits were not accepted: {sorted(set(map(str, refused)))}")
    return count - len(refused)


def overheads(env: Env, since: datetime) -> list[float]:
    with Session(env.watch) as session:
        rows = session.execute(
            select(Job.created_at, Job.finished_at, Job.latency_ms).where(
                Job.created_at >= since, Job.status == "completed"
            )
        ).all()
    return [(f - c).total_seconds() * 1000.0 - (lat or 0.0) for c, f, lat in rows]


# --- (P1, P2) the pipeline ------------------------------------------------------------------


def pipeline(env: Env, api: Api, jobs_count: int, concurrency: int, worker_concurrency: int, p2_seconds: int) -> dict:
    """P1: jobs/s from the first submit to the last job completed in Postgres, submits at
    ``concurrency`` while one worker drains. P2: at half of that rate, open loop, the overhead."""
    worker = env.stack.worker(concurrency=worker_concurrency, LOG_LEVEL="WARNING", name="worker-p1")
    submit_all(env, api, 50, concurrency)  # warm-up: connections, caches
    wait_drained(env)
    say(f"(P1) {jobs_count} submits over HTTP at concurrency {concurrency}")
    started = time.perf_counter()
    submit_all(env, api, jobs_count, concurrency)
    wait_drained(env)
    peak = jobs_count / (time.perf_counter() - started)
    rate = peak / 2
    count = max(100, int(rate * p2_seconds))
    say(f"(P1) {peak:.0f} jobs/s; (P2) overhead at half of peak: {count} jobs at {rate:.0f}/s")
    since = datetime.now(UTC)
    open_loop(env, api, rate, count)
    wait_drained(env)
    values = overheads(env, since)
    worker.stop()
    return {
        "jobs_per_s": peak,
        "rate": rate,
        "p50": percentile(values, 0.5),
        "p99": percentile(values, 0.99),
        "n": len(values),
    }


# --- round trips and CPU per job ------------------------------------------------------------


def store_jobs(env: Env, count: int) -> None:
    """Store ``count`` screening jobs and enqueue their ids directly (no API, no worker).

    Called once every job in Postgres is terminal (``wait_drained``): whatever is still on the
    RQ queue then is a duplicate delivery of a finished job, which a worker would skip. It is
    dropped (and counted on stderr) so that a phase times its own jobs only."""
    queue = get_queue(redis.Redis.from_url(env.stack.redis_url))
    stale = queue.count
    if stale:
        say(f"  {stale} duplicate deliveries of finished jobs were left on {queue.name}; dropped")
        queue.empty()
    body = JobCreate(**BODY)
    with Session(env.engine) as session:
        ids = [intake.submit_screening(session, body, actor="bench", default_sla_ms=2000).job.id for _ in range(count)]
    for job_id in ids:
        enqueue_job(queue, str(job_id))


def counts(env: Env, api: Api, jobs_count: int, worker_concurrency: int) -> tuple[Counted, Counted]:
    """The submit path and the worker apart: ``jobs_count`` submits over HTTP with no worker
    running (what the API sends), then one worker drains them (what the worker sends, and its
    CPU, start-up excluded: counted from its first dequeue-ready moment)."""
    say(f"(counts) {jobs_count} submits over HTTP, no worker running")
    env.probes.start()
    submit_all(env, api, jobs_count, 16)
    submitted = env.probes.stop(jobs_count)
    say(f"(counts) submit path, Redis commands per job: {submitted.redis.top(jobs_count)}")
    say(f"(counts) submit path, Postgres statements per job: {submitted.pg.top(jobs_count)}")
    worker = env.stack.worker(concurrency=worker_concurrency, LOG_LEVEL="WARNING", name="worker-counts")
    cpu_before = cpu_ms(worker.pid)
    env.probes.start()
    say(f"(counts) one worker, concurrency {worker_concurrency}, drains them")
    wait_drained(env)
    drained = env.probes.stop(jobs_count, cpu_ms(worker.pid) - cpu_before)
    say(f"(counts) worker, Redis commands per job: {drained.redis.top(jobs_count)}")
    say(f"(counts) worker, Postgres statements per job: {drained.pg.top(jobs_count)}")
    worker.stop()
    return submitted, drained


# --- (P6) one worker, slow model servers ----------------------------------------------------


def slow_servers(stack: Stack) -> dict[str, str]:
    env = {}
    for tier in TIERS:
        server = stack.model_server(f"slow-{tier}", tier=tier, latency_ms=SLOW_MODEL_MS, jitter=0, capacity=1000)
        env[f"{tier.upper()}_MODEL_URL"] = server.url
    return env


def slow_worker(env: Env, targets: dict[str, str], jobs_count: int, concurrency: int) -> float:
    """P6: ``jobs_count`` jobs queued first, then one worker at ``concurrency``; jobs/s from the
    first claim to the last finish."""
    since = datetime.now(UTC)
    store_jobs(env, jobs_count)
    say(f"(P6) {jobs_count} jobs queued; one worker, concurrency {concurrency}, {SLOW_MODEL_MS:.0f} ms model servers")
    worker = env.stack.worker(concurrency=concurrency, LOG_LEVEL="WARNING", name=f"worker-p6-{concurrency}", **targets)
    wait_drained(env)
    worker.stop()
    with Session(env.watch) as session:
        first, last = session.execute(
            select(func.min(Job.started_at), func.max(Job.finished_at)).where(Job.created_at >= since)
        ).one()
    return jobs_count / (last - first).total_seconds()
