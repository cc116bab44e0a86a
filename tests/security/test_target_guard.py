"""Attacks on target registration, against real processes (uvicorn API, worker, model servers,
Postgres, Redis): hijacking a configured target, pointing one at cloud metadata or loopback,
disabling the configured targets, and a URL that turns bad after it was registered.

A ``Listener`` plays the attacker's server: it records every request it gets and answers like a
model server would, so a hijack that worked would show as completed jobs and recorded cases."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import redis
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from orchestrator.models import Audit, RegisteredTarget
from orchestrator.routing import Outcome, RedisStatsStore, Router
from tests.support.keys import keys_env, principal

pytestmark = [pytest.mark.security, pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

ADMIN, INTAKE, OPERATOR = "guard-admin-key-71", "guard-intake-key-72", "guard-operator-key-73"
KEYS = keys_env(
    principal(ADMIN, "admin"), principal(INTAKE, "submit", tenant="clinic-a"), principal(OPERATOR, "operate")
)
OBSERVATIONS = "walks alone; says 10 words; GUARD-MARKER-51e7"
CONFIGURED = ("edge", "gpu")


class Listener:
    """An attacker's HTTP server on ``host``: records every request, answers as a model server."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.requests: list[tuple[str, bytes]] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                listener.requests.append((self.path, body))
                answer = json.dumps(
                    {"risk_level": "low", "flagged_domains": [], "rationale": "forged", "model_version": "evil"}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener():
    server = Listener()
    yield server
    server.close()


def registrations(pg_url: str) -> tuple[int, int]:
    """(registered targets, registration audit rows) in Postgres."""
    engine = create_engine(pg_url)
    try:
        with Session(engine) as session:
            rows = session.scalar(select(func.count()).select_from(RegisteredTarget))
            audits = session.scalar(
                select(func.count()).select_from(Audit).where(Audit.event.in_(("registered", "unregistered")))
            )
            return rows, audits
    finally:
        engine.dispose()


def start(stack, **env: str):
    for name in CONFIGURED:
        stack.model_server(name, tier=name, latency_ms=5, jitter=0)
    return stack.api(**KEYS, **env)


def submit_and_wait(api, client: httpx.Client, **body) -> dict:
    accepted = client.post("/api/submit", json={"age_months": 24, "observations": OBSERVATIONS, **body})
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    admin = api.as_key(ADMIN)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        view = admin.get(f"/api/status/{job_id}").json()
        if view["status"] in ("completed", "failed"):
            return view
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish: {view}")


def test_target_hijack_is_refused_and_the_listener_never_receives_a_case(stack, pg_url, listener):
    api = start(stack)
    stack.worker(concurrency=2)
    intake, operator, admin = api.as_key(INTAKE), api.as_key(OPERATOR), api.as_key(ADMIN)
    hijack = {"name": "gpu", "tier": "gpu", "url": listener.url, "cost_per_call_usd": 0, "prior_latency_ms": 1}

    for client in (intake, operator):
        for path in ("/register_agent", "/api/agents"):
            for body in (hijack, {**hijack, "override": True}):
                refused = client.post(path, json=body)
                assert refused.status_code == 403, refused.text
        assert client.delete("/api/targets/gpu").status_code == 403
    without_flag = admin.post("/register_agent", json=hijack)
    assert without_flag.status_code == 409 and "override" in without_flag.json()["error"]["message"]
    assert registrations(pg_url) == (0, 0)

    done = [submit_and_wait(api, intake, preferred_target="gpu", sla_ms=5000) for _ in range(3)]
    assert [(d["status"], d["target"]) for d in done] == [("completed", "gpu")] * 3
    assert all(d["result"]["model_version"] != "evil" for d in done)
    assert listener.requests == [], "the attacker's listener received a request"
    gpu = {t["name"]: t for t in admin.get("/api/targets").json()["targets"]}["gpu"]
    assert (gpu["source"], gpu["url"]) == ("env", stack.model_servers["gpu"].url)


def test_disabling_the_configured_targets_is_refused(stack, pg_url):
    api = start(stack)
    stack.worker(concurrency=2)
    intake, admin = api.as_key(INTAKE), api.as_key(ADMIN)
    for name in CONFIGURED:
        off = {"name": name, "tier": name, "url": stack.model_servers[name].url, "enabled": False}
        assert intake.post("/register_agent", json=off).status_code == 403
        assert intake.post("/register_agent", json={**off, "override": True}).status_code == 403
        refused = admin.post("/api/agents", json=off)
        assert refused.status_code == 409, refused.text
    assert registrations(pg_url) == (0, 0)
    listed = admin.get("/api/targets").json()["targets"]
    assert {(t["name"], t["enabled"], t["source"]) for t in listed} == {(n, True, "env") for n in CONFIGURED}
    for name in CONFIGURED:  # the service still serves: nothing was shut down
        done = submit_and_wait(api, intake, preferred_target=name, sla_ms=5000)
        assert (done["status"], done["target"]) == ("completed", name), done


def test_an_admin_override_is_explicit_audited_and_removable(stack, pg_url):
    api = start(stack)
    admin = api.as_key(ADMIN)
    edge_url = stack.model_servers["edge"].url
    override = {"name": "gpu", "tier": "gpu", "url": edge_url, "cost_per_call_usd": 0.002, "override": True}
    created = admin.post("/register_agent", json=override)
    assert created.status_code == 201, created.text
    replaced = created.json()["replaced"]
    assert (replaced["source"], replaced["url"], replaced["tier"]) == ("env", stack.model_servers["gpu"].url, "gpu")
    assert registrations(pg_url) == (1, 1)
    removed = admin.delete("/api/targets/gpu")
    assert removed.status_code == 200 and removed.json()["restored"]["url"] == stack.model_servers["gpu"].url
    assert registrations(pg_url) == (0, 2)
    assert admin.delete("/api/targets/gpu").status_code == 404


METADATA_URLS = [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://169.254.170.2/v2/credentials",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/",
    "http://2852039166/",  # 169.254.169.254 as one number: the resolver turns it into the address
    "http://0.0.0.0:80/",
]


def test_metadata_and_inside_urls_are_refused_at_registration(stack, pg_url, listener):
    api = start(stack, ENV="production", TARGET_URL_ALLOWLIST="10.0.0.0/8")
    admin = api.as_key(ADMIN)
    port = listener.url.rsplit(":", 1)[1]
    inside = [f"http://localhost:{port}/", f"http://127.0.0.1:{port}/", f"http://0x7f000001:{port}/"]
    for url in [*METADATA_URLS, *inside]:
        response = admin.post("/register_agent", json={"name": "probe", "tier": "gpu", "url": url, "override": True})
        error = response.json()["error"]
        assert response.status_code == 422 and (error["code"], error["field"]) == ("url_refused", "url"), (url, error)
    refused = admin.post("/register_agent", json={"name": "probe", "tier": "gpu", "url": "http://192.168.7.7"})
    assert "TARGET_URL_ALLOWLIST" in refused.json()["error"]["message"]
    allowed = admin.post("/register_agent", json={"name": "probe", "tier": "gpu", "url": "http://10.9.8.7"})
    assert allowed.status_code == 201, allowed.text
    assert registrations(pg_url) == (1, 1)
    assert listener.requests == []


def test_a_url_that_became_bad_after_registration_is_refused_before_the_call(stack):
    """Registered while the policy allowed it; the worker's policy is stricter now (production,
    only 127.0.0.1 allowed). The worker refuses the call, fails over, and the listener on
    127.0.0.3 never hears of the case."""
    hidden = Listener("127.0.0.3")
    try:
        api = start(stack)  # development: loopback allowed at registration
        admin, intake = api.as_key(ADMIN), api.as_key(INTAKE)
        bait = {"name": "gpu-cheap", "tier": "gpu", "url": hidden.url, "cost_per_call_usd": 0, "prior_latency_ms": 1}
        assert admin.post("/register_agent", json=bait).status_code == 201
        stack.worker(concurrency=2, ENV="production", TARGET_URL_ALLOWLIST="127.0.0.1/32")
        done = submit_and_wait(api, intake, preferred_target="gpu-cheap", sla_ms=5000)
        assert done["status"] == "completed" and done["target"] in CONFIGURED, done
        refused = [a for a in done["attempts"] if a["target"] == "gpu-cheap"]
        assert [a["error_kind"] for a in refused] == ["url_refused"], done["attempts"]
        assert hidden.requests == [], "the call went out although the policy refuses the URL"
    finally:
        hidden.close()


def test_metrics_stay_bounded_when_registered_names_churn(stack, redis_url):
    """An admin key registers and removes many names (each call leaves its shared stats in Redis,
    as a worker's calls would); /metrics names at most the configured targets, the cap of
    registered names, and ``other``."""
    cap = 3
    api = start(stack, MAX_REGISTERED_TARGETS=str(cap))
    admin = api.as_key(ADMIN)
    router = Router(RedisStatsStore(redis.Redis.from_url(redis_url)))
    for i in range(40):
        name = f"churn-{i:02d}"
        assert (
            admin.post("/register_agent", json={"name": name, "tier": "edge", "url": "http://10.0.0.9"}).status_code
            == 201
        )
        router.record(Outcome(name, ok=False, latency_ms=5.0, at=time.time(), error_kind="http_5xx"))
        assert admin.delete(f"/api/targets/{name}").status_code == 200
    scraped = httpx.get(f"{api.url}/metrics", timeout=10).text
    labels = set(re.findall(r'pedi_circuit_state\{target="([^"]*)"\}', scraped))
    assert len(labels) <= len(CONFIGURED) + cap + 1 and "other" in labels, sorted(labels)
