"""SIGTERM is a warm shutdown: the jobs in flight finish, the worker exits 0, and a job submitted
meanwhile is left on the queue for the next worker (every slot is busy, so none is taken)."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime

import pytest

from tests.faults.ledger import Burst

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

MODEL_LATENCY_MS = 3000


def test_sigterm_lets_the_jobs_in_flight_finish(stack, ledger, report):
    stack.model_server("gpu", tier="gpu", latency_ms=MODEL_LATENCY_MS, jitter=0, fail_rate=0, capacity=64)
    api = stack.api()
    worker = stack.worker(concurrency=3, name="leaving")
    body = {"age_months": 40, "observations": "rides a tricycle", "sla_ms": 120_000}
    burst = Burst(api.url)
    burst.run(3, threads=1, body=body)
    in_flight = burst.accepted()
    deadline = time.monotonic() + 20
    while set(ledger.statuses(in_flight).values()) != {"running"} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(ledger.statuses(in_flight).values()) == {"running"}

    worker.signal(signal.SIGTERM)
    signalled_at = datetime.now(UTC)
    burst.run(1, threads=1, body=body)
    late = burst.accepted()[-1]
    exit_code = worker.process.wait(30)
    exited_at = datetime.now(UTC)

    statuses = ledger.statuses([*in_flight, late])
    assert exit_code == 0
    assert [statuses[i] for i in in_flight] == ["completed"] * 3, statuses
    assert statuses[late] == "queued", "left for the next worker"
    for job_id in in_flight:
        events = ledger.events(job_id)
        assert [e for e, _, _ in events].count("claimed") == 1, "finished by the same worker, not recovered"
        finished = next(at for event, at, _ in events if event == "completed")
        assert signalled_at < finished < exited_at

    stack.worker(concurrency=4, name="next")
    ledger.wait_terminal([late], timeout=30)
    accepted = [*in_flight, late]
    outcome = ledger.outcome("worker_sigterm", accepted)
    report(outcome)
    assert outcome.clean, outcome
