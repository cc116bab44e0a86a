"""d. Model-server faults: a timeout, connection refused, a 500, invalid JSON, a hang after the
headers, a dropped connection. Each ends in failover to a healthy server, or ``failed`` with the
reason when no server is healthy; no job is ever left ``running``.

The faulty server is the ``edge`` target, preferred by every job so it is tried first; its shared
stats are cleared before each case so an open circuit does not skip it.
"""

from __future__ import annotations

import pytest

from tests.faults.ledger import Ledger

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

CALL_TIMEOUT_S = "1"
"""ROUTING_TIMEOUT_SECONDS for the worker, so the stalling faults cost a second each."""
EXPECTED_KIND = {
    "timeout": "timeout",
    "http_500": "http_5xx",
    "invalid_json": "invalid_response",
    "hang_after_headers": "timeout",
    "close_connection": "transport_error",
}
OBSERVATIONS = "uses two-word phrases"


def submit_and_wait(api, redis_client) -> dict:
    redis_client.delete("pedi:stats:edge", "pedi:stats:gpu")
    job = api.submit(observations=OBSERVATIONS, preferred_target="edge", sla_ms=30_000)
    return api.wait(job["job_id"], timeout=30)


def test_model_server_faults_end_in_failover_or_a_reasoned_failure(stack, pg_url, redis_server, report):
    edge = stack.model_server("edge", tier="edge", latency_ms=5, jitter=0, fail_rate=0)
    gpu = stack.model_server("gpu", tier="gpu", latency_ms=5, jitter=0, fail_rate=0)
    api = stack.api()
    stack.worker(concurrency=4, ROUTING_TIMEOUT_SECONDS=CALL_TIMEOUT_S)
    redis_client = redis_server.client()
    accepted, seen = [], {}

    for fault, kind in EXPECTED_KIND.items():
        edge.set_profile(fault=fault)
        done = submit_and_wait(api, redis_client)
        accepted.append(done["job_id"])
        seen[fault] = [(a["target"], a["outcome"]) for a in done["attempts"]]
        assert done["status"] == "completed" and done["target"] == "gpu", (fault, done)
        assert seen[fault][0] == ("edge", kind), (fault, seen[fault])

    edge.process.kill()
    refused = submit_and_wait(api, redis_client)
    accepted.append(refused["job_id"])
    seen["refused"] = [(a["target"], a["outcome"]) for a in refused["attempts"]]
    assert refused["status"] == "completed" and seen["refused"][0] == ("edge", "connect_error"), refused

    gpu.set_profile(fault="http_500")
    failed = submit_and_wait(api, redis_client)
    accepted.append(failed["job_id"])
    assert failed["status"] == "failed" and failed["error_kind"] == "all_targets_failed", failed
    assert "edge: connect_error" in failed["error"] and "gpu: http_5xx" in failed["error"]

    ledger = Ledger(pg_url)
    try:
        outcome = ledger.outcome("model_server_faults", accepted)
        report(outcome)
        report("model_server_faults: first attempts " + ", ".join(f"{f}->{a[0][1]}" for f, a in seen.items()))
        active = ledger.active_anywhere()
    finally:
        ledger.close()
    redis_client.close()
    assert outcome.clean, outcome
    assert active == 0, "no job left queued or running"
