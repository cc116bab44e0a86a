"""Tenant isolation and scopes, attacked with real processes: uvicorn, the threaded worker, a
reference model server, Postgres and Redis.

Clinic B's intake key tries to read clinic A's job and task (status, events, list, task
status), to obtain A's job by replaying A's Idempotency-Key, and to attach its submission to
A's case; a read-only key tries to submit. Every attempt fails without telling B that A's job
exists. Operators read across tenants without the result; admins see it.
"""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from orchestrator.models import Audit, Case, Job
from orchestrator.principals import digest_of, key_id_for_digest
from tests.support.keys import keys_env, principal

pytestmark = [pytest.mark.security, pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

A, B, READER_A, OPERATOR, ADMIN = (
    "intake-clinic-a-7d1f",
    "intake-clinic-b-2c9e",
    "dashboard-clinic-a-51ab",
    "operator-key-93fe",
    "admin-key-0b6d",
)
KEYS = keys_env(
    principal(A, "submit", tenant="clinic-a"),
    principal(B, "submit", tenant="clinic-b"),
    principal(READER_A, "read", tenant="clinic-a"),
    principal(OPERATOR, "operate", tenant="ops"),
    principal(ADMIN, "admin", tenant="ops"),
)
BODY = {"age_months": 30, "observations": "Clinic A's child: no two-word phrases yet.", "sla_ms": 5000}
TASK = {"task_type": "summarize", "payload": {"note": "clinic A"}, "sla_ms": 5000, "consent": True}


def client(api, key: str) -> httpx.Client:
    return httpx.Client(base_url=api.url, headers={"x-api-key": key}, timeout=10)


def finished(http: httpx.Client, url: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = http.get(url).json()
        if body["status"] in ("completed", "failed"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"{url} did not finish within {timeout} s")


def not_found_shape(response: httpx.Response, some_id: str) -> dict:
    """A 404 body with the id taken out: another tenant's job must look exactly like no job."""
    assert response.status_code == 404, response.text
    return {
        **response.json(),
        "error": {**response.json()["error"], "message": response.json()["error"]["message"].replace(some_id, "<id>")},
    }


def count(pg_url: str, what) -> int:
    engine = create_engine(pg_url)
    with Session(engine) as session:
        value = session.scalar(select(func.count()).select_from(what))
    engine.dispose()
    return value


def test_another_tenants_job_and_task_are_not_found_on_every_read(stack, pg_url):
    runner = stack.model_server("runner", tier="cloud", latency_ms=5, jitter=0)
    stack.model_server("edge", tier="edge", latency_ms=5, jitter=0)
    api = stack.api(CLOUD_RUNNER_URL=runner.url, **KEYS)
    stack.worker(concurrency=2, CLOUD_RUNNER_URL=runner.url)
    a, b, reader, operator, admin = (client(api, k) for k in (A, B, READER_A, OPERATOR, ADMIN))

    job = a.post("/api/submit", json=BODY)
    task = a.post("/route_task", json=TASK)
    assert job.status_code == 202 and task.status_code == 202, (job.text, task.text)
    job_id, task_id = job.json()["job_id"], task.json()["task_id"]
    mine = b.post("/api/submit", json={**BODY, "observations": "Clinic B's child."}).json()["job_id"]
    done = finished(a, f"/api/status/{job_id}")
    assert done["status"] == "completed" and done["result"], done
    assert finished(a, f"/task/{task_id}")["status"] == "completed"

    # B: every read of A's job or task is a 404 indistinguishable from an id that never existed.
    ghost = str(uuid.uuid4())
    for path in ("/api/status/{}", "/api/jobs/{}/events"):
        assert not_found_shape(b.get(path.format(job_id)), job_id) == not_found_shape(b.get(path.format(ghost)), ghost)
    assert not_found_shape(b.get(f"/task/{task_id}"), task_id) == not_found_shape(b.get(f"/task/{ghost}"), ghost)
    listed = b.get("/api/jobs", params={"limit": 200}).json()
    assert [item["job_id"] for item in listed["items"]] == [mine]
    for kind in ("screening", "task"):
        filtered = b.get("/api/jobs", params={"kind": kind, "status": "completed"}).json()["items"]
        assert job_id not in {i["job_id"] for i in filtered} and task_id not in {i["job_id"] for i in filtered}

    # A's read-only key reads A's tenant, result included, and nothing of B's.
    assert reader.get(f"/api/status/{job_id}").json()["result"] == done["result"]
    assert reader.get(f"/task/{task_id}").status_code == 200
    assert reader.get(f"/api/status/{mine}").status_code == 404
    assert {i["job_id"] for i in reader.get("/api/jobs").json()["items"]} == {job_id, task_id}

    # Operators see every tenant's jobs, without the result (model output about a child).
    seen = operator.get(f"/api/status/{job_id}").json()
    assert seen["status"] == "completed" and seen["routing"] and seen["result"] is None
    assert operator.get(f"/task/{task_id}").json()["result"] is None
    assert {i["job_id"] for i in operator.get("/api/jobs").json()["items"]} == {job_id, task_id, mine}
    assert operator.get(f"/api/jobs/{job_id}/events").status_code == 200
    assert admin.get(f"/api/status/{job_id}").json()["result"] == done["result"]

    # The audit trail names the principal (key id, never the key) and the tenant.
    engine = create_engine(pg_url)
    with Session(engine) as session:
        submitted = session.scalars(select(Audit).where(Audit.event == "submitted")).all()
        tenants = {str(j.id): j.tenant for j in session.scalars(select(Job))}
    engine.dispose()
    by_job = {str(row.job_id): (row.actor, row.details["tenant"]) for row in submitted}
    a_id, b_id = key_id_for_digest(digest_of(A)), key_id_for_digest(digest_of(B))
    assert by_job == {job_id: (a_id, "clinic-a"), task_id: (a_id, "clinic-a"), mine: (b_id, "clinic-b")}
    assert tenants == {job_id: "clinic-a", task_id: "clinic-a", mine: "clinic-b"}
    for http in (a, b, reader, operator, admin):
        http.close()


def test_an_idempotency_key_replayed_by_another_tenant_is_a_new_job_and_leaks_nothing(stack, pg_url):
    runner = stack.model_server("runner", tier="cloud", latency_ms=5, jitter=0)
    api = stack.api(CLOUD_RUNNER_URL=runner.url, **KEYS)  # no worker: the jobs stay queued
    a, b = client(api, A), client(api, B)
    headers = {"Idempotency-Key": "visit-2026-12-03-001"}
    first = a.post("/api/submit", json=BODY, headers=headers)
    assert first.status_code == 202
    a_job = first.json()["job_id"]

    stolen = b.post("/api/submit", json=BODY, headers=headers)
    assert stolen.status_code == 202 and "Idempotent-Replayed" not in stolen.headers
    b_job = stolen.json()["job_id"]
    assert b_job != a_job
    assert b.get(f"/api/status/{b_job}").status_code == 200 and b.get(f"/api/status/{a_job}").status_code == 404
    # The other body under the same key: a conflict with B's own job at most, never A's.
    other = b.post("/api/submit", json={**BODY, "age_months": 31}, headers=headers)
    assert other.status_code == 409 and a_job not in other.text
    # A's replay still returns A's job; B's returns B's.
    again = a.post("/api/submit", json=BODY, headers=headers)
    assert again.json()["job_id"] == a_job and again.headers["Idempotent-Replayed"] == "true"
    assert b.post("/api/submit", json=BODY, headers=headers).json()["job_id"] == b_job

    # Tasks too.
    task_headers = {"Idempotency-Key": "task-visit-1"}
    a_task = a.post("/route_task", json=TASK, headers=task_headers)
    b_task = b.post("/route_task", json=TASK, headers=task_headers)
    assert a_task.status_code == b_task.status_code == 202 and "Idempotent-Replayed" not in b_task.headers
    assert b_task.json()["task_id"] != a_task.json()["task_id"]
    assert b.get(f"/task/{a_task.json()['task_id']}").status_code == 404

    # B cannot attach a submission to A's case: refused exactly like a case that does not exist.
    a_case = a.get(f"/api/status/{a_job}").json()["case_id"]
    borrowed = b.post("/api/submit", json={**BODY, "case_id": a_case})
    invented = b.post("/api/submit", json={**BODY, "case_id": str(uuid.uuid4())})
    assert borrowed.status_code == invented.status_code == 422
    assert borrowed.json() == invented.json()
    assert a.post("/api/submit", json={**BODY, "case_id": a_case}).status_code == 202
    assert count(pg_url, Job) == 5 and count(pg_url, Case) == 2
    a.close()
    b.close()


def test_a_read_only_key_cannot_submit_and_writes_nothing(stack, pg_url):
    api = stack.api(**KEYS)
    reader = client(api, READER_A)
    for path, body in (("/api/submit", BODY), ("/route_task", TASK)):
        refused = reader.post(path, json=body, headers={"Idempotency-Key": "reader-1"})
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"] == {"code": "forbidden", "message": "This key lacks the 'submit' scope"}
    assert (
        reader.post("/register_agent", json={"name": "x", "tier": "gpu", "url": "http://127.0.0.1:9"}).status_code
        == 403
    )
    assert reader.get("/api/targets").status_code == 403
    assert count(pg_url, Job) == 0 and count(pg_url, Case) == 0 and count(pg_url, Audit) == 0
    assert reader.get("/api/jobs").json()["items"] == []
    reader.close()


def test_the_sqlite_dev_schema_scopes_idempotency_keys_and_cases_per_tenant_too(sqlite_engine, fake_redis, monkeypatch):
    """The embedded dev default (init_db on SQLite) has the same per-tenant unique key and the
    same checks as Postgres: fast, in process."""
    from fastapi.testclient import TestClient

    from tests.support.app import in_process_app

    app = in_process_app(sqlite_engine, fake_redis, monkeypatch, **KEYS)
    headers = {"Idempotency-Key": "dev-visit-1"}
    with TestClient(app) as http:
        a_job = http.post("/api/submit", json=BODY, headers={**headers, "x-api-key": A}).json()
        b_job = http.post("/api/submit", json=BODY, headers={**headers, "x-api-key": B}).json()
        assert a_job["job_id"] != b_job["job_id"]
        a_case = http.get(f"/api/status/{a_job['job_id']}", headers={"x-api-key": A}).json()["case_id"]
        refused = http.post("/api/submit", json={**BODY, "case_id": a_case}, headers={"x-api-key": B})
        assert refused.status_code == 422 and refused.json()["error"]["field"] == "case_id"
        assert http.get(f"/api/status/{a_job['job_id']}", headers={"x-api-key": B}).status_code == 404
    with Session(sqlite_engine) as session:
        assert sorted(session.scalars(select(Job.tenant))) == ["clinic-a", "clinic-b"]
        assert sorted(session.scalars(select(Case.tenant))) == ["clinic-a", "clinic-b"]
