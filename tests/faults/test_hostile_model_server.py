"""Issue 11, defects 2 and 3: a model server that answers badly in every way we know of. For
each bad answer the job's first call is a failed attempt of the right kind (with its audit row),
the job fails over to the healthy server and completes, and the bad server's circuit opens once
CIRCUIT_CONSECUTIVE_FAILURES (5) calls in a row have failed.

The hostile server (tests/support/hostile_server.py) is the ``edge`` target, preferred by every
job; the reference model server is ``gpu``. Shared stats are cleared before each case.
"""

from __future__ import annotations

import json
import time

import pytest

from orchestrator.routing.config import RoutingConfig
from tests.faults.hostile import hostile_server

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

CASES = {
    # mode: the error kind of the failed attempt
    "risk_list": "invalid_response",
    "deep_brackets": "invalid_response",
    "gzip_garbage": "invalid_response",
    "nan": "invalid_response",
    "infinity": "invalid_response",
    "nul": "invalid_response",
    "lone_surrogate": "invalid_response",
    "html_200": "invalid_response",
    "json_as_text": "invalid_response",
    "redirect": "invalid_response",
    "truncated": "transport_error",
    "slow_drip": "timeout",
}
FAILURES_TO_OPEN = RoutingConfig().circuit_consecutive_failures
CALL_TIMEOUT_S = "1"
TARGETS = 2
"""Calls per job are bounded by the targets (docs/reliability.md): here edge, then gpu."""


def circuit(redis_client, target: str) -> str:
    blob = redis_client.get(f"pedi:stats:{target}")
    return json.loads(blob)["circuit"] if blob else "closed"


def test_every_bad_answer_fails_over_and_opens_the_circuit(stack, ledger, redis_server, report):
    edge = hostile_server(stack, "edge")
    stack.model_server("gpu", tier="gpu", latency_ms=5, jitter=0)
    api = stack.api()
    stack.worker(concurrency=4, ROUTING_TIMEOUT_SECONDS=CALL_TIMEOUT_S)
    redis_client = redis_server.client()
    accepted, seen, slowest = [], {}, 0.0
    for mode, kind in CASES.items():
        edge.mode(mode)
        redis_client.delete("pedi:stats:edge", "pedi:stats:gpu")
        for n in range(FAILURES_TO_OPEN):
            started = time.monotonic()
            job = api.submit(observations="uses two-word phrases", preferred_target="edge", sla_ms=30_000)
            done = api.wait(job["job_id"], timeout=30)
            slowest = max(slowest, time.monotonic() - started)
            accepted.append(done["job_id"])
            attempts = [(a["target"], a["outcome"]) for a in done["attempts"]]
            assert done["status"] == "completed" and done["target"] == "gpu", (mode, n, done)
            assert attempts == [("edge", kind), ("gpu", "ok")], (mode, n, attempts)
        seen[mode] = circuit(redis_client, "edge")
        assert seen[mode] == "open", f"{mode}: {FAILURES_TO_OPEN} failed calls in a row open the circuit"
    redis_client.close()

    outcome = ledger.outcome("hostile_model_server", accepted)
    report(outcome)
    report(f"hostile_model_server: {len(CASES)} bad answers, circuit open after each; slowest job {slowest:.1f} s")
    assert outcome.clean, outcome
    assert outcome.max_calls <= TARGETS
    assert ledger.calls_by_target(accepted)["edge"] == edge.calls() == len(accepted), "one call per job to edge"
    assert ledger.active_anywhere() == 0
