"""Stock ``rq worker pedi-screen``: jobs run end to end, bare and with ``RQ_CONFIG`` set to
``modelreasoner.rq_settings`` (the set-up done once in the parent, before the forks).

Each variant runs jobs one after another against a 5 ms model server and writes, to
``per_job_seconds.json`` in the test's artifacts and to stdout (``pytest -s``), the median time
from submit to claim and from submit to completed, both read from the job's own timestamps. The
threaded worker runs too, as the floor those figures are read against. Timings are reported,
not asserted: this machine is shared and noisy. With ``RQ_CONFIG``, invalid settings stop the
worker at start, naming the variable, instead of failing every job.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from datetime import datetime

import pytest

from tests.support.env import ROOT
from tests.support.stack import Stack

pytestmark = pytest.mark.timeout(240)

JOBS = 12
"""Jobs per variant, one at a time (the first is dropped: it includes the worker's warm-up)."""
VARIANTS = {
    "bare rq worker": ("rq", {}),
    "rq worker, RQ_CONFIG=modelreasoner.rq_settings": ("rq", {"RQ_CONFIG": "modelreasoner.rq_settings"}),
    "python -m modelreasoner.worker (floor)": ("threaded", {}),
}


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_stock_worker_runs_jobs_end_to_end(stack: Stack, artifacts, variant):
    kind, env = VARIANTS[variant]
    stack.model_server("edge", tier="edge", latency_ms=5)
    api = stack.api()
    stack.worker(kind=kind, concurrency=1, **env)
    to_claim, to_done = [], []
    for _ in range(JOBS):
        done = api.wait(api.submit(sla_ms=5000)["job_id"])
        assert done["status"] == "completed" and done["target"] == "edge", done
        to_claim.append(seconds_between(done["created_at"], done["started_at"]))
        to_done.append(seconds_between(done["created_at"], done["finished_at"]))
    figures = {
        "variant": variant,
        "jobs": JOBS - 1,
        "median_submit_to_claim_ms": round(statistics.median(to_claim[1:]) * 1000, 1),
        "median_submit_to_completed_ms": round(statistics.median(to_done[1:]) * 1000, 1),
    }
    (artifacts / "per_job_seconds.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures))


def test_invalid_settings_stop_the_stock_worker_at_start_naming_the_variable(stack: Stack):
    env = stack.base_env(JOB_LEASE_SECONDS="abc", RQ_CONFIG="modelreasoner.rq_settings")
    argv = [sys.executable, "-m", "rq.cli", "worker", "--burst", "--url", stack.redis_url]
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "JOB_LEASE_SECONDS" in done.stderr and "Listening on" not in done.stdout + done.stderr
