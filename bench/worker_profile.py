"""Where a worker's time goes: throughput and CPU per job on pre-queued jobs, and the latency of
each step of one job at low load.

    python -m bench.worker_profile [--jobs 2000] [--concurrency 16]

1. Drain: ``--jobs`` screening jobs are stored and enqueued directly (no API), then one
   ``python -m modelreasoner.worker`` drains them against model servers that answer at once.
   Reports jobs/s (first claim to last finish) and the worker's CPU per job (user and system,
   from /proc), start-up included (about 0.6 s in all).
2. Steps: 200 jobs submitted over HTTP at 50/s; the p50/p90 of submitted → claimed → routed →
   model call answered → completed, from the audit trail's timestamps.

Real processes, a private redis-server and a fresh database on ``--pg-url``. Linux only (/proc).
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
from orchestrator import intake
from orchestrator.models import Audit, Job
from orchestrator.queue_rq import enqueue_job, get_queue
from orchestrator.schemas import JobCreate
from tests.conftest import migrate
from tests.support import postgres
from tests.support.env import free_port
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


def drain(stack: Stack, engine, redis_url: str, count: int, concurrency: int) -> dict:
    queue = get_queue(redis.Redis.from_url(redis_url))
    with Session(engine) as session:
        body = JobCreate(**BODY)
        ids = [intake.submit_screening(session, body, actor="bench", default_sla_ms=2000).job.id for _ in range(count)]
    for job_id in ids:
        enqueue_job(queue, str(job_id))
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


@click.command()
@click.option("--jobs", default=2000, show_default=True, help="Jobs drained in part 1.")
@click.option("--concurrency", default=16, show_default=True, help="Worker concurrency in part 1.")
@click.option("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres", show_default=True)
def main(jobs: int, concurrency: int, pg_url: str) -> None:
    """Measure the worker's throughput, CPU per job and per-step latency."""
    binary = redis_server_binary()
    if binary is None or not postgres.can_connect(pg_url):
        raise click.ClickException("needs a redis-server binary and a reachable PostgreSQL (--pg-url)")
    results = {}
    for part in ("drain", "steps"):
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
            else:
                results[part] = steps(stack, engine)
        finally:
            stack.close()
            engine.dispose()
            postgres.drop_database(database)
            server.stop()
    d = results["drain"]
    click.echo(f"Command: `python -m bench.worker_profile --jobs {jobs} --concurrency {concurrency}`\n")
    click.echo("| drain, one worker, pre-queued jobs | value |\n|---|---|")
    click.echo(f"| throughput (first claim to last finish) | {d['jobs_per_s']:.0f} jobs/s |")
    click.echo(
        f"| worker CPU per job | {d['user_ms'] + d['system_ms']:.1f} ms "
        f"({d['user_ms']:.1f} user + {d['system_ms']:.1f} system) |\n"
    )
    click.echo(f"| step of one job at {STEPS_RATE:.0f} jobs/s | p50 | p90 |\n|---|---|---|")
    for name, values in results["steps"].items():
        click.echo(f"| {name} | {statistics.median(values):.2f} ms | {quantile(values, 0.9):.2f} ms |")


if __name__ == "__main__":
    main()
