"""A job that ends ``failed`` is an RQ failure too, where operators look: ``rq info`` (the real
CLI), RQ's FailedJobRegistry and the job's RQ status; a completed one is an RQ success. The
failure carries the error kind and nothing else, and RQ never runs it again by itself.

Real processes: a private redis-server, Postgres, the reference model server, the API, and each
kind of worker: ``python -m modelreasoner.worker``, stock ``rq worker pedi-screen``, and the
forking worker with metrics (``RQ_WORKER_CLASS=modelreasoner.worker.ForkingMetricsWorker``).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from rq.job import Job as RQJob
from rq.job import JobStatus as RQStatus
from rq.registry import FailedJobRegistry

from orchestrator.constants import QUEUE_NAME

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]


def rq_info(redis_url: str) -> str:
    """``rq info --raw --only-queues pedi-screen``, the CLI an operator runs."""
    binary = Path(sys.executable).with_name("rq")
    argv = [str(binary)] if binary.exists() else [sys.executable, "-m", "rq.cli"]
    done = subprocess.run(
        [*argv, "info", "--raw", "--only-queues", "--url", redis_url, QUEUE_NAME],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def counts(info: str) -> dict[str, int]:
    """``queue pedi-screen 0, 0 executing, 1 finished, 1 failed`` -> {"queued": 0, ...}."""
    match = re.search(rf"queue {QUEUE_NAME} (\d+), (\d+) executing, (\d+) finished, (\d+) failed", info)
    assert match, info
    return dict(zip(("queued", "executing", "finished", "failed"), map(int, match.groups()), strict=True))


def wait_for(predicate, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


WORKERS = {
    "threaded": ("threaded", {}),
    "rq": ("rq", {}),
    "forking": ("rq", {"RQ_WORKER_CLASS": "modelreasoner.worker.ForkingMetricsWorker"}),
}


@pytest.mark.parametrize("worker", list(WORKERS))
def test_a_failed_job_is_an_rq_failure_and_rq_info_shows_it(stack, redis_url, worker):
    model = stack.model_server("gpu", tier="gpu", latency_ms=5, jitter=0)
    api = stack.api(api_key="rq-failed-key-0001")
    kind, env = WORKERS[worker]
    stack.worker(kind=kind, concurrency=2, **env)

    completed = api.submit(age_months=24, observations="Says no words yet.", sla_ms=10_000)
    assert api.wait(completed["job_id"])["status"] == "completed"
    model.set_profile(fault="http_500")
    failed = api.submit(age_months=24, observations="Does not point.", sla_ms=10_000)
    status = api.wait(failed["job_id"])
    assert status["status"] == "failed" and status["error_kind"] == "all_targets_failed", status

    connection = redis.Redis.from_url(redis_url)
    try:
        registry = FailedJobRegistry(QUEUE_NAME, connection=connection)
        wait_for(lambda: failed["job_id"] in registry.get_job_ids(), what="the failed registry")
        seen = counts(rq_info(redis_url))
        assert seen == {"queued": 0, "executing": 0, "finished": 1, "failed": 1}, seen

        rq_job = RQJob.fetch(failed["job_id"], connection=connection)
        assert rq_job.get_status() == RQStatus.FAILED
        reason = rq_job.latest_result().exc_string
        assert reason.strip().endswith("JobFailed: job failed: all_targets_failed"), reason
        assert not rq_job.retries_left, "the orchestrator enqueues without RQ retries"
        assert RQJob.fetch(completed["job_id"], connection=connection).get_status() == RQStatus.FINISHED
        # Never run again behind the orchestrator's back: nothing queued, scheduled or started later.
        time.sleep(2)
        assert counts(rq_info(redis_url)) == seen
        assert connection.llen(f"rq:queue:{QUEUE_NAME}") == 0
        assert api.status(failed["job_id"])["status"] == "failed"
    finally:
        connection.close()
