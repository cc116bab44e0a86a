"""Stock ``rq worker pedi-screen`` in bench.e2e: its per-job overhead against stock RQ's own
fork-per-job floor, measured in the same run.

A stock RQ worker runs one job at a time, each in a forked work horse. With jobs queued before
it starts (``--burst``), the time between two consecutive finishes is one job's whole cycle:
dequeue, fork, the job (imports and set-up in the horse, claim, model call, writes), reaping and
RQ's bookkeeping. Overhead of a job = its cycle − its model-call time (``jobs.latency_ms``).
The baseline is the same cycle for a no-op job under the same stock forking ``rq worker``.
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime

import redis
from rq import Queue
from rq.job import Job as RQJob
from sqlalchemy import select
from sqlalchemy.orm import Session

from bench.e2e_phases import Env, percentile, say, store_jobs
from orchestrator.models import Job
from tests.support.procs import ManagedProcess, python

RQ_SETTINGS_MODULE = "modelreasoner.rq_settings"


def burst(env: Env, name: str, queue: str, timeout: float, **extra: str) -> None:
    """Run ``rq worker <queue> --burst`` (stock CLI, default forking Worker) until it exits."""
    argv = python("-m", "rq.cli", "worker", queue, "--url", env.stack.redis_url, "--burst", "--name", name)
    process = ManagedProcess(
        name, argv, env=env.stack.base_env(**env.stack.target_env(), **extra), log_path=env.workdir / f"{name}.log"
    )
    process.start()
    try:
        code = process.process.wait(timeout)
    except Exception:
        process.kill()
        raise
    if code != 0:
        raise RuntimeError(f"{name} exited with {code}:\n{process.tail()}")


def summary(overheads_ms: list[float]) -> dict:
    return {"p50": percentile(overheads_ms, 0.5), "mean": statistics.fmean(overheads_ms), "n": len(overheads_ms)}


def cycles(finishes: list[datetime]) -> list[float]:
    ordered = sorted(finishes)
    return [(b - a).total_seconds() * 1000.0 for a, b in zip(ordered, ordered[1:], strict=False)]


def stock_noop(env: Env, count: int) -> dict:
    """The floor: stock ``rq worker`` (forking) over ``count`` no-op jobs."""
    connection = redis.Redis.from_url(env.stack.redis_url)
    queue = Queue("bench-noop-fork", connection=connection)
    ids = [queue.enqueue("bench.noop.noop", result_ttl=600).id for _ in range(count)]
    say(f"(stock) rq worker, {count} no-op jobs (the fork-per-job floor)")
    burst(env, "rq-stock-noop", "bench-noop-fork", timeout=30 + count * 5.0)
    finishes = [job.ended_at for job in RQJob.fetch_many(ids, connection=connection) if job and job.ended_at]
    if len(finishes) < count:
        raise RuntimeError(f"only {len(finishes)} of {count} no-op jobs finished under stock rq worker")
    return summary(cycles(finishes))


def stock_pipeline(env: Env, count: int, rq_config: str | None = None) -> dict:
    """``rq worker pedi-screen`` over ``count`` screening jobs, model servers that answer at once."""
    since = datetime.now(UTC)
    store_jobs(env, count)
    label = f"RQ_CONFIG={rq_config}" if rq_config else "no RQ_CONFIG"
    say(f"(stock) rq worker pedi-screen, {count} jobs, {label}")
    started = time.monotonic()
    extra = {"RQ_CONFIG": rq_config} if rq_config else {}
    burst(env, f"rq-stock{'-config' if rq_config else ''}", "pedi-screen", timeout=60 + count * 10.0, **extra)
    with Session(env.watch) as session:
        rows = session.execute(
            select(Job.finished_at, Job.latency_ms, Job.status).where(Job.created_at >= since).order_by(Job.finished_at)
        ).all()
    done = [row for row in rows if row.status == "completed"]
    if len(done) < count:
        raise RuntimeError(f"only {len(done)} of {count} jobs completed under stock rq worker ({len(rows)} stored)")
    spans = cycles([row.finished_at for row in done])
    overhead = [span - (row.latency_ms or 0.0) for span, row in zip(spans, done[1:], strict=True)]
    result = summary(overhead)
    say(f"(stock) {label}: p50 {result['p50']:.0f} ms per job ({time.monotonic() - started:.0f} s)")
    return result
