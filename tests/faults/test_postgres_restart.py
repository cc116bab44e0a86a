"""c. Postgres goes down and comes back during a burst of submits.

The API must answer 503 with Retry-After while it is down (never 500, never a hang: every request
is timed), and every job that got a 202 must complete. The shared test server must not be
stopped, so this test runs its own throwaway cluster.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.faults.ledger import Burst, Ledger

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

REQUEST_BOUND_S = 8.0
"""Slowest acceptable answer while Postgres is down (s): DB_CONNECT_TIMEOUT_SECONDS is 3."""
DOWN_FOR_S = 4.0
KNOBS = {
    "RECONCILER_INTERVAL_SECONDS": "1",
    "RECONCILER_GRACE_SECONDS": "2",
    "JOB_LEASE_SECONDS": "5",
    "ROUTING_TIMEOUT_SECONDS": "5",  # a lease never shorter than the longest call
}


def test_postgres_restart_during_a_submit_burst(own_stack, cluster, report):
    stack, url = own_stack
    stack.model_server("gpu", tier="gpu", latency_ms=5, jitter=0, fail_rate=0, capacity=64)
    api = stack.api(**KNOBS)
    stack.worker(concurrency=8, **KNOBS)
    burst, stop = Burst(api.url, request_timeout=30.0), threading.Event()
    body = {"age_months": 18, "observations": "points at dogs", "sla_ms": 120_000}
    submitter = threading.Thread(target=burst.run_until, args=(stop, 4, body))
    submitter.start()
    try:
        time.sleep(2.0)
        cluster.stop("fast")
        down_from = len(burst.answers)
        time.sleep(DOWN_FOR_S)
        down_to = len(burst.answers)
        cluster.start()
        time.sleep(3.0)
    finally:
        stop.set()
        submitter.join(60)

    ledger = Ledger(url)
    try:
        accepted = burst.accepted()
        statuses = ledger.wait_terminal(accepted, timeout=90)
        outcome = ledger.outcome("postgres_restart", accepted)
        report(outcome)
        counts = burst.statuses()
        report(f"postgres_restart: answers {dict(counts)}, slowest {burst.slowest():.2f} s")
        active = ledger.active_anywhere()
    finally:
        ledger.close()

    assert outcome.clean, (outcome, statuses)
    assert set(statuses.values()) == {"completed"}
    assert set(counts) <= {202, 503}, f"only 202 or 503, never a 500 or a hang: {counts}"
    assert burst.slowest() < REQUEST_BOUND_S
    during = burst.answers[down_from:down_to]
    assert any(status == 503 for status, *_ in during), "the outage was seen as 503s"
    for status, _, payload, headers in burst.answers:
        if status == 503:
            assert headers.get("retry-after") and payload["error"]["code"] == "database_unavailable"
    assert any(status == 202 for status, *_ in burst.answers[down_to:]), "submits succeed again"
    assert active == 0, "no job anywhere in the database is left queued or running"
