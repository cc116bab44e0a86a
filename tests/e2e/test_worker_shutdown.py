"""Warm shutdown of the threaded worker: jobs in flight finish, nothing dequeued is stranded."""

from __future__ import annotations

import time

import pytest
import redis

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]


def running_count(api) -> int:
    return len(api.http.get("/api/jobs", params={"status": "running"}).json()["items"])


def test_sigterm_finishes_jobs_in_flight_and_leaves_the_rest_queued_in_redis(stack, redis_url):
    stack.model_server("gpu", tier="gpu", latency_ms=1500, jitter=0, capacity=64)
    api = stack.api()
    worker = stack.worker(concurrency=4)
    jobs = [api.submit(sla_ms=60_000)["job_id"] for _ in range(8)]
    deadline = time.monotonic() + 20
    while running_count(api) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running_count(api) == 4

    exit_code = worker.stop(timeout=30)
    assert exit_code == 0, worker.tail()
    statuses = [api.status(j)["status"] for j in jobs]
    assert statuses.count("completed") == 4 and statuses.count("queued") == 4, statuses

    connection = redis.Redis.from_url(redis_url)
    waiting = {i.decode() for i in connection.lrange("rq:queue:pedi-screen", 0, -1)}
    stranded = connection.lrange("rq:queue:pedi-screen:intermediate", 0, -1)
    assert waiting == {j for j, s in zip(jobs, statuses, strict=True) if s == "queued"}
    assert stranded == []

    stack.worker(concurrency=4)
    assert all(api.wait(j, timeout=30)["status"] == "completed" for j in jobs)
