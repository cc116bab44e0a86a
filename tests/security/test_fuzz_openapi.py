"""Bad-input fuzzing: schemathesis drives every operation of the API's own OpenAPI schema.

Promise: zero 5xx, and every 4xx answer is a JSON error body ``{"error": {"code", "message"}}``.

The app runs in-process (ASGI, no network hop: fast and deterministic with a fixed seed) but on
the real stores, Postgres and Redis: SQLite would hide Postgres-only failures such as a NUL
character in a text field, which is exactly what a fuzzer finds. Each operation gets
EXAMPLES_PER_MODE schema-valid cases and as many schema-violating ones.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import hypothesis
import pytest
import redis
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

from orchestrator import schemas
from orchestrator.app.main import build_services, create_app
from orchestrator.settings import load_settings

pytestmark = [pytest.mark.security, pytest.mark.postgres, pytest.mark.redis]

SEED = 20261124
EXAMPLES_PER_MODE = 100
MIN_CASES = 500
KEY = "fuzz-key-0001"
UNREACHABLE_TARGET = "http://127.0.0.1:9"


@pytest.fixture
def app(pg_url, redis_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", pg_url)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("API_KEY", KEY)
    # Every target kind configured (never called: the API only queues), so no route answers the
    # 503 it gives by design when nothing could serve a job.
    for name in ("EDGE_MODEL_URL", "CLOUD_MODEL_URL", "GPU_MODEL_URL", "EDGE_AGENT_URL", "CLOUD_RUNNER_URL"):
        monkeypatch.setenv(name, UNREACHABLE_TARGET)
    settings = load_settings()
    services = build_services(settings)
    application = create_app(services=services)
    with TestClient(application):  # runs the lifespan, as uvicorn would
        yield application
    services.redis.close()
    services.engine.dispose()


def problem_with(response) -> str | None:
    """What is wrong with one answer, or None."""
    if response.status_code >= 500:
        return f"{response.status_code} server error"
    if response.status_code >= 400:
        try:
            error = response.json().get("error")
        except (ValueError, AttributeError):
            return f"{response.status_code} without a JSON body"
        if not isinstance(error, dict) or not error.get("code") or not error.get("message"):
            return f"{response.status_code} without an error object: {response.text[:200]}"
    return None


def fuzz(operation, mode: GenerationMode, tally: Counter, problems: list[str]) -> None:
    @hypothesis.seed(SEED)
    @hypothesis.settings(
        max_examples=EXAMPLES_PER_MODE,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def one(case) -> None:
        response = case.call(headers={"x-api-key": KEY})
        tally[response.status_code] += 1
        problem = problem_with(response)
        if problem:
            problems.append(f"{operation.label} [{mode}] {problem}\n    reproduce: {case.as_curl_command()}")

    # Nothing schema-violating can be built for an operation without inputs.
    with contextlib.suppress(Unsatisfiable):
        one()


def test_fuzzing_the_schema_finds_no_5xx_and_every_4xx_is_a_json_error(app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    tally: Counter = Counter()
    problems: list[str] = []
    labels = []
    for result in schema.get_all_operations():
        operation = result.ok()
        labels.append(operation.label)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(operation, mode, tally, problems)
    cases = sum(tally.values())
    print(f"fuzz: {cases} cases over {len(labels)} operations, answers {dict(sorted(tally.items()))}")
    assert "POST /api/submit" in labels
    assert cases >= MIN_CASES
    assert not problems, f"{len(problems)} bad answers:\n" + "\n".join(sorted(set(problems))[:20])
    assert tally.get(202, 0) > 0 and tally.get(422, 0) > 0, "both valid and invalid inputs reached the app"


def test_the_fuzz_checker_can_fail():
    class Answer:
        def __init__(self, status: int, body: object, text: str = "") -> None:
            self.status_code, self._body, self.text = status, body, text

        def json(self):
            if isinstance(self._body, Exception):
                raise self._body
            return self._body

    assert problem_with(Answer(500, {"error": {"code": "x", "message": "y"}})) == "500 server error"
    assert problem_with(Answer(404, ValueError("not json"))) == "404 without a JSON body"
    assert problem_with(Answer(422, {"detail": "x"})).startswith("422 without an error object")
    assert problem_with(Answer(422, {"error": {"code": "validation_error", "message": "m"}})) is None


def test_redis_is_really_behind_the_fuzzed_app(app):
    assert isinstance(app.state.services.redis, redis.Redis) and app.state.services.settings.is_postgres


# --- the OpenAPI document against a real server: schemathesis --checks all -------------------------

CHECKS_MAX_EXAMPLES = 10
"""Examples per operation and phase: bounded, so each mode takes about a minute."""
RUNNER_ENV = {
    name: UNREACHABLE_TARGET for name in ("EDGE_MODEL_URL", "CLOUD_MODEL_URL", "GPU_MODEL_URL", "EDGE_AGENT_URL")
}
"""Every tier configured, so that the documented examples (which name edge, cloud and gpu) name real targets."""
DYNAMIC_TARGET = (
    "names a target: whether one of that name exists depends on the live catalogue (targets are"
    " registered at run time), which a static document cannot list"
)
NOT_EXPRESSIBLE: dict[tuple[str, str], dict[str, str]] = {
    # (operation, check) -> {the field the server's 422 names: why no schema can say it}
    ("POST /api/submit", "positive_data_acceptance"): {
        "preferred_target": DYNAMIC_TARGET,
        "case_id": "must name an existing case of the caller's tenant: a database lookup",
    },
    ("POST /api/route", "positive_data_acceptance"): {"preferred_target": DYNAMIC_TARGET},
    ("POST /route_task", "positive_data_acceptance"): {"preferred_target": DYNAMIC_TARGET},
    ("POST /api/telemetry", "positive_data_acceptance"): {
        "target": DYNAMIC_TARGET,
        "timestamp": "must not be more than FUTURE_SKEW_SECONDS ahead of the server's clock at arrival",
    },
    ("GET /api/jobs", "positive_data_acceptance"): {
        "cursor": "an opaque token: only a next_cursor this API returned is one (a forged one is refused)",
    },
    ("POST /register_agent", "positive_data_acceptance"): {
        "url": "the host is resolved at registration and refused when it reaches a forbidden address"
        " (SSRF guard: loopback, link-local, metadata), which depends on DNS, not on the text; and an"
        " [IPv6] literal must parse as an address, which the pattern only outlines",
    },
    ("POST /api/agents", "positive_data_acceptance"): {
        "url": "as POST /register_agent (the same registration, under /api)",
    },
}
"""The only findings allowed: a schema-valid request refused because of a rule no static
document can state, recognised by the field the server's error names (``error.field`` and
every ``error.fields[].field``, a batch's ``samples.<i>.`` prefix removed). A refusal naming
any other field, and every other check (undocumented status codes, auth the document does not
declare, response schemas, headers, content types, server errors, schema-violating input
accepted), fails the test. Stateful scenarios are matched by the operation of the failing call."""


def schemathesis_checks_all(url: str, headers: dict[str, str], report: Path) -> subprocess.CompletedProcess:
    """``schemathesis run --checks all`` against ``url`` (a real uvicorn), as CI runs it."""
    argv = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(CHECKS_MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--suppress-health-check",
        "all",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(report),
    ]
    for name, value in headers.items():
        argv += ["--header", f"{name}: {value}"]
    # cwd: schemathesis keeps a .schemathesis/ folder where it runs; not in the repository
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=report.parent, timeout=540)


def refused_fields(response: dict) -> set[str]:
    """The fields a recorded 4xx answer's error names (a batch's ``samples.<i>.`` prefix removed)."""
    try:
        error = json.loads(base64.b64decode(response["content"]["$base64"]))["error"]
    except (KeyError, TypeError, ValueError):
        return set()
    named = [error.get("field"), *(item.get("field") for item in error.get("fields") or [])]
    return {re.sub(r"^samples\.\d+\.", "", field) for field in named if field}


def check_results(report: Path) -> tuple[Counter, set[tuple[str, str]], set[tuple[str, str, str]]]:
    """From the NDJSON report: how many times each check ran, the (operation, check) pairs that
    failed, and the (operation, check, field) of every failure that NOT_EXPRESSIBLE explains.
    The failure's own operation is used (stateful scenarios span several)."""
    ran: Counter = Counter()
    failed: set[tuple[str, str]] = set()
    explained: set[tuple[str, str, str]] = set()
    for line in report.read_text().splitlines():
        event = json.loads(line)
        recorder = (event.get("ScenarioFinished") or {}).get("recorder") or {}
        for case_id, checks in (recorder.get("checks") or {}).items():
            for check in checks:
                ran[check["name"]] += 1
                if check["status"] == "success":
                    continue
                failure = (check.get("failure_info") or {}).get("failure") or {}
                operation = failure.get("operation") or recorder.get("label")
                response = ((recorder.get("interactions") or {}).get(case_id) or {}).get("response") or {}
                fields = refused_fields(response)
                reasons = NOT_EXPRESSIBLE.get((operation, check["name"]), {})
                if fields and fields <= reasons.keys():
                    explained.update((operation, check["name"], field) for field in fields)
                else:
                    failed.add((operation, check["name"]))
    return ran, failed, explained


def test_only_a_refusal_naming_an_inexpressible_field_is_excused(tmp_path):
    def scenario(label: str, status: str, error: dict | None, failing: str | None = None) -> str:
        content = {"$base64": base64.b64encode(json.dumps({"error": error}).encode()).decode()} if error else {}
        check = {"name": "positive_data_acceptance", "status": status}
        if failing:
            check["failure_info"] = {"failure": {"operation": failing}}
        recorder = {
            "label": label,
            "checks": {"c1": [check]},
            "interactions": {"c1": {"response": {"status_code": 422, "content": content}}},
        }
        return json.dumps({"ScenarioFinished": {"recorder": recorder}})

    target = {"code": "validation_error", "message": "m", "field": "samples.3.target"}
    both = {"code": "validation_error", "message": "m", "field": "preferred_target", "fields": [{"field": "sla_ms"}]}
    report = tmp_path / "report.ndjson"
    report.write_text(
        "\n".join(
            [
                scenario("POST /api/telemetry", "failure", target),  # excused: a dynamic name
                scenario("POST /api/submit", "failure", both),  # sla_ms is expressible: a finding
                scenario("POST /api/route", "failure", None),  # no error body: a finding
                scenario("Stateful tests", "failure", target, failing="POST /api/targets"),  # not excused there
                scenario("GET /api/jobs", "success", None),
            ]
        )
    )
    ran, failed, explained = check_results(report)
    assert ran["positive_data_acceptance"] == 5
    assert explained == {("POST /api/telemetry", "positive_data_acceptance", "target")}
    assert failed == {
        ("POST /api/submit", "positive_data_acceptance"),
        ("POST /api/route", "positive_data_acceptance"),
        ("POST /api/targets", "positive_data_acceptance"),
    }


@pytest.mark.e2e
@pytest.mark.timeout(600)  # about a minute here; a loaded CI machine gets room
@pytest.mark.parametrize("mode", ["dev", "keys"])
def test_schemathesis_checks_all_finds_the_document_and_the_server_agreeing(stack, mode):
    api = stack.api(api_key=KEY if mode == "keys" else None, **RUNNER_ENV)
    report = stack.artifacts / f"schemathesis-{mode}.ndjson"
    done = schemathesis_checks_all(api.url, api.headers, report)
    (stack.artifacts / f"schemathesis-{mode}.txt").write_text(done.stdout + done.stderr)
    ran, failed, explained = check_results(report)
    for check in (
        "status_code_conformance",
        "response_schema_conformance",
        "ignored_auth",
        "not_a_server_error",
        "positive_data_acceptance",
        "negative_data_rejection",
    ):
        assert ran[check] > 0, f"{check} never ran: {done.stdout[-3000:]}"
    print(f"schemathesis {mode}: {sum(ran.values())} checks; not expressible in a schema: {sorted(explained)}")
    assert sorted(failed) == [], done.stdout[-6000:]


def test_the_openapi_document_declares_the_auth_of_each_mode(sqlite_engine, fake_redis, monkeypatch):
    """Dev mode: a secured operation may be called without a key ({} alternative), and is; with
    keys, it needs one, a call without answers 401, and 401 is documented."""
    from tests.support.app import in_process_app

    for keys in (False, True):
        if keys:
            monkeypatch.setenv("API_KEY", KEY)
        with TestClient(in_process_app(sqlite_engine, fake_redis, monkeypatch)) as client:
            document = client.get("/openapi.json").json()
            secured = {
                f"{method.upper()} {path}": operation
                for path, methods in document["paths"].items()
                for method, operation in methods.items()
                if operation.get("security")
            }
            assert "POST /api/submit" in secured and "GET /api/jobs" in secured
            for label, operation in secured.items():
                assert ({} in operation["security"]) is not keys, label
                if keys:
                    assert "401" in operation["responses"], label
                body = operation["responses"].get("422", {}).get("content", {}).get("application/json", {})
                assert body.get("schema") == {"$ref": "#/components/schemas/ErrorBody"}, label
            assert client.get("/api/jobs").status_code == (401 if keys else 200)
            # /route_task's 503 by design (no runner) is documented as such, not only as a store outage
            assert "runner" in document["paths"]["/route_task"]["post"]["responses"]["503"]["description"]
            # the telemetry body is documented as parsed: {} is not a sample
            telemetry_body = document["paths"]["/api/telemetry"]["post"]["requestBody"]["content"]["application/json"]
            assert [branch.get("required") for branch in telemetry_body["schema"]["anyOf"]] == [["target"], ["samples"]]


# --- the disagreements schemathesis found, one by one (fast, in process) ------------------------

SCREENING = {"age_months": 24, "observations": "walks"}
TARGET = {"name": "probe", "tier": "edge", "url": "http://10.0.0.5:8001"}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        # the server accepted what the document forbids
        ("/api/route", {"age_months": False}),
        ("/api/route", {"age_months": "24"}),
        ("/api/route", {"strict_sla": 1}),
        ("/api/submit", {**SCREENING, "sla_ms": True}),
        ("/api/submit", {**SCREENING, "strict_sla": "true"}),
        ("/api/submit", {**SCREENING, "budget_usd": "1"}),
        ("/register_agent", {**TARGET, "capacity": "2"}),
        ("/register_agent", {**TARGET, "enabled": 0}),
        ("/api/telemetry", {"target": "edge", "queue_depth": True}),
        ("/api/telemetry", {"target": "edge", "latency_ms": "80"}),
        # the document accepted what the server refuses
        ("/api/submit", {**SCREENING, "embedding_b64": ""}),
        ("/api/submit", {**SCREENING, "observations": " \x1c "}),
        ("/register_agent", {**TARGET, "url": ""}),
        ("/register_agent", {**TARGET, "url": "http://10.0.0.5:65536"}),
        ("/api/telemetry", {}),
        ("/api/telemetry", {"target": "edge"}),
    ],
)
def test_what_the_document_forbids_the_server_refuses(sqlite_engine, fake_redis, monkeypatch, path, body):
    """Each body breaks the published schema, and the server answers 422: the two agree."""
    import jsonschema_rs

    from tests.support.app import in_process_app

    app = in_process_app(sqlite_engine, fake_redis, monkeypatch, EDGE_MODEL_URL=UNREACHABLE_TARGET)
    with TestClient(app) as client:
        document = client.get("/openapi.json").json()
        schema = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        validator = jsonschema_rs.Draft202012Validator({**schema, "components": document["components"]})
        assert not validator.is_valid(body), "the document allows it"
        response = client.post(path, json=body)
    assert response.status_code == 422, response.text


def test_an_embedding_the_document_allows_is_accepted(sqlite_engine, fake_redis, monkeypatch):
    import struct

    from tests.support.app import in_process_app

    embedding = base64.b64encode(struct.pack("<5f", *range(5))).decode()
    assert re.fullmatch(schemas.EMBEDDING_B64_PATTERN, embedding)
    with TestClient(in_process_app(sqlite_engine, fake_redis, monkeypatch)) as client:
        response = client.post("/api/submit", json={**SCREENING, "embedding_b64": embedding, "age_months": 24.0})
    assert response.status_code == 202, response.text
