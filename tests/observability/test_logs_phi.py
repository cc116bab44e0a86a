"""JSON logs without PHI or keys, from a real stack at LOG_LEVEL=DEBUG: the API (uvicorn), the
threaded worker and the forking worker (``rq worker -w modelreasoner.worker.ForkingMetricsWorker``,
selected with RQ's own RQ_WORKER_CLASS variable).

Jobs whose observations hold a marker go through the happy path and through the paths that log
most: a model server answering 500 (failover), a validation error, an idempotency conflict, and
wrong API keys that carry the marker themselves. Tracing is on, so job lines carry real trace ids.

The model servers' logs are checked for the marker but not for JSON: ``modelreasoner.server`` is
the reference stand-in for an external model server, with its own plain-text log format, and its
output goes to its own files (model-*.log), never into the API's or a worker's.
"""

from __future__ import annotations

import json
import secrets

import httpx
import pytest

from tests.observability.conftest import MARKER
from tests.observability.test_tracing_e2e import BATCH_DELAY_MS

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis, pytest.mark.security]

FORKING_WORKER = "modelreasoner.worker.ForkingMetricsWorker"
REQUIRED_KEYS = {"timestamp", "level", "logger", "message", "job_id", "trace_id", "span_id"}


def records(process) -> list[dict]:
    """Every line of ``process``'s output as a JSON object; fails on the first line that is not."""
    parsed = []
    for number, line in enumerate(process.log_text().splitlines(), 1):
        try:
            record = json.loads(line)
        except ValueError:
            pytest.fail(f"{process.name} line {number} is not JSON: {line!r}")
        assert isinstance(record, dict), f"{process.name} line {number}: {line!r}"
        missing = REQUIRED_KEYS - set(record)
        assert not missing, f"{process.name} line {number} lacks {missing}"
        parsed.append(record)
    return parsed


def exercise_the_api(api, api_key: str) -> list[str]:
    """Requests that log on error paths, each carrying the marker. Returns accepted job ids."""
    submit = f"{api.url}/api/submit"
    assert httpx.post(submit, json={"observations": MARKER}, headers={"x-api-key": MARKER}).status_code == 401
    bad = httpx.post(submit, json={"age_months": f"x{MARKER}", "observations": MARKER}, headers=api.headers)
    assert bad.status_code == 422 and MARKER not in bad.text
    first = api.submit(observations=f"first words {MARKER}", sla_ms=5000, headers={"Idempotency-Key": "k1"})
    conflict = httpx.post(
        submit,
        json={"age_months": 24, "observations": f"other {MARKER}"},
        headers={**api.headers, "Idempotency-Key": "k1"},
    )
    assert conflict.status_code == 409 and MARKER not in conflict.text and api_key not in conflict.text
    return [first["job_id"]]


def test_logs_are_json_lines_without_phi_or_keys(stack, otlp_sink):
    api_key = "obs-key-" + secrets.token_hex(8)
    env = {"LOG_LEVEL": "DEBUG", "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_sink.url}
    env["OTEL_BSP_SCHEDULE_DELAY"] = BATCH_DELAY_MS
    stack.model_server("edge", tier="edge", latency_ms=5, jitter=0)
    stack.model_server("cloud", tier="cloud", latency_ms=5, jitter=0, fault="http_500")
    api = stack.api(api_key=api_key, **env)

    threaded = stack.worker(**env)
    threaded_jobs = exercise_the_api(api, api_key)
    threaded_jobs += [api.submit(observations=f"no pointing {MARKER}", sla_ms=5000)["job_id"] for _ in range(2)]
    assert all(api.wait(job_id)["status"] in {"completed", "failed"} for job_id in threaded_jobs)
    assert threaded.stop() == 0

    forking = stack.worker(kind="rq", RQ_WORKER_CLASS=FORKING_WORKER, **env)
    forking_jobs = [api.submit(observations=f"babbles {MARKER}", sla_ms=5000)["job_id"] for _ in range(2)]
    assert all(api.wait(job_id)["status"] in {"completed", "failed"} for job_id in forking_jobs)
    assert forking.stop() == 0
    api.process.stop()

    for process in stack.processes:
        text = process.log_text()
        assert MARKER not in text, f"PHI in the output of {process.name}"
        assert api_key not in text, f"the API key in the output of {process.name}"
    api_lines = records(api.process)
    assert any(r["logger"] == "orchestrator.api" and r["message"] == "api started" for r in api_lines)
    for worker, job_ids in ((threaded, threaded_jobs), (forking, forking_jobs)):
        lines = records(worker)
        for job_id in job_ids:
            mine = [r for r in lines if r["job_id"] == job_id]
            assert any(r["logger"] == "modelreasoner.worker" and r["trace_id"] and r["span_id"] for r in mine), (
                f"{worker.name}: no traced line of our own for job {job_id}"
            )
            assert any(r["logger"] == "rq.worker" for r in mine), f"{worker.name}: RQ's lines lack job {job_id}'s id"
        assert not any("process_job(" in r["message"] for r in lines), "RQ logged a job description"
