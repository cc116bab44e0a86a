"""The console shows an ``insufficient_information`` screening answer as "not assessed", never as
a risk level, in real headless Chromium. The job's answer is written straight into Postgres (the
API and the console read it from there), so the test needs no model server or worker."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from tests.browser.support import API_KEY, ConsoleStack, empty_stack
from tests.support.env import artifacts_dir

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or fails under CI=true) and says why
    expect = None

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

ANSWER = {
    "risk_level": "insufficient_information",
    "flagged_domains": [],
    "milestones_flagged": [],
    "rationale": "The observations mention no developmental milestone this baseline recognises.",
    "model_version": "milestones-baseline-1.1.0",
}


@pytest.fixture(scope="module")
def console_stack(request, pg_database, redis_server) -> Iterator[ConsoleStack]:
    """Overrides the shared stack: the API serving the console, nothing else."""
    artifacts = artifacts_dir(request)
    stack = empty_stack(pg_database, redis_server, artifacts)
    try:
        api = stack.api(api_key=API_KEY, RECONCILER_ENABLED="false")
        yield ConsoleStack(stack, api, artifacts)
    finally:
        stack.close()


def completed_with(pg_url: str, job_id: str, answer: dict) -> None:
    engine = create_engine(pg_url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE jobs SET status = 'completed', result = CAST(:result AS jsonb), target = 'gpu', "
                "started_at = now(), finished_at = now(), latency_ms = 12 WHERE id = :id"
            ),
            {"result": json.dumps(answer), "id": uuid.UUID(job_id)},
        )
    engine.dispose()


@pytest.mark.parametrize("level", ["insufficient_information", "low"])
def test_the_console_says_not_assessed_for_insufficient_information(console, console_stack, pg_database, level):
    job = console_stack.api.submit(observations="The weather was nice.")
    completed_with(pg_database, job["job_id"], {**ANSWER, "risk_level": level})

    console.open(f"jobs/{job['job_id']}")
    console.login()
    detail = console.page.locator(f".job-detail .job[data-job-id='{job['job_id']}']")
    expect(detail).to_have_attribute("data-status", "completed")
    risk = detail.locator("p.risk")
    if level == "insufficient_information":
        expect(risk.locator(".badge")).to_have_text("insufficient information")
        expect(risk).to_contain_text("not assessed")
        expect(risk.locator(".badge")).not_to_have_class("risk-low")
        console.shot("result-insufficient-information")
    else:  # the control: a real risk level keeps its badge and no "not assessed"
        expect(risk.locator(".badge")).to_have_text("low")
        expect(risk).not_to_contain_text("not assessed")


def test_the_console_says_erased_where_the_result_was(console, console_stack, pg_database):
    job = console_stack.api.submit(observations="Says ten words and points.")
    completed_with(pg_database, job["job_id"], {**ANSWER, "risk_level": "high"})
    case_id = console_stack.api.status(job["job_id"])["case_id"]
    assert console_stack.api.http.delete(f"/api/cases/{case_id}").status_code == 200

    console.open(f"jobs/{job['job_id']}")
    console.login()
    detail = console.page.locator(f".job-detail .job[data-job-id='{job['job_id']}']")
    expect(detail).to_have_attribute("data-status", "completed")
    expect(detail.locator(".result.erased .badge")).to_have_text("erased")
    expect(detail.locator("p.risk")).to_have_count(0)
    console.shot("result-erased")
