"""Per-job metrics of the forking worker: each job runs in a forked process that exits after it,
yet a scrape of the parent on METRICS_PORT counts every job; a bare `rq worker` says, once, that
its job metrics are lost."""

from __future__ import annotations

import json
import os

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.observability.otlp_sink import OtlpSink
from tests.support.env import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

FORKING_WORKER = "modelreasoner.worker.ForkingMetricsWorker"
UNEXPORTED_WARNING = "per-job metrics of this worker are not exported"


def samples(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a /metrics page: (name, sorted labels) -> value."""
    page = httpx.get(url, timeout=10).raise_for_status().text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
    }


def total(scraped: dict, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(value for (sample, pairs), value in scraped.items() if sample == name and wanted <= set(pairs))


def log_records(process) -> list[dict]:
    return [json.loads(line) for line in process.log_text().splitlines() if line.strip()]


def multiprocess_dir(process) -> str:
    (line,) = [r for r in log_records(process) if r["message"] == "serving job-process metrics"]
    return line["multiprocess_dir"]


def run_jobs(api, count: int) -> None:
    job_ids = [api.submit(sla_ms=5000)["job_id"] for _ in range(count)]
    assert [api.wait(job_id)["status"] for job_id in job_ids] == ["completed"] * count


def test_the_forking_worker_serves_what_its_job_processes_recorded(stack):
    stack.model_server("gpu", tier="gpu", latency_ms=1, jitter=0)
    api = stack.api()
    port = free_port()
    worker = stack.worker(kind="rq", RQ_WORKER_CLASS=FORKING_WORKER, METRICS_PORT=str(port))
    url = f"http://127.0.0.1:{port}/metrics"
    files_dir = multiprocess_dir(worker)
    run_jobs(api, 3)

    scraped = samples(url)
    assert total(scraped, "pedi_jobs_completed_total", target="gpu") == 3
    assert total(scraped, "pedi_job_e2e_latency_seconds_count", target="gpu") == 3
    assert total(scraped, "pedi_job_queue_wait_seconds_count") == 3  # an unlabelled metric
    assert total(scraped, "pedi_model_call_duration_seconds_count", target="gpu", outcome="ok") == 3
    assert total(scraped, "pedi_routing_decisions_total") == 3
    files = sorted(os.listdir(files_dir))
    assert files and all(name.endswith(("_parent.db", "_job.db")) for name in files), files

    run_jobs(api, 2)
    assert total(samples(url), "pedi_jobs_completed_total", target="gpu") == 5
    assert sorted(os.listdir(files_dir)) == files, "job processes must reuse the worker's files, not add their own"
    assert UNEXPORTED_WARNING not in worker.log_text()

    assert worker.stop() == 0
    assert not os.path.exists(files_dir), "the worker left its multiprocess directory behind"


def test_a_bare_rq_worker_warns_once_and_still_traces_its_jobs(stack, otlp_sink: OtlpSink):
    stack.model_server("gpu", tier="gpu", latency_ms=1, jitter=0)
    api = stack.api()
    worker = stack.worker(kind="rq", OTEL_EXPORTER_OTLP_ENDPOINT=otlp_sink.url)
    job_ids = [api.submit(sla_ms=5000)["job_id"] for _ in range(2)]
    assert [api.wait(job_id)["status"] for job_id in job_ids] == ["completed"] * 2

    warnings = [line for line in worker.log_text().splitlines() if UNEXPORTED_WARNING in line]
    assert len(warnings) == 1, warnings
    assert json.loads(warnings[0])["level"] == "WARNING"
    # Each job process set up tracing for itself and flushed before os._exit.
    otlp_sink.wait_for(
        lambda spans: {s.attributes.get("messaging.message.id") for s in spans if s.kind == "CONSUMER"} >= set(job_ids)
    )
