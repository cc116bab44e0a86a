"""API keys: kept only as sha256 digests, compared in constant time, several active at once,
known by a key id (never the key) in audits and logs; 401 for a missing or wrong key, 403 for a
valid key doing what it may not."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import subprocess
import uuid

import pytest
import yaml
from fastapi import APIRouter
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator.app import auth
from orchestrator.app.auth import ReadDep, api_principals, match_key
from orchestrator.errors import ConfigError, Forbidden
from orchestrator.models import Audit, Job
from orchestrator.principals import Scope, key_id_for_digest, legacy_principals
from orchestrator.settings import Settings, load_settings
from tests.support.app import in_process_app
from tests.support.env import ROOT, free_port
from tests.support.keys import keys_env, principal
from tests.support.procs import python

pytestmark = pytest.mark.security

KEY_OLD, KEY_NEW = "rotating-old-key-4a1f", "rotating-new-key-9c2e"
SETTINGS_VARS = {name.upper() for name in Settings.model_fields}
BODY = {"age_months": 20, "observations": "stacks two blocks"}


def build_app(sqlite_engine, fake_redis, monkeypatch, keys: str, extra_router: APIRouter | None = None):
    app = in_process_app(sqlite_engine, fake_redis, monkeypatch, API_KEY=keys)
    if extra_router is not None:
        app.include_router(extra_router)
    return app


@pytest.fixture
def client(sqlite_engine, fake_redis, monkeypatch):
    with TestClient(build_app(sqlite_engine, fake_redis, monkeypatch, f"{KEY_OLD},{KEY_NEW}")) as test_client:
        yield test_client


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def test_the_process_keeps_digests_and_ids_never_the_keys(client):
    services = client.app.state.services
    kept = repr(services.principals) + repr(services.settings.principals)
    assert KEY_OLD not in kept and KEY_NEW not in kept
    expected = {digest(k): key_id_for_digest(digest(k)) for k in (KEY_OLD, KEY_NEW)}
    assert {d: p.key_id for d, p in services.principals.items()} == expected
    assert KEY_OLD not in repr(services.settings) and "**********" in repr(services.settings.api_key)


def test_key_ids_are_short_digest_prefixes_unrelated_to_the_key_text():
    key_id = key_id_for_digest(digest(KEY_OLD))
    assert key_id == "key-" + digest(KEY_OLD)[:10]
    assert not any(part in key_id for part in KEY_OLD.split("-") if len(part) > 3)


def test_every_digest_is_compared_in_constant_time_whichever_matches(monkeypatch):
    calls, real_compare = [], hmac.compare_digest

    def counting(a, b):
        calls.append((len(a), len(b)))
        return real_compare(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    digests = legacy_principals([KEY_OLD, KEY_NEW, "third-key-0003"])
    for presented, expected in ((KEY_OLD, digests[digest(KEY_OLD)]), ("not-a-key-at-all", None), ("x", None)):
        calls.clear()
        assert match_key(presented, digests) == expected
        assert len(calls) == 3, "no early exit: every digest is compared"
        assert all(lengths == (64, 64) for lengths in calls), "fixed-length digests, never the raw key"
    calls.clear()
    assert match_key(None, digests) is None and match_key("", digests) is None


def test_several_keys_are_active_at_once_and_each_is_audited_by_its_id(client, sqlite_engine):
    ids = {}
    for key in (KEY_OLD, KEY_NEW):
        response = client.post("/api/submit", json=BODY, headers={"x-api-key": key})
        assert response.status_code == 202
        ids[key] = response.json()["job_id"]
    with Session(sqlite_engine) as session:
        for key, job_id in ids.items():
            job = session.get(Job, uuid.UUID(job_id))
            actors = set(session.scalars(select(Audit.actor).where(Audit.job_id == job.id)))
            assert job.actor == key_id_for_digest(digest(key)) and actors == {job.actor}
        every_actor = " ".join(session.scalars(select(Audit.actor)))
    assert KEY_OLD not in every_actor and KEY_NEW not in every_actor


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-api-key": ""},
        {"x-api-key": "wrong-key-00000"},
        {"x-api-key": KEY_OLD + "x"},
        {"X-Api-Key": KEY_OLD[:-1]},
    ],
    ids=["missing", "empty", "wrong", "longer", "truncated"],
)
def test_a_missing_or_wrong_key_is_a_401_json_error(client, headers):
    for method, path in (("POST", "/api/submit"), ("GET", "/api/jobs"), ("GET", "/api/status/" + "0" * 32)):
        response = client.request(method, path, json=BODY if method == "POST" else None, headers=headers)
        assert response.status_code == 401, (method, path)
        assert response.json()["error"]["code"] == "unauthorized"
        assert KEY_OLD not in response.text


def test_operational_endpoints_need_no_key(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 200


def test_a_valid_key_doing_a_forbidden_action_is_a_403_json_error(sqlite_engine, fake_redis, monkeypatch):
    """Through ``Forbidden``, the error every 403 in the API goes through (the consent check of
    /route_task raises it too)."""
    router = APIRouter()

    @router.post("/api/forbidden-probe")
    def probe(principal: ReadDep) -> dict:
        raise Forbidden(f"{principal.key_id} may not do this")

    app = build_app(sqlite_engine, fake_redis, monkeypatch, KEY_OLD, extra_router=router)
    with TestClient(app) as test_client:
        assert test_client.post("/api/forbidden-probe").status_code == 401, "authentication comes first"
        response = test_client.post("/api/forbidden-probe", headers={"x-api-key": KEY_OLD})
    assert response.status_code == 403
    key_id = key_id_for_digest(digest(KEY_OLD))
    assert response.json()["error"] == {"code": "forbidden", "message": f"{key_id} may not do this"}


def test_route_task_without_consent_is_a_403_when_the_route_exists(client):
    if "/route_task" not in client.app.openapi()["paths"]:
        pytest.skip("POST /route_task is not on this branch yet (the 403 path is covered through Forbidden)")
    for consent in ({}, {"consent": False}):
        body = {"task_type": "summarize", "payload": {"text": "x"}, **consent}
        response = client.post("/route_task", json=body, headers={"x-api-key": KEY_OLD})
        assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
        assert "consent" in response.json()["error"]["message"]
    assert client.post("/route_task", json={**body, "consent": False}).status_code == 401


def test_a_bad_api_key_setting_never_echoes_a_key(monkeypatch):
    monkeypatch.setenv("API_KEY", "long-enough-key-1,sh0rt")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert "API_KEY" in raised.value.message
    assert "sh0rt" not in raised.value.message and "long-enough-key-1" not in raised.value.message


def test_auth_failures_are_not_logged_with_the_presented_key(client, caplog):
    with caplog.at_level(logging.DEBUG):
        client.post("/api/submit", json=BODY, headers={"x-api-key": "leaky-wrong-key-77"})
        client.post("/api/submit", json=BODY, headers={"x-api-key": KEY_NEW})
    assert "leaky-wrong-key-77" not in caplog.text and KEY_NEW not in caplog.text


# --- principals from API_KEYS_JSON and API_KEYS_FILE ----------------------------------------------

FILE_KEY, JSON_KEY = "file-key-clinic-b-5d1e", "json-key-clinic-a-8f3c"


def write_keys_file(tmp_path, entries) -> str:
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump(entries) if not isinstance(entries, str) else entries)
    return str(path)


def test_a_keys_file_and_the_json_variable_configure_principals_with_tenant_and_scopes(
    sqlite_engine, fake_redis, monkeypatch, tmp_path
):
    path = write_keys_file(tmp_path, [{**principal(FILE_KEY, "read", tenant="clinic-b"), "name": "dashboard B"}])
    env = {**keys_env(principal(JSON_KEY, "submit", tenant="clinic-a")), "API_KEYS_FILE": path, "API_KEY": KEY_OLD}
    app = in_process_app(sqlite_engine, fake_redis, monkeypatch, **env)
    principals = {p.key_id: p for p in app.state.services.principals.values()}
    expected = {
        key_id_for_digest(digest(FILE_KEY)): ("clinic-b", {Scope.READ}),
        key_id_for_digest(digest(JSON_KEY)): ("clinic-a", {Scope.SUBMIT}),
        key_id_for_digest(digest(KEY_OLD)): ("default", {Scope.SUBMIT, Scope.READ}),
    }
    assert {k: (p.tenant, set(p.scopes)) for k, p in principals.items()} == expected
    with TestClient(app) as test_client:
        assert test_client.get("/api/jobs", headers={"x-api-key": FILE_KEY}).status_code == 200
        assert test_client.post("/api/submit", json=BODY, headers={"x-api-key": FILE_KEY}).status_code == 403
        assert test_client.post("/api/submit", json=BODY, headers={"x-api-key": JSON_KEY}).status_code == 202


@pytest.mark.parametrize(
    ("variable", "entries", "expected"),
    [
        ("API_KEYS_JSON", [{**principal(JSON_KEY, "submit"), "role": "admin"}], "entry 0.role: Extra inputs"),
        ("API_KEYS_JSON", [principal(JSON_KEY, "submit"), principal(JSON_KEY, "read")], "listed twice"),
        ("API_KEYS_JSON", [principal(JSON_KEY, "superuser")], "entry 0.scopes.0"),
        ("API_KEYS_JSON", [{"sha256": JSON_KEY, "tenant": "a", "scopes": ["read"]}], "entry 0.sha256"),
        ("API_KEYS_FILE", [{**principal(FILE_KEY, "read"), "tenants": ["x"]}], "entry 0.tenants: Extra inputs"),
        ("API_KEYS_FILE", [principal(FILE_KEY, "read"), principal(FILE_KEY, "admin")], "listed twice"),
        ("API_KEYS_FILE", [principal(FILE_KEY, "read", tenant="a b")], "entry 0.tenant"),
        ("API_KEYS_FILE", "sha256: [unclosed", "not valid YAML"),
        ("API_KEYS_FILE", {"keys": []}, "must hold a list"),
    ],
    ids=[
        "json-unknown",
        "json-dup",
        "json-scope",
        "json-clear-key",
        "file-unknown",
        "file-dup",
        "file-tenant",
        "file-yaml",
        "file-shape",
    ],
)
def test_bad_principal_entries_are_refused_at_start_naming_the_variable(
    tmp_path, monkeypatch, variable, entries, expected
):
    if variable == "API_KEYS_JSON":
        monkeypatch.setenv(variable, json.dumps(entries))
    else:
        monkeypatch.setenv(variable, write_keys_file(tmp_path, entries))
    with pytest.raises(ConfigError) as raised:
        api_principals(load_settings())
    message = raised.value.message
    assert f"{variable}:" in message and expected in message, message
    assert JSON_KEY not in message and FILE_KEY not in message


def test_a_key_in_two_sources_and_a_missing_file_are_refused_naming_the_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("API_KEYS_JSON", json.dumps([principal(FILE_KEY, "submit")]))
    monkeypatch.setenv("API_KEYS_FILE", write_keys_file(tmp_path, [principal(FILE_KEY, "read")]))
    with pytest.raises(
        ConfigError, match=r"API_KEY / API_KEYS_JSON / API_KEYS_FILE: the key key-\w+ is configured twice"
    ):
        api_principals(load_settings())
    monkeypatch.setenv("API_KEYS_FILE", str(tmp_path / "absent.yaml"))
    with pytest.raises(ConfigError, match="API_KEYS_FILE: cannot read"):
        api_principals(load_settings())


def run_api_until_exit(env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess:
    """Start the API under uvicorn, expecting it to refuse to start."""
    base = {k: v for k, v in os.environ.items() if k.upper() not in SETTINGS_VARS}
    argv = python("-m", "uvicorn", "orchestrator.app.main:create_app", "--factory", "--port", str(free_port()))
    full_env = {**base, "PYTHONPATH": str(ROOT), "DATABASE_URL": "sqlite://", **env}
    return subprocess.run(argv, env=full_env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_production_without_keys_and_a_bad_keys_file_stop_the_real_process(tmp_path):
    refused = run_api_until_exit({"ENV": "production"})
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "ENV: production needs API keys" in refused.stderr
    bad = run_api_until_exit({"API_KEYS_FILE": write_keys_file(tmp_path, [{**principal(FILE_KEY, "read"), "x": 1}])})
    assert bad.returncode == 2 and "API_KEYS_FILE: entry 0.x: Extra inputs are not permitted" in bad.stderr
    assert FILE_KEY not in bad.stderr + bad.stdout


def test_production_with_keys_starts_and_dev_mode_is_loud(sqlite_engine, fake_redis, monkeypatch, capsys):
    keyed = in_process_app(
        sqlite_engine, fake_redis, monkeypatch, ENV="production", **keys_env(principal(JSON_KEY, "read"))
    )
    with TestClient(keyed) as test_client:
        assert test_client.get("/readyz").json()["auth"] == "keys"
        assert test_client.get("/api/jobs").status_code == 401
    for name in ("ENV", "API_KEYS_JSON"):
        monkeypatch.delenv(name)
    capsys.readouterr()
    with TestClient(in_process_app(sqlite_engine, fake_redis, monkeypatch)) as dev:  # logs JSON to stdout
        ready = dev.get("/readyz")
        assert dev.get("/api/jobs").status_code == 200, "dev mode stays: no key needed"
    assert ready.status_code == 200 and ready.json()["auth"] == "dev-mode"
    warnings = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"WARNING"' in line]
    assert any(w["message"].startswith("DEV MODE") and w["auth"] == "dev-mode" for w in warnings), warnings


# --- python -m orchestrator.keys --------------------------------------------------------------------


def keys_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    argv = python("-m", "orchestrator.keys", *args)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(argv, input=stdin, env=env, capture_output=True, text=True, timeout=30, cwd=ROOT)


def test_the_digest_cli_reads_the_key_from_stdin_never_echoes_it_and_its_entry_works(
    sqlite_engine, fake_redis, monkeypatch, tmp_path
):
    key = "cli-made-key-" + secrets.token_hex(8)
    done = keys_cli("digest", "--tenant", "clinic-c", "--scope", "submit", "--name", "intake C", stdin=key + "\n")
    assert done.returncode == 0, done.stderr
    assert key not in done.stdout + done.stderr
    assert f"sha256: {digest(key)}" in done.stdout
    yaml_entry = done.stdout.split("API_KEYS_FILE entry (YAML):\n", 1)[1].split("\n\n", 1)[0]
    path = write_keys_file(tmp_path, yaml_entry)
    app = in_process_app(sqlite_engine, fake_redis, monkeypatch, API_KEYS_FILE=path)
    (configured,) = app.state.services.principals.values()
    assert (configured.tenant, configured.scopes) == ("clinic-c", frozenset({Scope.SUBMIT}))
    with TestClient(app) as test_client:
        assert test_client.post("/api/submit", json=BODY, headers={"x-api-key": key}).status_code == 202
    json_entry = json.loads(done.stdout.split("API_KEYS_JSON entry:\n", 1)[1])
    assert json_entry == yaml.safe_load(yaml_entry)[0]


def test_the_cli_refuses_a_key_on_the_command_line_without_repeating_it_and_generates_strong_keys():
    key = "argv-key-" + secrets.token_hex(8)
    refused = keys_cli("digest", key)
    assert refused.returncode == 2 and "stdin" in refused.stderr
    assert key not in refused.stdout + refused.stderr
    assert keys_cli("digest", stdin="short\n").returncode == 2
    made = [keys_cli("generate", "--scope", "read") for _ in range(2)]
    keys = [m.stdout.split("key: ", 1)[1].split()[0] for m in made]
    assert keys[0] != keys[1] and all(len(k) >= 40 for k in keys)
    for run, generated in zip(made, keys, strict=True):
        assert f"sha256: {digest(generated)}" in run.stdout
