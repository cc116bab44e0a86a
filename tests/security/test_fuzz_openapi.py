"""Bad-input fuzzing: schemathesis drives every operation of the API's own OpenAPI schema.

Promise: zero 5xx, and every 4xx answer is a JSON error body ``{"error": {"code", "message"}}``.

The app runs in-process (ASGI, no network hop: fast and deterministic with a fixed seed) but on
the real stores, Postgres and Redis: SQLite would hide Postgres-only failures such as a NUL
character in a text field, which is exactly what a fuzzer finds. Each operation gets
EXAMPLES_PER_MODE schema-valid cases and as many schema-violating ones.
"""

from __future__ import annotations

import contextlib
from collections import Counter

import hypothesis
import pytest
import redis
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

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
