"""The public job representation names the job's tenant: from the job row, as each reader sees
it (its own tenant's jobs; an operator every tenant's), and in the OpenAPI document."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from orchestrator.schemas import JobPublic
from tests.support.app import in_process_app
from tests.support.keys import keys_env, principal

A, B, OPERATOR = "tenant-a-key-7f01", "tenant-b-key-7f02", "operator-key-7f03"
BODY = {"age_months": 20, "observations": "stacks two blocks"}


@pytest.fixture
def client(sqlite_engine, fake_redis, monkeypatch):
    env = keys_env(
        principal(A, "submit", tenant="clinic-a"),
        principal(B, "submit", tenant="clinic-b"),
        principal(OPERATOR, "operate", tenant="ops"),
    )
    with TestClient(in_process_app(sqlite_engine, fake_redis, monkeypatch, **env)) as test_client:
        yield test_client


def submit(client: TestClient, key: str) -> str:
    response = client.post("/api/submit", json=BODY, headers={"x-api-key": key})
    assert response.status_code == 202, response.text
    return response.json()["status_url"]


def test_the_status_names_the_job_s_tenant_to_each_reader(client):
    mine, theirs = submit(client, A), submit(client, B)
    assert client.get(mine, headers={"x-api-key": A}).json()["tenant"] == "clinic-a"
    assert client.get(theirs, headers={"x-api-key": B}).json()["tenant"] == "clinic-b"
    seen_by_operator = {client.get(url, headers={"x-api-key": OPERATOR}).json()["tenant"] for url in (mine, theirs)}
    assert seen_by_operator == {"clinic-a", "clinic-b"}
    assert client.get(theirs, headers={"x-api-key": A}).status_code == 404


def test_dev_mode_jobs_belong_to_the_default_tenant(sqlite_engine, fake_redis, monkeypatch):
    with TestClient(in_process_app(sqlite_engine, fake_redis, monkeypatch)) as client:
        status_url = client.post("/api/submit", json=BODY).json()["status_url"]
        assert client.get(status_url).json()["tenant"] == "default"


def test_the_openapi_document_has_the_tenant_and_old_bodies_still_parse(client):
    schema = client.get("/openapi.json").json()["components"]["schemas"]["JobPublic"]
    assert schema["properties"]["tenant"]["type"] == "string"
    assert schema["properties"]["tenant"]["default"] == "default"
    public = client.get(submit(client, A), headers={"x-api-key": A}).json()
    without = {k: v for k, v in public.items() if k != "tenant"}
    assert JobPublic.model_validate(without).tenant == "default"
