"""The PHI lifecycle on real Postgres and Redis: erase a case, export it, expire PHI by retention.

The API runs in-process on the session's Postgres and a private redis-server for the access
rules; the race with a running job and the two proofs run a real uvicorn API, a real worker and
a real model server. The proofs put a unique marker in every job's observations, run the jobs
to completion, erase them (by request, then by retention with an injected clock) and search
for the marker in a data-only ``pg_dump`` of the database, every Redis value (decoded as RQ
encodes) and every log line of the API and the worker.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from datetime import timedelta

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, make_url, select

from orchestrator import jobs
from orchestrator.db import make_session_factory
from orchestrator.models import Audit, Job, JobStatus, utcnow
from orchestrator.retention import run_pass
from tests.security.test_no_phi import redis_dump
from tests.support.app import in_process_app
from tests.support.keys import keys_env, principal

pytestmark = [pytest.mark.security, pytest.mark.postgres, pytest.mark.redis]

KEYS = {
    "a_submit": "lc-a-submit",
    "a_read": "lc-a-read",
    "b_submit": "lc-b-submit",
    "b_operate": "lc-b-operate",
    "b_admin": "lc-b-admin",
}
PRINCIPALS = keys_env(
    principal(KEYS["a_submit"], "submit", tenant="clinic-a"),
    principal(KEYS["a_read"], "read", tenant="clinic-a"),
    principal(KEYS["b_submit"], "submit", tenant="clinic-b"),
    principal(KEYS["b_operate"], "operate", tenant="clinic-b"),
    principal(KEYS["b_admin"], "admin", tenant="clinic-b"),
)


def h(name: str) -> dict[str, str]:
    return {"x-api-key": KEYS[name]}


@pytest.fixture
def client(pg_engine, redis_url, monkeypatch):
    connection = redis.Redis.from_url(redis_url)
    app = in_process_app(pg_engine, connection, monkeypatch, DATABASE_URL=str(pg_engine.url), **PRINCIPALS)
    with TestClient(app) as test_client:
        yield test_client
    connection.close()


def submit(client, marker: str, case_id: str | None = None, key: str = "a_submit") -> dict:
    body = {"age_months": 20, "observations": f"Says {marker} and points", "sla_ms": 30_000}
    if case_id:
        body["case_id"] = case_id
    response = client.post("/api/submit", json=body, headers=h(key))
    assert response.status_code == 202, response.text
    return client.get(f"/api/status/{response.json()['job_id']}", headers=h(key)).json()


def complete(pg_engine, job_id: str, result: dict) -> None:
    """Finish a job as a worker would (claim, then the terminal write), with a routing decision."""
    sessions = make_session_factory(pg_engine)
    with sessions() as session:
        now = utcnow()
        assert jobs.claim(session, uuid.UUID(job_id), worker_id="w-test", now=now, lease_seconds=30)
        done = jobs.finish(
            session,
            uuid.UUID(job_id),
            JobStatus.COMPLETED,
            actor="w-test",
            now=now,
            result=result,
            target="gpu",
            latency_ms=12.5,
            cost_usd=0.002,
            decision={"chosen": "gpu", "reason": "cheapest on time"},
        )
        assert done


def test_erase_case_by_owner_cancels_active_jobs_and_keeps_what_is_not_phi(client, pg_engine):
    marker = f"ERASE-{uuid.uuid4().hex}"
    first = submit(client, marker)
    case_id = first["case_id"]
    second = submit(client, marker, case_id=case_id)
    complete(pg_engine, first["job_id"], {"risk": "high", "note": marker})

    assert client.delete(f"/api/cases/{case_id}", headers=h("a_read")).status_code == 403, "read may not erase"
    assert client.delete(f"/api/cases/{case_id}", headers=h("b_submit")).status_code == 404, "another tenant"
    assert client.delete(f"/api/cases/{uuid.uuid4()}", headers=h("a_submit")).status_code == 404

    response = client.delete(f"/api/cases/{case_id}", headers=h("a_submit"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body["erased_job_ids"]) == {first["job_id"], second["job_id"]}
    assert body["cancelled_job_ids"] == [second["job_id"]]
    assert body["already_erased_job_ids"] == []

    done = client.get(f"/api/status/{first['job_id']}", headers=h("a_submit")).json()
    assert done["erased"] is True and done["result"] is None and done["status"] == "completed"
    assert done["target"] == "gpu" and done["cost_usd"] == 0.002 and done["latency_ms"] == 12.5
    assert done["routing"]["chosen"] == "gpu", "the routing decision holds no PHI and stays"
    cancelled = client.get(f"/api/status/{second['job_id']}", headers=h("a_submit")).json()
    assert (cancelled["status"], cancelled["error_kind"], cancelled["erased"]) == ("failed", "erased", True)
    assert marker not in str(done) + str(cancelled)

    with pg_engine.connect() as connection:
        rows = connection.execute(select(Job).where(Job.case_id == uuid.UUID(case_id))).all()
        assert len(rows) == 2
        for row in rows:
            assert (row.observations, row.embedding, row.result, row.payload, row.age_months) == (None,) * 5
        erased = connection.execute(select(Audit).where(Audit.event == "erased")).all()
    assert {str(row.job_id) for row in erased} == {first["job_id"], second["job_id"]}
    assert all(row.actor.startswith("key-") and row.details["reason"] == "request" for row in erased)
    assert marker not in str([tuple(row) for row in erased])

    # The worker's late terminal write for the cancelled job changes nothing.
    sessions = make_session_factory(pg_engine)
    with sessions() as session:
        late = jobs.finish(
            session, uuid.UUID(second["job_id"]), JobStatus.COMPLETED, actor="w-late", now=utcnow(), result={"x": 1}
        )
    assert late is False

    again = client.delete(f"/api/cases/{case_id}", headers=h("a_submit"))
    assert again.status_code == 200
    assert again.json()["erased_job_ids"] == [] and again.json()["cancelled_job_ids"] == []
    assert set(again.json()["already_erased_job_ids"]) == {first["job_id"], second["job_id"]}
    page = client.get(f"/api/jobs/{first['job_id']}/events", headers=h("a_read")).json()
    assert [e["event"] for e in page].count("erased") == 1, "the second erase erased nothing"


def test_admin_of_another_tenant_may_erase_an_operator_may_not(client):
    job = submit(client, "x")
    case_id = job["case_id"]
    assert client.delete(f"/api/cases/{case_id}", headers=h("b_operate")).status_code == 403
    assert client.get(f"/api/cases/{case_id}/export", headers=h("b_operate")).status_code == 404
    assert client.delete(f"/api/cases/{case_id}", headers=h("b_admin")).status_code == 200


def test_export_returns_everything_to_the_owner_and_is_audited(client, pg_engine):
    marker = f"EXPORT-{uuid.uuid4().hex}"
    job = submit(client, marker)
    complete(pg_engine, job["job_id"], {"risk": "low", "note": marker})
    case_id = job["case_id"]

    assert client.get(f"/api/cases/{case_id}/export", headers=h("b_submit")).status_code == 404
    response = client.get(f"/api/cases/{case_id}/export", headers=h("a_read"))
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["case"]["case_id"] == case_id and document["case"]["tenant"] == "clinic-a"
    [exported] = document["jobs"]
    assert marker in exported["observations"] and exported["result"]["note"] == marker
    assert exported["routing"]["chosen"] == "gpu" and exported["erased"] is False
    assert {"submitted", "claimed", "completed"} <= {row["event"] for row in document["audit"]}

    with pg_engine.connect() as connection:
        rows = connection.execute(select(Audit).where(Audit.event == "exported")).all()
    assert [str(row.job_id) for row in rows] == [job["job_id"]]
    assert marker not in str([tuple(row) for row in rows])

    assert client.get(f"/api/cases/{case_id}/export", headers=h("b_admin")).status_code == 200
    client.delete(f"/api/cases/{case_id}", headers=h("a_submit"))
    after = client.get(f"/api/cases/{case_id}/export", headers=h("a_read")).json()
    assert marker not in str(after) and after["jobs"][0]["erased"] is True
    assert "erased" in {row["event"] for row in after["audit"]}


# --- real processes ------------------------------------------------------------------------------

ADMIN_KEY = f"lc-admin-{uuid.uuid4().hex[:8]}"


def data_dump(pg_url: str) -> str:
    """Every row of the test database, as ``pg_dump --data-only`` writes it."""
    libpq_url = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    done = subprocess.run(
        ["pg_dump", "--data-only", "--no-owner", libpq_url], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


def assert_marker_nowhere(stack, pg_url: str, redis_url: str, marker: str, job_ids: list[str]) -> None:
    dump = data_dump(pg_url)
    assert job_ids[0] in dump, "control: the dump holds the jobs' rows"
    connection = redis.Redis.from_url(redis_url)
    redis_text = redis_dump(connection)
    connection.close()
    assert "rq:" in redis_text, "control: the Redis dump read RQ's keys"
    logs = {p.name: p.log_text() for p in stack.processes if not p.name.startswith("model-")}
    assert any(job_ids[0] in text for text in logs.values()), "control: the logs mention the jobs"
    places = {"pg_dump": dump, "redis": redis_text, **{f"log of {n}": t for n, t in logs.items()}}
    assert [place for place, text in places.items() if marker in text] == []


def run_marked_jobs(stack, api, marker: str, count: int = 3) -> tuple[str, list[str]]:
    first = api.submit(observations=f"At 20 months {marker} 0", sla_ms=30_000)
    case_id = api.status(first["job_id"])["case_id"]
    ids = [first["job_id"]]
    for n in range(1, count):
        ids.append(api.submit(observations=f"At 20 months {marker} {n}", case_id=case_id, sla_ms=30_000)["job_id"])
    assert {api.wait(job_id)["status"] for job_id in ids} == {"completed"}
    return case_id, ids


@pytest.mark.e2e
def test_proof_erase_leaves_the_marker_nowhere(stack, pg_url, redis_url):
    marker = f"PHI-ERASE-{uuid.uuid4().hex}"
    stack.model_server("gpu", tier="gpu", latency_ms=5, jitter=0)
    api = stack.api(api_key=ADMIN_KEY, LOG_LEVEL="DEBUG")
    stack.worker(concurrency=2, LOG_LEVEL="DEBUG")
    case_id, ids = run_marked_jobs(stack, api, marker)
    assert marker in data_dump(pg_url), "control: before the erase the marker is in Postgres"

    response = api.http.delete(f"/api/cases/{case_id}")
    assert response.status_code == 200 and set(response.json()["erased_job_ids"]) == set(ids)
    assert_marker_nowhere(stack, pg_url, redis_url, marker, ids)


@pytest.mark.e2e
def test_proof_retention_leaves_the_marker_nowhere(stack, pg_url, redis_url):
    marker = f"PHI-RETAIN-{uuid.uuid4().hex}"
    stack.model_server("gpu", tier="gpu", latency_ms=5, jitter=0)
    api = stack.api(api_key=ADMIN_KEY, LOG_LEVEL="DEBUG", PHI_RETENTION_DAYS="30")
    stack.worker(concurrency=2, LOG_LEVEL="DEBUG")
    _, ids = run_marked_jobs(stack, api, marker)
    assert "pedi_phi_retention_overdue_seconds 0.0" in httpx.get(f"{api.url}/metrics", timeout=5).text

    engine = create_engine(pg_url)
    sessions = make_session_factory(engine)
    try:
        not_yet = run_pass(sessions, days=30, batch_size=2, now=utcnow() + timedelta(days=29))
        assert not_yet.erased == 0 and marker in data_dump(pg_url)
        report = run_pass(sessions, days=30, batch_size=2, now=utcnow() + timedelta(days=31))
    finally:
        engine.dispose()
    assert (report.erased, report.batches, report.complete) == (3, 2, True)
    assert all(api.status(job_id)["erased"] for job_id in ids)
    assert_marker_nowhere(stack, pg_url, redis_url, marker, ids)


@pytest.mark.e2e
def test_erase_races_a_running_job_and_the_late_answer_is_discarded(stack, pg_url):
    marker = f"PHI-RACE-{uuid.uuid4().hex}"
    stack.model_server("gpu", tier="gpu", latency_ms=3000, jitter=0)
    api = stack.api(api_key=ADMIN_KEY)
    stack.worker(concurrency=2)
    job_id = api.submit(observations=f"Says {marker}", sla_ms=60_000)["job_id"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # wait until the model call is in flight
        status = api.status(job_id)
        if status["status"] == "running" and any(a["outcome"] == "started" for a in status["attempts"]):
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"the job never started its model call: {status}")

    case_id = status["case_id"]
    response = api.http.delete(f"/api/cases/{case_id}")
    assert response.status_code == 200 and response.json()["cancelled_job_ids"] == [job_id]
    time.sleep(4.5)  # the model server answers after 3 s; the worker tries its terminal write

    after = api.status(job_id)
    assert (after["status"], after["error_kind"], after["erased"], after["result"]) == ("failed", "erased", True, None)
    events = [e["event"] for e in api.http.get(f"/api/jobs/{job_id}/events").json()]
    assert "completed" not in events and events.count("failed") == 1
    engine = create_engine(pg_url)
    with engine.connect() as connection:
        row = connection.execute(select(Job.result, Job.observations).where(Job.id == uuid.UUID(job_id))).one()
    engine.dispose()
    assert tuple(row) == (None, None), "no result was written after the erase"
    # The worker survived its refused write: the next job completes.
    assert api.wait(api.submit(sla_ms=60_000)["job_id"], timeout=20)["status"] == "completed"
