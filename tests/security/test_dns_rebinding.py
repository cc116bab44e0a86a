"""An attacker's DNS rebinding against the worker's model calls: a name answers an allowed address
to the pre-call check and a forbidden one when the client connects. Real listeners on 127.0.0.2
(allowed: the allowlist CIDR) and 127.0.0.1 (forbidden: loopback in production), on the same
port, count every TCP connection they accept; the forbidden one must accept none."""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpcore
import httpx
import pytest

from modelreasoner.client import KEEPALIVE_EXPIRY_SECONDS, CallInput, ModelClient
from modelreasoner.pinned_transport import http_client, pinned_transport
from modelreasoner.runtime import build_runtime
from orchestrator.errors import ModelCallError
from orchestrator.routing import Target
from orchestrator.settings import load_settings
from orchestrator.url_policy import UnresolvableHost, UrlPolicy, rules_from

NAME = "model.rebind.invalid"  # .invalid: the system resolver never answers it, only the policy's
ALLOWED, FORBIDDEN = "127.0.0.2", "127.0.0.1"
JOB = CallInput(job_id="j", sla_ms=1000, observations="REBIND-MARKER")
ANSWER = json.dumps({"risk_level": "low", "flagged_domains": [], "rationale": "ok", "model_version": "m"}).encode()


class Listener:
    """An HTTP model server on ``host``:``port`` that counts accepted connections and records
    each request's Host header and body."""

    def __init__(self, host: str, port: int = 0) -> None:
        self.connections = 0
        self.requests: list[tuple[str, bytes]] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                listener.requests.append((self.headers.get("Host", ""), body))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(ANSWER)))
                self.end_headers()
                self.wfile.write(ANSWER)

            def log_message(self, *args) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def verify_request(self, request, client_address) -> bool:
                listener.connections += 1
                return True

        self.server = Server((host, port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pair():
    """A forbidden listener on 127.0.0.1 and an allowed one on 127.0.0.2, on the same port."""
    forbidden = Listener(FORBIDDEN)
    allowed = Listener(ALLOWED, forbidden.port)
    yield allowed, forbidden
    allowed.close()
    forbidden.close()


class FlippingResolver:
    """Answers ``answers[i]`` to the i-th lookup (the last one from then on) and counts them."""

    def __init__(self, *answers: str) -> None:
        self.answers = [[ipaddress.ip_address(a) for a in answer.split(",")] for answer in answers]
        self.lookups: list[str] = []

    def __call__(self, host: str, timeout: float):
        if host != NAME:
            raise UnresolvableHost("does not resolve")
        self.lookups.append(host)
        return self.answers[min(len(self.lookups), len(self.answers)) - 1]


def production_policy(resolve, allowlist=(f"{ALLOWED}/32",)) -> UrlPolicy:
    return UrlPolicy(rules_from(allowlist, development=False), resolve, 1.0)


OPEN: list[httpx.Client] = []


@pytest.fixture(autouse=True)
def close_clients():
    yield
    while OPEN:
        OPEN.pop().close()


def pinned_client(policy: UrlPolicy, keepalive: bool = True) -> ModelClient:
    limits = httpx.Limits(max_keepalive_connections=4 if keepalive else 0, keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS)
    OPEN.append(http_client(limits, policy))
    return ModelClient(OPEN[-1], url_policy=policy)


def target(port: int) -> Target:
    return Target("edge-x", "edge", url=f"http://{NAME}:{port}", cost_per_call_usd=0.0)


def test_an_answer_that_flips_to_loopback_after_the_check_is_refused_and_never_connected(pair):
    allowed, forbidden = pair
    resolve = FlippingResolver(ALLOWED, FORBIDDEN)
    with pytest.raises(ModelCallError) as refused:
        pinned_client(production_policy(resolve)).call(target(allowed.port), JOB, 2.0)
    assert refused.value.kind == "url_refused" and "loopback 127.0.0.1" in refused.value.message
    assert len(resolve.lookups) == 2  # the pre-call check, then the connection's own lookup
    assert forbidden.connections == 0 and allowed.connections == 0


def test_an_answer_that_flips_to_the_metadata_address_is_refused_before_any_connect(pair):
    allowed, _ = pair
    attempts: list[str] = []

    class Recording(httpcore.SyncBackend):
        def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
            attempts.append(host)
            return super().connect_tcp(host, port, timeout, local_address, socket_options)

    policy = production_policy(FlippingResolver(ALLOWED, f"{ALLOWED},169.254.169.254"))
    http = httpx.Client(transport=pinned_transport(policy, httpx.Limits(), backend=Recording()))
    OPEN.append(http)
    with pytest.raises(ModelCallError) as refused:
        ModelClient(http, url_policy=policy).call(target(allowed.port), JOB, 2.0)
    assert refused.value.kind == "url_refused" and "169.254.169.254" in refused.value.message
    assert attempts == [] and allowed.connections == 0


def test_the_connection_goes_to_the_checked_address_and_keeps_the_name_in_the_host_header(pair):
    """The system resolver cannot answer NAME: the call only succeeds because the connection goes
    to the address the policy resolved. A third lookup would answer the forbidden address."""
    allowed, forbidden = pair
    resolve = FlippingResolver(ALLOWED, ALLOWED, FORBIDDEN)
    result = pinned_client(production_policy(resolve)).call(target(allowed.port), JOB, 2.0)
    assert result.result["risk_level"] == "low"
    assert len(resolve.lookups) == 2
    assert allowed.connections == 1 and forbidden.connections == 0
    assert allowed.requests[0][0] == f"{NAME}:{allowed.port}" and b"REBIND-MARKER" in allowed.requests[0][1]


def test_a_kept_alive_connection_stays_on_its_checked_address_after_the_answer_flips(pair):
    allowed, forbidden = pair
    resolve = FlippingResolver(ALLOWED, ALLOWED, FORBIDDEN)
    client = pinned_client(production_policy(resolve))
    for _ in range(3):
        client.call(target(allowed.port), JOB, 2.0)
    assert len(allowed.requests) == 3 and allowed.connections == 1 and forbidden.connections == 0


def test_without_keep_alive_every_connection_is_checked_again(pair):
    """The retry client's connections are never reused: the flip is met at the next connection."""
    allowed, forbidden = pair
    resolve = FlippingResolver(ALLOWED, ALLOWED, FORBIDDEN)
    client = pinned_client(production_policy(resolve), keepalive=False)
    client.call(target(allowed.port), JOB, 2.0)
    with pytest.raises(ModelCallError) as refused:
        client.call(target(allowed.port), JOB, 2.0)  # the check's verdict is cached; the connect's is not
    assert refused.value.kind == "url_refused"
    assert allowed.connections == 1 and forbidden.connections == 0


def test_a_dead_checked_address_falls_through_to_the_next_checked_one(pair):
    allowed, forbidden = pair
    resolve = FlippingResolver(f"127.0.0.3,{ALLOWED}")  # nothing listens on 127.0.0.3
    policy = production_policy(resolve, allowlist=("127.0.0.3/32", f"{ALLOWED}/32"))
    assert pinned_client(policy).call(target(allowed.port), JOB, 2.0).result["risk_level"] == "low"
    assert allowed.connections == 1 and forbidden.connections == 0


def test_timeouts_and_refused_connections_keep_their_kinds():
    """The transport keeps httpx's exception mapping: a silent server is a timeout, a closed port
    a connect error (client.classify relies on both)."""
    silent = socket.socket()
    silent.bind((ALLOWED, 0))
    silent.listen(1)  # accepts into the backlog, never answers
    port = silent.getsockname()[1]
    policy = production_policy(FlippingResolver(ALLOWED))
    try:
        with pytest.raises(ModelCallError) as slow:
            pinned_client(policy).call(target(port), JOB, 0.3)
        assert slow.value.kind == "timeout"
    finally:
        silent.close()
    with pytest.raises(ModelCallError) as closed:
        pinned_client(policy).call(target(port), JOB, 0.3)
    assert closed.value.kind == "connect_error"


def test_the_worker_runtime_pins_both_of_its_clients(monkeypatch):
    """build_runtime's clients refuse a forbidden address at the connection itself (no pre-call
    check here: the request goes straight to the client), and keep the keep-alive expiry."""
    monkeypatch.setenv("DATABASE_URL", "sqlite://")
    monkeypatch.setenv("ENV", "production")
    rt = build_runtime(load_settings(), concurrency=1)
    try:
        for http in (rt.http, rt.client._fresh):
            with pytest.raises(ModelCallError) as refused:
                http.post("http://169.254.169.254:80/infer", json={}, timeout=1.0)
            assert refused.value.kind == "url_refused"
        pool = rt.http._transport._pool
        assert pool._keepalive_expiry == KEEPALIVE_EXPIRY_SECONDS
    finally:
        rt.http.close()
        rt.client._fresh.close()
