"""The same trace from real, separate processes: uvicorn, the threaded worker and the forking
worker export through the real OTLP/HTTP exporter to a receiver in this test, configured only by
environment variables, as in production (OTEL_EXPORTER_OTLP_ENDPOINT for the API and the forking
worker, our OTEL_COLLECTOR_URL for the threaded one)."""

from __future__ import annotations

import pytest

from tests.observability.conftest import MARKER
from tests.observability.otlp_sink import OtlpSink, ReceivedSpan

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

FORKING_WORKER = "modelreasoner.worker.ForkingMetricsWorker"
BATCH_DELAY_MS = "100"
"""OTEL_BSP_SCHEDULE_DELAY for the processes under test: spans leave within 0.1 s, not 5 s."""


def standard_env(sink: OtlpSink) -> dict[str, str]:
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url, "OTEL_BSP_SCHEDULE_DELAY": BATCH_DELAY_MS}


def job_spans(spans: list[ReceivedSpan], job_id: str) -> dict[str, ReceivedSpan]:
    """The job's producer span and every span of its trace, by kind (one of each expected)."""
    producers = [s for s in spans if s.kind == "PRODUCER" and s.attributes.get("messaging.message.id") == job_id]
    if len(producers) != 1:
        return {}
    trace = [s for s in spans if s.trace_id == producers[0].trace_id]
    found: dict[str, ReceivedSpan] = {}
    for span in trace:
        assert span.kind not in found, f"two {span.kind} spans in the trace of job {job_id}"
        found[span.kind] = span
    return found


def complete(job_id: str):
    return lambda spans: set(job_spans(spans, job_id)) == {"SERVER", "PRODUCER", "CONSUMER", "CLIENT"}


def assert_one_trace(spans: dict[str, ReceivedSpan], job_id: str) -> None:
    server, producer, consumer, client = (spans[k] for k in ("SERVER", "PRODUCER", "CONSUMER", "CLIENT"))
    assert server.name == "POST /api/submit" and server.parent_span_id == ""
    assert producer.parent_span_id == server.span_id
    assert consumer.parent_span_id == producer.span_id
    assert client.parent_span_id == consumer.span_id
    assert {server.service, producer.service} == {"pedi-orchestrator-api"}
    assert {consumer.service, client.service} == {"pedi-orchestrator-worker"}
    assert consumer.attributes["messaging.system"] == "rq"
    assert consumer.attributes["messaging.operation.type"] == "process"
    assert consumer.attributes["messaging.message.id"] == job_id
    assert client.attributes["url.path"] == "/infer" and client.attributes["http.response.status_code"] == 200
    for span in spans.values():
        assert MARKER not in span.raw, f"PHI in the {span.kind} span"


def test_one_trace_per_job_across_the_api_and_both_kinds_of_worker(stack, otlp_sink):
    stack.model_server("edge", tier="edge", latency_ms=5, jitter=0)
    api = stack.api(**standard_env(otlp_sink))
    threaded = stack.worker(OTEL_COLLECTOR_URL=otlp_sink.url, OTEL_BSP_SCHEDULE_DELAY=BATCH_DELAY_MS)
    first = api.submit(observations=f"points at the dog {MARKER}", sla_ms=5000)["job_id"]
    assert api.wait(first)["status"] == "completed"
    assert_one_trace(job_spans(otlp_sink.wait_for(complete(first)), first), first)

    threaded.stop()
    stack.worker(kind="rq", RQ_WORKER_CLASS=FORKING_WORKER, **standard_env(otlp_sink))
    second = api.submit(observations=f"stacks two blocks {MARKER}", sla_ms=5000)["job_id"]
    assert api.wait(second)["status"] == "completed"
    # The job process exits with os._exit: its spans arrive only because it flushes them first.
    assert_one_trace(job_spans(otlp_sink.wait_for(complete(second)), second), second)
    assert all(MARKER not in span.raw for span in otlp_sink.snapshot())
