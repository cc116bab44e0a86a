"""e. A burst of 2,000 jobs on two workers: as many terminal as accepted, none processed twice."""

from __future__ import annotations

import time

import pytest

from tests.faults.ledger import Burst

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

JOBS = 2000


def test_a_burst_of_2000_jobs_on_two_workers(stack, ledger, report):
    stack.model_server("gpu", tier="gpu", latency_ms=2, jitter=0, fail_rate=0, capacity=1000)
    api = stack.api()
    for name in ("burst-a", "burst-b"):
        stack.worker(concurrency=16, name=name)
    started = time.monotonic()
    burst = Burst(api.url)
    burst.run(JOBS, threads=8, body={"age_months": 9, "observations": "sits without support", "sla_ms": 600_000})
    submitted_s = time.monotonic() - started
    accepted = burst.accepted()
    statuses = ledger.wait_terminal(accepted, timeout=240)
    drained_s = time.monotonic() - started
    outcome = ledger.outcome("burst_2000", accepted)
    report(outcome)
    report(f"burst_2000: submitted in {submitted_s:.1f} s, all terminal after {drained_s:.1f} s")

    assert burst.statuses() == {202: JOBS}, burst.statuses()
    assert outcome.clean, outcome
    assert set(statuses.values()) == {"completed"}
    claims = ledger.event_counts("claimed")
    assert set(claims[i] for i in accepted) == {1}, "no job was claimed (run) twice"
    workers = ledger.actors("completed")
    assert len(workers) == 2, f"both workers took part: {workers}"
