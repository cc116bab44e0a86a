"""Fixtures for the observability tests: an in-memory span exporter, an OTLP/HTTP sink for real
processes, and a model server that records the headers it receives."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from orchestrator import tracing
from orchestrator.settings import Settings
from tests.observability.otlp_sink import OtlpSink
from tests.support.env import artifacts_dir

MARKER = "PHI-OBS-MARKER-5c1e9b"
"""A string that only ever appears in observations: it must surface in no span, log or metric."""
INFER_ANSWER = {"risk_level": "low", "flagged_domains": [], "rationale": "ok", "model_version": "rec-1"}


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    """The per-test artifacts directory without the logs of a previous run: processes append to
    their log files, and these tests read them back and count lines."""
    path = artifacts_dir(request)
    for old in path.glob("*.log"):
        old.unlink()
    return path


@pytest.fixture
def span_exporter() -> Iterator[InMemorySpanExporter]:
    """Tracing on in this process, into memory; back to no-op tracing afterwards."""
    tracing.shutdown_tracing()
    exporter = InMemorySpanExporter()
    tracing.configure_tracing(Settings(), "pedi-orchestrator-test", exporter=exporter)
    yield exporter
    tracing.shutdown_tracing()


@pytest.fixture
def otlp_sink() -> Iterator[OtlpSink]:
    sink = OtlpSink().start()
    yield sink
    sink.stop()


class RecordingModelServer:
    """A model server (inference contract) on a real socket that records each request's headers
    and path; answers every POST /infer with a valid low-risk result."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {name.lower(): value for name, value in self.headers.items()}
                recorder.requests.append({"path": self.path, "headers": headers})
                body = json.dumps(INFER_ANSWER).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def recording_model_server() -> Iterator[RecordingModelServer]:
    server = RecordingModelServer()
    yield server
    server.close()
