"""Where a worker's time goes: throughput and CPU per job on pre-queued jobs, and the latency of
each step of one job at low load.

    python -m bench.worker_profile [--jobs 2000] [--concurrency 16] [--parts drain,steps,profile]

1. Drain: ``--jobs`` screening jobs are stored and enqueued directly (no API), then one
   ``python -m modelreasoner.worker`` drains them against model servers that answer at once.
   Reports jobs/s (first claim to last finish) and the worker's CPU per job (user and system,
   from /proc), start-up included (about 0.6 s in all).
2. Steps: 200 jobs submitted over HTTP at 50/s; the p50/p90 of submitted → claimed → routed →
   model call answered → completed, from the audit trail's timestamps.
3. Profile (``--parts profile``): ``--profile-jobs`` jobs queued, then the worker drains them
   under pyinstrument (bench.profiled_worker, at ``--profile-concurrency``, default 1); prints
   where the job threads' and the dequeue loop's wall time goes.

Real processes, a private redis-server per part and a fresh database on a throwaway PostgreSQL
cluster (or on the server of ``--pg-url``). Linux only (/proc).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import click
import httpx
import redis
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from bench.e2e import BODY, say
from bench.e2e_probes import StatsCluster
from orchestrator import intake
from orchestrator.models import Audit, Job
from orchestrator.queue_rq import enqueue_job, get_queue
from orchestrator.schemas import JobCreate
from tests.conftest import migrate
from tests.support import postgres
from tests.support.env import free_port
from tests.support.procs import ManagedProcess, python
from tests.support.redis_server import RedisServer, redis_server_binary
from tests.support.stack import Stack

STEPS_JOBS = 200
STEPS_RATE = 50.0


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def model_servers(stack: Stack) -> None:
    for tier in ("edge", "cloud", "gpu"):
        stack.model_server(tier, tier=tier, latency_ms=0, jitter=0, capacity=1000, fail_rate=0)


def queue_jobs(engine, redis_url: str, count: int) -> None:
    """Store ``count`` screening jobs and enqueue their ids (no API)."""
    queue = get_queue(redis.Redis.from_url(redis_url))
    with Session(engine) as session:
        body = JobCreate(**BODY)
        ids = [intake.submit_screening(session, body, actor="bench", default_sla_ms=2000).job.id for _ in range(count)]
    for job_id in ids:
        enqueue_job(queue, str(job_id))


def profile(stack: Stack, engine, redis_url: str, count: int, concurrency: int) -> str:
    """Drain ``count`` queued jobs with the worker under pyinstrument; the two reports' text."""
    queue_jobs(engine, redis_url, count)
    outdir = stack.artifacts / "profile"
    say(f"profile: {count} jobs queued; the worker drains them under pyinstrument, concurrency {concurrency}")
    argv = python("-m", "bench.profiled_worker", str(outdir), "--concurrency", str(concurrency))
    process = ManagedProcess(
        "worker-profiled",
        argv,
        env=stack.base_env(**stack.target_env(), LOG_LEVEL="WARNING"),
        log_path=stack.artifacts / "worker-profiled.log",
    )
    process.start()
    if process.process.wait(900) != 0:
        raise click.ClickException(f"the profiled worker failed:\n{process.tail()}")
    return (outdir / "jobs.txt").read_text() + "\n" + (outdir / "dequeue.txt").read_text()


def drain(stack: Stack, engine, redis_url: str, count: int, concurrency: int) -> dict:
    queue_jobs(engine, redis_url, count)
    say(f"drain: {count} jobs queued; one worker, concurrency {concurrency}")
    worker = stack.worker(concurrency=concurrency, LOG_LEVEL="WARNING", name="worker-drain")
    while True:
        with Session(engine) as session:
            done = session.scalar(select(func.count()).where(Job.status.in_(["completed", "failed"])))
        if done >= count:
            break
        time.sleep(0.05)
    user, system = cpu_seconds(worker.pid)
    with Session(engine) as session:
        first, last = session.execute(select(func.min(Job.started_at), func.max(Job.finished_at))).one()
    worker.stop()
    return {
        "jobs_per_s": count / (last - first).total_seconds(),
        "user_ms": 1000 * user / count,
        "system_ms": 1000 * system / count,
    }


def steps(stack: Stack, engine) -> dict[str, list[float]]:
    api = stack.api(LOG_LEVEL="WARNING")
    stack.worker(concurrency=16, LOG_LEVEL="WARNING", name="worker-steps")
    say(f"steps: {STEPS_JOBS} jobs at {STEPS_RATE:.0f}/s over HTTP")
    with httpx.Client(base_url=api.url, timeout=30) as client:
        for _ in range(30):  # warm-up, not measured
            client.post("/api/submit", json=BODY)
        time.sleep(1.0)
        since = time.time()
        for _ in range(STEPS_JOBS):
            client.post("/api/submit", json=BODY).raise_for_status()
            time.sleep(1.0 / STEPS_RATE)
    time.sleep(2.0)
    found: dict[str, list[float]] = {
        "submitted → claimed": [],
        "claimed → routed": [],
        "routed → model call answered": [],
        "model call answered → completed": [],
        "model call itself": [],
    }
    with Session(engine) as session:
        rows = session.scalars(select(Job).where(Job.status == "completed").order_by(Job.created_at)).all()
        for job in (j for j in rows if j.created_at.timestamp() >= since):
            at = {a.event: a.at for a in session.scalars(select(Audit).where(Audit.job_id == job.id))}
            span = lambda a, b: (b - a).total_seconds() * 1000.0  # noqa: E731
            found["submitted → claimed"].append(span(job.created_at, at["claimed"]))
            found["claimed → routed"].append(span(at["claimed"], at["routed"]))
            found["routed → model call answered"].append(span(at["routed"], at["attempt"]))
            found["model call answered → completed"].append(span(at["attempt"], job.finished_at))
            found["model call itself"].append(job.latency_ms)
    return found


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_parts(
    binary: str, pg_url: str, parts: str, jobs: int, concurrency: int, profile_jobs: int, profile_concurrency: int
) -> dict:
    """Each part on its own redis-server and a fresh database on ``pg_url``."""
    results = {}
    for part in [p.strip() for p in parts.split(",") if p.strip()]:
        server = RedisServer(binary, free_port())
        server.start()
        database = postgres.create_database(pg_url, prefix="pedi_wprof")
        migrate(database)
        engine = create_engine(database)
        stack = Stack(database, server.url, Path(tempfile.mkdtemp(prefix="pedi-wprof-")))
        try:
            model_servers(stack)
            if part == "drain":
                results[part] = drain(stack, engine, server.url, jobs, concurrency)
            elif part == "steps":
                results[part] = steps(stack, engine)
            elif part == "profile":
                results[part] = profile(stack, engine, server.url, profile_jobs, profile_concurrency)
            else:
                raise click.ClickException(f"unknown part {part!r}: drain, steps or profile")
        finally:
            stack.close()
            engine.dispose()
            postgres.drop_database(database)
            server.stop()
    return results


@click.command()
@click.option("--jobs", default=2000, show_default=True, help="Jobs drained in part 1.")
@click.option("--concurrency", default=16, show_default=True, help="Worker concurrency in part 1.")
@click.option("--parts", default="drain,steps", show_default=True, help="Any of drain, steps, profile.")
@click.option("--profile-jobs", default=500, show_default=True, help="Jobs drained under pyinstrument.")
@click.option("--profile-concurrency", default=1, show_default=True, help="Worker concurrency under pyinstrument.")
@click.option("--pg-url", default="", help="PostgreSQL server to create databases on [default: a throwaway cluster].")
def main(jobs: int, concurrency: int, parts: str, profile_jobs: int, profile_concurrency: int, pg_url: str) -> None:
    """Measure the worker's throughput, CPU per job and per-step latency; profile it."""
    binary = redis_server_binary()
    cluster = None
    if not pg_url and postgres.postgres_bindir():
        cluster = StatsCluster(postgres.postgres_bindir(), free_port())
        cluster.init()
        cluster.start()
        pg_url = cluster.url()
    if binary is None or not pg_url or not postgres.can_connect(pg_url):
        raise click.ClickException("needs a redis-server binary and PostgreSQL (initdb, or --pg-url)")
    try:
        results = run_parts(binary, pg_url, parts, jobs, concurrency, profile_jobs, profile_concurrency)
    finally:
        if cluster:
            cluster.destroy()
    flags = f"--parts {parts} --jobs {jobs} --concurrency {concurrency}"
    if "profile" in results:
        flags += f" --profile-jobs {profile_jobs} --profile-concurrency {profile_concurrency}"
    click.echo(f"Command: `python -m bench.worker_profile {flags}`\n")
    if "drain" in results:
        d = results["drain"]
        click.echo("| drain, one worker, pre-queued jobs | value |\n|---|---|")
        click.echo(f"| throughput (first claim to last finish) | {d['jobs_per_s']:.0f} jobs/s |")
        click.echo(
            f"| worker CPU per job | {d['user_ms'] + d['system_ms']:.1f} ms "
            f"({d['user_ms']:.1f} user + {d['system_ms']:.1f} system) |\n"
        )
    if "steps" in results:
        click.echo(f"| step of one job at {STEPS_RATE:.0f} jobs/s | p50 | p90 |\n|---|---|---|")
        for name, values in results["steps"].items():
            click.echo(f"| {name} | {statistics.median(values):.2f} ms | {quantile(values, 0.9):.2f} ms |")
    if "profile" in results:
        click.echo(results["profile"])


if __name__ == "__main__":
    main()
