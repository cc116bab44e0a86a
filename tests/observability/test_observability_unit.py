"""Fast checks of the observability building blocks, without services: when tracing is on and
off, the model-call span and its header, Redis error counting, the JSON log guards."""

from __future__ import annotations

import json
import logging
import math

import fakeredis
import httpx
import pytest
import redis
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import REGISTRY

from modelreasoner.client import CallInput, ModelClient
from orchestrator import fleet, tracing
from orchestrator.constants import RECONCILER_LAST_PASS_KEY
from orchestrator.db import make_engine
from orchestrator.errors import ModelCallError
from orchestrator.logs import configure_logging, job_context
from orchestrator.metrics import StateCollector
from orchestrator.queue_rq import enqueue_after_commit, get_queue
from orchestrator.routing import Target
from orchestrator.settings import Settings, load_settings
from tests.observability.conftest import MARKER

TARGET = Target("gpu", "gpu", url="http://gpu.test:8001", cost_per_call_usd=0.004)
JOB = CallInput(job_id="j1", sla_ms=2000, age_months=24, observations=f"does not point {MARKER}")
GOOD = {"risk_level": "low", "flagged_domains": [], "rationale": "r", "model_version": "v1"}


@pytest.fixture(autouse=True)
def no_tracing() -> None:
    tracing.shutdown_tracing()
    yield
    tracing.shutdown_tracing()


def redis_errors(component: str) -> float:
    return REGISTRY.get_sample_value("pedi_redis_errors_total", {"component": component}) or 0.0


# --- tracing on and off ---------------------------------------------------------------------------


def test_without_an_endpoint_tracing_installs_nothing(monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert tracing.configure_tracing(Settings(), tracing.API_SERVICE) is False
    assert not tracing.enabled()
    with tracing.producer_span("pedi-screen", "j1") as carrier:
        assert carrier == {}
    with tracing.client_span("POST", "http://x/infer", "edge") as call:
        assert dict(call.headers) == {}
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)


def test_the_sdk_kill_switch_wins_over_an_endpoint(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert tracing.configure_tracing(load_settings(), tracing.API_SERVICE) is False


def test_standard_otel_variables_are_not_refused_as_typos(monkeypatch):
    for name, value in {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
        "OTEL_SERVICE_NAME": "x",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OTEL_COLLECTOR_URL", "http://collector:4318/")
    assert load_settings().otel_collector_url == "http://collector:4318"


def test_otel_collector_url_sends_spans_to_its_traces_path_under_our_service_name(monkeypatch, otlp_sink):
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.setenv("OTEL_COLLECTOR_URL", otlp_sink.url)
    assert tracing.configure_tracing(load_settings(), tracing.WORKER_SERVICE)
    with tracing.producer_span("pedi-screen", "job-1") as carrier:
        assert carrier["traceparent"].startswith("00-")
    tracing.flush()
    (span,) = otlp_sink.wait_for(lambda spans: len(spans) == 1)
    assert span.service == "pedi-orchestrator-worker" and span.kind == "PRODUCER"
    assert span.attributes["messaging.message.id"] == "job-1"
    assert not isinstance(trace.get_tracer_provider(), TracerProvider), "a global provider wakes library telemetry"


def test_otel_service_name_overrides_the_default(monkeypatch, otlp_sink):
    monkeypatch.setenv("OTEL_SERVICE_NAME", "pedi-api-eu")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_sink.url)
    assert tracing.configure_tracing(load_settings(), tracing.API_SERVICE)
    with tracing.producer_span("pedi-screen", "job-2"):
        pass
    tracing.flush()
    (span,) = otlp_sink.wait_for(lambda spans: len(spans) == 1)
    assert span.service == "pedi-api-eu"


# --- the model-server call ------------------------------------------------------------------------


def test_the_model_call_carries_its_span_context_and_no_payload(span_exporter):
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(request.headers)
        return httpx.Response(200, json=GOOD)

    ModelClient(httpx.Client(transport=httpx.MockTransport(handler))).call(TARGET, JOB, timeout_s=1.0)
    tracing.flush()
    (span,) = span_exporter.get_finished_spans()
    assert span.kind is trace.SpanKind.CLIENT and span.name == "POST"
    assert seen["traceparent"].split("-")[1:3] == [f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"]
    assert span.attributes["server.address"] == "gpu.test" and span.attributes["server.port"] == 8001
    assert span.attributes["url.path"] == "/infer" and span.attributes["pedi.target"] == "gpu"
    assert MARKER not in span.to_json()


def test_a_failed_model_call_is_marked_with_its_error_kind(span_exporter):
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(ModelCallError):
        ModelClient(httpx.Client(transport=httpx.MockTransport(handler))).call(TARGET, JOB, timeout_s=0.5)
    tracing.flush()
    (span,) = span_exporter.get_finished_spans()
    assert span.status.status_code is trace.StatusCode.ERROR and span.attributes["error.type"] == "timeout"
    assert not span.events, "exceptions are not recorded: their messages may quote data"


def test_without_tracing_the_model_call_sends_no_trace_header():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(request.headers)
        return httpx.Response(200, json=GOOD)

    ModelClient(httpx.Client(transport=httpx.MockTransport(handler))).call(TARGET, JOB, timeout_s=1.0)
    assert "traceparent" not in seen


# --- Redis errors ---------------------------------------------------------------------------------


class BrokenRedis(fakeredis.FakeRedis):
    def execute_command(self, *args, **kwargs):
        raise redis.ConnectionError("down")


def test_a_failed_enqueue_is_counted_and_survived():
    before = redis_errors("api_enqueue")
    assert enqueue_after_commit(get_queue(BrokenRedis()), "job-x") is False
    assert redis_errors("api_enqueue") == before + 1


def test_a_failed_redis_probe_is_counted_and_the_scrape_goes_on():
    def down():
        raise redis.ConnectionError("down")

    collector = StateCollector(
        queue_depth=down,
        oldest_queued_age=lambda: 1.5,
        jobs_by_status=lambda: {"queued": 1},
        workers_alive=down,
        circuit_states=lambda: {},
        reconciler_last_pass_age=down,
    )
    before = redis_errors("metrics")
    names = [family.name for family in collector.collect()]
    assert "pedi_queue_depth" not in names and "pedi_oldest_queued_job_age_seconds" in names
    assert "pedi_reconciler_last_pass_age_seconds" not in names
    assert redis_errors("metrics") == before + 3


def test_the_reconciler_liveness_gauge_is_the_age_of_the_last_pass_or_inf():
    connection = fakeredis.FakeRedis()
    assert fleet.reconciler_last_pass_age_seconds(connection) == math.inf
    connection.set(RECONCILER_LAST_PASS_KEY, "1000.5")
    assert fleet.reconciler_last_pass_age_seconds(connection, now=1012.0) == pytest.approx(11.5)
    assert fleet.reconciler_last_pass_age_seconds(connection, now=999.0) == 0.0  # clock skew between hosts
    collector = StateCollector(
        queue_depth=lambda: 0,
        oldest_queued_age=lambda: 0.0,
        jobs_by_status=lambda: {},
        workers_alive=lambda: 1,
        circuit_states=lambda: {},
        reconciler_last_pass_age=lambda: 7.0,
    )
    (family,) = [f for f in collector.collect() if f.name == "pedi_reconciler_last_pass_age_seconds"]
    assert family.samples[0].value == 7.0


# --- logs -------------------------------------------------------------------------------------------


def test_debug_logging_keeps_sql_and_http_traces_out(capsys):
    configure_logging("DEBUG")
    with job_context("job-7"):
        logging.getLogger("sqlalchemy.engine.Engine").info("INSERT ... %s", MARKER)
        logging.getLogger("httpcore.http11").debug("send_request_body %s", MARKER)
        logging.getLogger("modelreasoner.worker").debug("claimed")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert MARKER not in json.dumps(lines)
    (line,) = lines
    assert line["job_id"] == "job-7" and line["level"] == "DEBUG" and line["logger"] == "modelreasoner.worker"
    assert {"timestamp", "message", "trace_id", "span_id"} <= set(line)


def test_database_errors_do_not_quote_statement_parameters():
    engine = make_engine(Settings(database_url="sqlite://"))
    with engine.connect() as connection:
        connection.exec_driver_sql("CREATE TABLE t (x TEXT CHECK (length(x) < 5))")
        with pytest.raises(Exception) as raised:
            connection.exec_driver_sql("INSERT INTO t VALUES (?)", (MARKER,))
    assert MARKER not in str(raised.value)
    engine.dispose()
