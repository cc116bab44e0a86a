#!/usr/bin/env python3
"""Take the console's screenshots for the docs: docs/img/console-<page>.png.

Starts a throwaway stack of real processes (three model servers, the API with an API key, one
worker) on a scratch Postgres database and a private redis-server, submits a handful of cases
(some with an SLA they cannot meet, some that fail over), pushes a little telemetry, then opens
each page in headless Chromium and saves it. The README shows docs/img/console-jobs.png: the
Jobs page with the timeline of a job that failed over open.

    python scripts/console_screenshots.py [--out docs/img] [--server-url postgresql://...]

Needs PostgreSQL (--server-url or TEST_DATABASE_URL: a server where it may create and drop a
database; otherwise a throwaway initdb cluster), redis-server, /usr/bin/chromium and the
playwright package (requirements-dev.txt). It reuses the test suite's process harness
(tests/support), so run it from the repository root.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser.support import CHROMIUM, CHROMIUM_ARGS, VIEWPORT  # noqa: E402
from tests.support import postgres  # noqa: E402
from tests.support.env import free_port  # noqa: E402
from tests.support.redis_server import RedisServer, redis_server_binary  # noqa: E402
from tests.support.stack import Api, Stack  # noqa: E402

API_KEY = "console-screenshots-key"
OBSERVATIONS = [
    "At 24 months she does not point to show things and says no words. Walks well.",
    "Walks, runs and climbs stairs. Uses two-word phrases and points to pictures.",
    "He lost words he used to say and no longer waves bye-bye.",
    "Stacks blocks, scribbles, feeds herself with a spoon. Says about ten words.",
]
SETTLE_MS = 600
"""Time a page gets after its data is on screen, so the self-refreshing pages settle (ms)."""


def scratch_database(server_url: str | None, stack: ExitStack) -> str:
    """A fresh, migrated database on ``server_url`` (or on a throwaway cluster), dropped at exit."""
    from alembic.config import Config

    from alembic import command

    if not server_url:
        bindir = postgres.postgres_bindir()
        if bindir is None:
            sys.exit("no PostgreSQL: pass --server-url or set TEST_DATABASE_URL, or install postgresql")
        cluster = postgres.PostgresCluster(bindir, free_port())
        cluster.init()
        cluster.start()
        stack.callback(cluster.destroy)
        server_url = cluster.url()
    url = postgres.create_database(server_url, prefix="pedi_screens")
    stack.callback(postgres.drop_database, url)
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = url
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")
    return url


def seed(api: Api) -> str:
    """Submit cases and telemetry; return the id of the job to show on the Jobs page."""
    jobs = []
    for i in range(12):
        sla_ms = 30 if i % 4 == 3 else 2000
        preferred = "edge" if i % 3 == 0 else "auto"
        body = {"age_months": 18 + i, "observations": OBSERVATIONS[i % len(OBSERVATIONS)]}
        jobs.append(api.submit(sla_ms=sla_ms, preferred_target=preferred, **body)["job_id"])
    finished = [api.wait(job_id) for job_id in jobs]
    samples = [
        {"target": "edge", "latency_ms": 41, "utilization": 0.62, "queue_depth": 1},
        {"target": "cloud", "latency_ms": 88, "utilization": 0.2, "queue_depth": 0},
        {"target": "gpu", "latency_ms": 13, "utilization": 0.35, "queue_depth": 0},
    ]
    api.http.post("/api/telemetry", json={"samples": samples}).raise_for_status()
    failed_over = [j for j in finished if j["status"] == "completed" and len(j["attempts"]) > 1]
    return (failed_over or finished)[0]["job_id"]


def photograph(api: Api, featured_job: str, out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    shots = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(15_000)
        page.goto(f"{api.url}/ui/#/targets")
        page.fill("#key-input", API_KEY)
        page.click("#key-form button[type=submit]")

        def shot(name: str, ready: str) -> None:
            page.locator(ready).first.wait_for()
            page.wait_for_timeout(SETTLE_MS)
            path = out / f"console-{name}.png"
            page.screenshot(path=str(path), full_page=True)
            shots.append(path)

        shot("targets", "table.targets")
        page.evaluate("location.hash = '#/route'")
        page.fill("main [name=age_months]", "24")
        page.click("main form button[type=submit]")
        shot("route", "table.candidates")
        page.evaluate("location.hash = '#/submit'")
        page.fill("main [name=age_months]", "30")
        page.fill("main [name=observations]", OBSERVATIONS[0])
        page.click("main form button[type=submit]")
        shot("submit", ".follow .job[data-status=completed]")
        page.evaluate(f"location.hash = '#/jobs/{featured_job}'")
        shot("jobs", f".job-detail .job[data-job-id='{featured_job}'] ol.events")
        page.evaluate("location.hash = '#/sla'")
        shot("sla", "table.sla-events")
        page.evaluate("location.hash = '#/metrics'")
        shot("metrics", "table.model-metrics")
        browser.close()
    return shots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="directory for the PNGs")
    parser.add_argument("--server-url", default=os.environ.get("TEST_DATABASE_URL"), help="PostgreSQL server URL")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        sys.exit(f"{CHROMIUM} not found: apt-get install chromium (or scripts/install-tools)")
    binary = redis_server_binary()
    if binary is None:
        sys.exit("redis-server not found")
    args.out.mkdir(parents=True, exist_ok=True)
    with ExitStack() as cleanup, tempfile.TemporaryDirectory(prefix="console-screens-") as logs:
        database = scratch_database(args.server_url, cleanup)
        redis = RedisServer(binary, free_port())
        redis.start()
        cleanup.callback(redis.stop)
        stack = Stack(database, redis.url, Path(logs))
        cleanup.callback(stack.close)
        # The edge server fails one call in four, so some jobs fail over and their timeline shows it.
        stack.model_server("edge", tier="edge", latency_ms=40, jitter=0.3, fail_rate=0.25, seed=7)
        stack.model_server("cloud", tier="cloud", latency_ms=90, jitter=0.2, seed=8)
        stack.model_server("gpu", tier="gpu", latency_ms=12, jitter=0.3, seed=9)
        api = stack.api(api_key=API_KEY)
        stack.worker(concurrency=4)
        for path in photograph(api, seed(api), args.out):
            print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


if __name__ == "__main__":
    main()
