"""One trace per job across a real worker run, into an in-memory exporter.

The API runs in-process (its real app, real Postgres and Redis), the job goes through real RQ
(enqueue with its meta, dequeue) and is run by the production ``ThreadedWorker`` in burst mode in
this process, which calls a model server over a real socket. API and worker share this process's
tracer provider, so every span lands in one ``InMemorySpanExporter``: what is asserted is the
span tree as the code builds it (parents, attributes, the context carried in the RQ job meta and
in the outgoing request), not what a collector made of it. tests/observability/test_tracing_e2e.py
covers the same trace from separate processes through the real OTLP exporter.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from rq.job import Job as RQJob

from modelreasoner import bootstrap
from modelreasoner.runtime import build_runtime
from modelreasoner.worker import ThreadedWorker
from orchestrator import tracing
from orchestrator.app.main import create_app
from orchestrator.queue_rq import get_queue
from orchestrator.settings import Settings
from tests.observability.conftest import MARKER

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

W3C_KEYS = {"traceparent", "tracestate"}


@pytest.fixture
def settings(pg_url: str, redis_url: str, recording_model_server) -> Settings:
    return Settings(database_url=pg_url, redis_url=redis_url, edge_model_url=recording_model_server.url)


@pytest.fixture
def keep_signal_handlers() -> Iterator[None]:
    """An RQ worker installs SIGINT/SIGTERM handlers; give pytest its own back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def run_worker_burst(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every queued job with the production threaded worker, in this process, then return."""
    rt = build_runtime(settings, concurrency=2)
    monkeypatch.setitem(bootstrap._contexts, os.getpid(), rt)  # what bootstrap.install does, undone after
    try:
        worker = ThreadedWorker([get_queue(rt.redis)], connection=rt.redis, log_job_description=False, concurrency=2)
        worker.work(burst=True)
    finally:
        rt.http.close()
        rt.redis.close()
        rt.engine.dispose()


def traceparent(header: str) -> tuple[int, int]:
    """(trace id, parent span id) of a sampled W3C traceparent header."""
    version, trace_id, span_id, flags = header.split("-")
    assert version == "00" and int(flags, 16) & 0x01, f"not a sampled W3C traceparent: {header}"
    return int(trace_id, 16), int(span_id, 16)


def by_kind(spans) -> dict[str, list]:
    grouped: dict[str, list] = {}
    for span in spans:
        grouped.setdefault(span.kind.name, []).append(span)
    return grouped


def test_one_trace_from_the_request_to_the_model_server(
    settings, span_exporter, recording_model_server, monkeypatch, keep_signal_handlers
):
    with TestClient(create_app(settings)) as client:
        accepted = client.post(
            "/api/submit",
            json={"age_months": 24, "observations": f"says two words {MARKER}", "sla_ms": 5000},
            headers={"baggage": f"note={MARKER}"},  # client-supplied baggage must go nowhere
        )
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]
        connection = redis.Redis.from_url(settings.redis_url)
        meta = RQJob.fetch(job_id, connection=connection).meta
        run_worker_burst(settings, monkeypatch)
        assert client.get(f"/api/status/{job_id}").json()["status"] == "completed"
    tracing.flush()
    spans = span_exporter.get_finished_spans()
    kinds = by_kind(spans)

    (server,) = [s for s in kinds["SERVER"] if s.name == "POST /api/submit"]
    (producer,) = kinds["PRODUCER"]
    (consumer,) = kinds["CONSUMER"]
    (client_call,) = kinds["CLIENT"]
    trace_ids = {span.context.trace_id for span in (server, producer, consumer, client_call)}
    assert len(trace_ids) == 1, "the request, enqueue, job and model call are not one trace"
    assert server.parent is None
    assert producer.parent.span_id == server.context.span_id
    assert consumer.parent.span_id == producer.context.span_id, "the job does not continue the enqueue's context"
    assert client_call.parent.span_id == consumer.context.span_id

    assert producer.name == "send pedi-screen" and consumer.name == "process pedi-screen"
    for span, operation in ((producer, "send"), (consumer, "process")):
        assert span.attributes["messaging.system"] == "rq"
        assert span.attributes["messaging.destination.name"] == "pedi-screen"
        assert span.attributes["messaging.operation.type"] == operation
        assert span.attributes["messaging.message.id"] == job_id
    assert consumer.attributes["pedi.job.status"] == "completed"
    assert server.attributes["http.route"] == "/api/submit"
    assert server.attributes["http.response.status_code"] == 202
    assert client_call.attributes["http.request.method"] == "POST"
    assert client_call.attributes["url.path"] == "/infer"
    assert client_call.attributes["http.response.status_code"] == 200
    assert client_call.attributes["server.address"] == "127.0.0.1"

    # The RQ job carried the W3C context of the producer span, and nothing else.
    assert set(meta) <= W3C_KEYS and "traceparent" in meta
    assert traceparent(meta["traceparent"]) == (producer.context.trace_id, producer.context.span_id)
    # The model server received the client span's context.
    (request,) = recording_model_server.requests
    assert traceparent(request["headers"]["traceparent"]) == (client_call.context.trace_id, client_call.context.span_id)
    assert "baggage" not in request["headers"]

    for span in spans:
        assert MARKER not in span.to_json(), f"PHI in span {span.name}"
    for key in connection.scan_iter("*"):
        assert MARKER not in str(connection.dump(key)), f"PHI reached Redis key {key!r}"
    connection.close()


def test_a_caller_traceparent_is_continued_and_the_raw_path_is_not_recorded(settings, span_exporter):
    caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    traceparent = f"00-{caller_trace}-00f067aa0ba902b7-01"
    with TestClient(create_app(settings)) as client:
        client.get(f"/api/status/{MARKER}?q={MARKER}", headers={"traceparent": traceparent})
        client.get(f"/no/such/{MARKER}")
    tracing.flush()
    status_span, unmatched = span_exporter.get_finished_spans()
    assert format(status_span.context.trace_id, "032x") == caller_trace
    assert status_span.parent.span_id == 0x00F067AA0BA902B7 and status_span.parent.is_remote
    assert status_span.name == "GET /api/status/{job_id}"
    assert status_span.attributes["url.path"] == "/api/status/{job_id}"
    assert unmatched.name == "GET unmatched" and unmatched.attributes["http.response.status_code"] == 404
    for span in (status_span, unmatched):
        assert MARKER not in json.dumps(span.to_json())
