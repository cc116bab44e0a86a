"""Issue 11, defects 4 and 10: a Postgres blip during failover repeats no model call, and every
call the model servers served has its audit rows.

Both targets are hostile servers, which count the requests they read: ``edge`` works 1.5 s and
answers 500, ``gpu`` answers at once. Jobs prefer edge; while their edge calls are in flight,
the private Postgres cluster stops for a few seconds, so the failover bookkeeping (the failed
attempt's row, gpu's ``call_started`` row) meets a dead database. The writes are retried; the
calls are not: each server's count equals the audit's ``call_started`` rows for it, one per job.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.hostile import hostile_server
from tests.faults.ledger import Ledger

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

JOBS = 4
"""Fewer than CIRCUIT_CONSECUTIVE_FAILURES, so every job is routed to edge first."""
DOWN_FOR_S = 4.0
TARGETS = 2


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_a_postgres_blip_during_failover_repeats_no_model_call(own_stack, cluster, report):
    stack, url = own_stack
    edge = hostile_server(stack, "edge", mode="slow_500")
    gpu = hostile_server(stack, "gpu", mode="ok")
    api = stack.api()
    stack.worker(concurrency=JOBS, HEDGE_ENABLED="false")
    accepted = [
        api.submit(observations="stacks blocks", preferred_target="edge", sla_ms=120_000)["job_id"] for _ in range(JOBS)
    ]
    assert wait_for(lambda: edge.calls() == JOBS, 10), "every job's edge call is in flight"
    cluster.stop("fast")
    time.sleep(DOWN_FOR_S)
    cluster.start()

    ledger = Ledger(url)
    try:
        statuses = ledger.wait_terminal(accepted, timeout=90)
        outcome = ledger.outcome("postgres_blip_failover", accepted)
        audited = ledger.calls_by_target(accepted)
        attempts = ledger.event_counts("attempt")
        claims = ledger.event_counts("claimed")
    finally:
        ledger.close()
    served = {"edge": edge.calls(), "gpu": gpu.calls()}
    report(outcome)
    report(f"postgres_blip_failover: served {served}, audited call_started {dict(audited)}")
    assert outcome.clean and set(statuses.values()) == {"completed"}, (outcome, statuses)
    assert served == {"edge": JOBS, "gpu": JOBS} == dict(audited), "one call per job per target, each audited"
    assert all(attempts[i] == TARGETS and claims[i] == 1 for i in accepted)
    assert outcome.max_calls == TARGETS
    assert "database unavailable; retrying" in stack.logs(), "the blip hit the failover bookkeeping"
