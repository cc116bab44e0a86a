"""b. Redis loses everything (FLUSHALL, then a restart: the bundled Redis keeps nothing on disk)
while jobs are queued and no worker runs. The API's own reconciler must put every job back.

Faster knobs than the defaults keep the suite short; test_worker_killed measures the defaults.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.ledger import Burst

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

KNOBS = {"RECONCILER_INTERVAL_SECONDS": "1", "RECONCILER_GRACE_SECONDS": "2"}
JOBS = 40


def wait_queue_length(client, key: str, length: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = client.llen(key)
        if current >= length:
            return current
        time.sleep(0.2)
    return client.llen(key)


def test_flushall_then_restart_redis_with_jobs_queued(stack, ledger, report, redis_server):
    stack.model_server("gpu", tier="gpu", latency_ms=5, jitter=0, fail_rate=0, capacity=64)
    api = stack.api(**KNOBS)
    burst = Burst(api.url)
    burst.run(JOBS, threads=4, body={"age_months": 30, "observations": "stacks blocks", "sla_ms": 60_000})
    accepted = burst.accepted()
    client = redis_server.client()
    assert client.llen("rq:queue:pedi-screen") == JOBS

    client.flushall()
    client.close()
    redis_server.restart()
    restarted = time.monotonic()
    client = redis_server.client()
    assert client.dbsize() in (0, 1), "nothing survived but perhaps the reconciler's lock"

    refilled = wait_queue_length(client, "rq:queue:pedi-screen", JOBS, timeout=20)
    refill_s = time.monotonic() - restarted
    assert refilled == JOBS, "the API's reconciler alone put every job back on the queue"
    stack.worker(concurrency=8, **KNOBS)
    statuses = ledger.wait_terminal(accepted, timeout=60)
    outcome = ledger.outcome("redis_flush_restart", accepted)
    report(outcome)
    report(f"redis_flush_restart: queue refilled {refill_s:.1f} s after the restart (grace 2 s, interval 1 s)")

    assert outcome.clean, (outcome, statuses)
    assert set(statuses.values()) == {"completed"}
    requeued = ledger.event_counts("requeued")
    assert set(requeued) == set(accepted) and set(requeued.values()) == {1}
    requeuers = {actor for i in accepted for event, _, actor in ledger.events(i) if event == "requeued"}
    assert requeuers and all(actor.startswith("reconciler:api:") for actor in requeuers), requeuers
    assert set(ledger.event_counts("claimed").values()) == {1}
    client.close()


def test_redis_restarts_under_a_busy_worker(stack, ledger, report, redis_server):
    """Redis goes away and comes back empty while a worker has calls in flight: those jobs still
    finish (shared stats degrade to priors), the worker stays up, registers again, and works on."""
    stack.model_server("gpu", tier="gpu", latency_ms=2000, jitter=0, fail_rate=0, capacity=64)
    api = stack.api(**KNOBS)
    worker = stack.worker(concurrency=8, name="steady", **KNOBS)
    body = {"age_months": 12, "observations": "pulls to stand", "sla_ms": 60_000}
    before = Burst(api.url)
    before.run(6, threads=2, body=body)
    deadline = time.monotonic() + 20
    while set(ledger.statuses(before.accepted()).values()) != {"running"} and time.monotonic() < deadline:
        time.sleep(0.05)

    redis_server.stop()
    time.sleep(1.0)
    redis_server.start()
    after = Burst(api.url)
    after.run(6, threads=2, body=body)
    accepted = before.accepted() + after.accepted()
    statuses = ledger.wait_terminal(accepted, timeout=60)
    outcome = ledger.outcome("redis_restart_busy_worker", accepted)
    report(outcome)

    assert outcome.clean, (outcome, statuses)
    assert set(statuses.values()) == {"completed"}
    assert worker.alive, "the worker rode out the outage"
    client = redis_server.client()
    deadline = time.monotonic() + 15
    while not client.sismember("rq:workers", "rq:worker:steady") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.sismember("rq:workers", "rq:worker:steady"), "registered again after the restart"
    client.close()
    assert set(ledger.event_counts("claimed")[i] for i in before.accepted()) == {1}, "in-flight jobs were not re-run"
