"""End-to-end: the reference model server as a real process (``python -m modelreasoner.server``),
called over loopback HTTP with httpx. Checks the contracts, CLI/env options, the faults that only a
real socket shows (dropped connection, headers then silence), and a clean shutdown.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 15.0
SHUTDOWN_TIMEOUT_S = 10.0  # the server's own grace period is 3 s
SHORT_TIMEOUT_S = 0.5
# uvicorn shuts down gracefully on SIGTERM, then re-raises the signal: -SIGTERM is a clean exit too.
CLEAN_EXIT_CODES = (0, -signal.SIGTERM)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A model server subprocess whose output goes to a log file (never a pipe that could fill)."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
        cmd = [sys.executable, "-m", "modelreasoner.server", "--port", str(self.port), *args]
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)

    def wait_healthy(self) -> dict:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(httpx.TransportError):
                r = httpx.get(f"{self.url}/healthz", timeout=1.0)
                if r.status_code == 200:
                    return r.json()
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"model server did not become healthy; log:\n{self.log_path.read_text()}")

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it does not exit in time. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(SHUTDOWN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("model-server") / "server.log"
    args = ["--tier", "edge", "--latency-ms", "0", "--fail-rate", "0", "--capacity", "16", "--seed", "7"]
    proc = ServerProcess(args, log, env={"MODEL_SERVER_COST_USD": "0.123", "MODEL_SERVER_ADMIN": "1"})
    proc.wait_healthy()
    yield proc
    assert proc.stop() in CLEAN_EXIT_CODES, log.read_text()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=5.0) as c:
        yield c


@contextlib.contextmanager
def fault(client: httpx.Client, mode: str) -> Iterator[None]:
    assert client.post("/admin/profile", json={"fault": mode}).json()["fault"] == mode
    try:
        yield
    finally:
        client.post("/admin/profile", json={"fault": "none"})


SCREENING = {"job_id": "e2e-1", "age_months": 24, "observations": "He doesn't kick a ball.", "sla_ms": 1000}


def test_healthz_reports_cli_tier(client):
    assert client.get("/healthz").json()["tier"] == "edge"


def test_infer_over_http(client):
    r = client.post("/infer", json=SCREENING)
    assert r.status_code == 200
    body = r.json()
    assert body["risk_level"] == "moderate"
    assert body["flagged_domains"] == ["motor"]
    assert body["model_version"].startswith("milestones-baseline-")


def test_run_over_http_uses_env_configured_cost(client):
    r = client.post("/run", json={"task_id": "e2e-run", "task_type": "screening", "payload": SCREENING})
    assert r.status_code == 200
    body = r.json()
    assert body["actual_cost_usd"] == 0.123  # from MODEL_SERVER_COST_USD
    assert body["output_ref"] == "inline:e2e-run"
    assert body["output"]["risk_level"] == "moderate"
    other = client.post("/run", json={"task_id": "x", "task_type": "summarize", "payload": {"k": 1}}).json()
    assert set(other["output"]) == {"task_type", "payload_sha256"}


def test_validation_error_over_http(client):
    r = client.post("/infer", json={"age_months": 300, "observations": "PHI-E2E-MARKER"})
    assert r.status_code == 422
    assert r.json()["error"]["message"].startswith("age_months: ")
    assert "PHI-E2E-MARKER" not in r.text


def test_concurrent_load_is_served(client):
    def one(i: int) -> int:
        return client.post("/infer", json={**SCREENING, "job_id": f"load-{i}"}).status_code

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        codes = list(pool.map(one, range(200)))
    assert codes == [200] * 200
    assert time.monotonic() - started < 10.0
    assert client.get("/stats").json()["served_total"] >= 200


def test_fault_close_connection_drops_the_socket(client):
    with fault(client, "close_connection"), pytest.raises(httpx.RemoteProtocolError):
        client.post("/infer", json=SCREENING)


def test_fault_hang_after_headers_times_out_reading_the_body(client):
    request = client.stream("POST", "/infer", json=SCREENING, timeout=SHORT_TIMEOUT_S)
    with fault(client, "hang_after_headers"), request as r:
        assert r.status_code == 200
        with pytest.raises(httpx.ReadTimeout):
            r.read()


def test_fault_timeout_times_out(client):
    with fault(client, "timeout"), pytest.raises(httpx.ReadTimeout):
        client.post("/infer", json=SCREENING, timeout=SHORT_TIMEOUT_S)


def test_fault_invalid_json_and_http_500(client):
    with fault(client, "invalid_json"):
        r = client.post("/infer", json=SCREENING)
        assert r.status_code == 200
        with pytest.raises(ValueError):
            r.json()
    with fault(client, "http_500"):
        assert client.post("/infer", json=SCREENING).status_code == 500
    assert client.post("/infer", json=SCREENING).status_code == 200


def test_shutdown_is_prompt_with_a_stalled_request_open(tmp_path):
    proc = ServerProcess(["--fault", "hang_after_headers"], tmp_path / "server.log")
    proc.wait_healthy()
    with httpx.Client(base_url=proc.url, timeout=30.0) as c, c.stream("POST", "/infer", json=SCREENING) as r:
        assert r.status_code == 200
        started = time.monotonic()
        code = proc.stop()
    assert time.monotonic() - started < SHUTDOWN_TIMEOUT_S
    assert code in CLEAN_EXIT_CODES, (tmp_path / "server.log").read_text()
