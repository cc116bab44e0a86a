"""Where one ``POST /api/submit`` spends its time: the real app, in process, under pyinstrument.

    DATABASE_URL=... REDIS_URL=... API_KEYS_JSON=... ENV=production \\
        python -m bench.submit_profile --requests 2000 --key KEY [--html out.html] [--cpu]

The app is built by ``create_app()`` from the environment (as uvicorn would) and driven through
its ASGI interface by httpx, one request at a time. FastAPI runs sync endpoints and dependencies
in a thread pool, which pyinstrument (one thread) would not see; here that hop is replaced by a
direct call, so the profile shows the work of a request, not the hop itself (measure the hop
with wrk: docs/benchmarks/submit-path.md). Needs a migrated database and a Redis.

``--cpu`` profiles CPU time instead (cProfile on ``time.process_time``: waits on Postgres and
Redis drop out) and prints the cumulative CPU of the steps of a request.
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import time
from contextlib import asynccontextmanager

import click
import fastapi.dependencies.utils
import fastapi.routing
import httpx
from pyinstrument import Profiler

from orchestrator.app.main import create_app

BODY = {"age_months": 18, "observations": "walks with support, says two words", "sla_ms": 2000}


async def _inline(func, *args, **kwargs):
    return func(*args, **kwargs)


@asynccontextmanager
async def _inline_cm(cm):
    with cm as value:
        yield value


def run_inline() -> None:
    """Run FastAPI's sync endpoints and dependencies on the calling thread (profiling only)."""
    for module in (fastapi.routing, fastapi.dependencies.utils):
        if hasattr(module, "run_in_threadpool"):
            module.run_in_threadpool = _inline
    fastapi.dependencies.utils.contextmanager_in_threadpool = _inline_cm


async def drive(app, count: int, key: str) -> float:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        started = time.perf_counter()
        for _ in range(count):
            response = await client.post("/api/submit", json=BODY, headers={"x-api-key": key})
            if response.status_code != 202:
                raise SystemExit(f"submit answered {response.status_code}: {response.text}")
        return time.perf_counter() - started


CPU_STEPS = (
    r"orchestrator/(tracing|app/middleware).py.*__call__|routers/jobs.py.*(submit|accept)|intake.py.*_write"
    r"|quotas.py|auth.py|rq/queue.py.*\(enqueue\)|dependencies/utils.py.*solve_dependencies"
    r"|fastapi/routing.py.*_match|sqlalchemy/orm/session.py.*(connection|commit)\)|db.py.*session_scope"
)
"""The steps ``--cpu`` prints (regular expression over pstats' rows)."""


def cpu_profile(app, count: int, key: str) -> None:
    profile = cProfile.Profile(time.process_time)
    profile.enable()
    asyncio.run(drive(app, count, key))
    profile.disable()
    print(f"CPU of {count} submits under cProfile (which inflates small Python calls), cumulative:")
    pstats.Stats(profile).sort_stats("cumulative").print_stats(CPU_STEPS)


@click.command()
@click.option("--requests", "count", default=2000, show_default=True)
@click.option("--key", required=True, help="An API key with the submit scope")
@click.option("--html", type=click.Path(dir_okay=False), default=None, help="Also write pyinstrument's HTML")
@click.option("--cpu", is_flag=True, help="Profile CPU time with cProfile instead of wall time")
def main(count: int, key: str, html: str | None, cpu: bool) -> None:
    run_inline()
    app = create_app()
    asyncio.run(drive(app, 50, key))  # warm up: connections, compiled statements
    if cpu:
        cpu_profile(app, count, key)
        app.state.services.dispose()
        return
    profiler = Profiler(async_mode="enabled")
    profiler.start()
    elapsed = asyncio.run(drive(app, count, key))
    profiler.stop()
    print(f"{count} submits in {elapsed:.2f} s: {elapsed / count * 1000:.2f} ms each, one at a time")
    print(profiler.output_text(unicode=True, color=False, show_all=False))
    if html:
        with open(html, "w") as out:
            out.write(profiler.output_html())
    app.state.services.dispose()


if __name__ == "__main__":
    main()
