"""A hedged job's timeline in real headless Chromium. Its own live stack: the edge server answers
after 4 s, so a 2 s job sent there first is hedged to the fast GPU server (the hedge budget is
raised so the single call of this test may hedge)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.browser.support import API_KEY, ConsoleStack, empty_stack
from tests.support.env import artifacts_dir

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or fails under CI=true) and says why
    expect = None

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

SLOW_MS = 4000


@pytest.fixture(scope="module")
def console_stack(request, pg_database, redis_server) -> Iterator[ConsoleStack]:
    """Overrides the shared stack: a slow edge server, a fast GPU server, hedging allowed."""
    artifacts = artifacts_dir(request)
    stack = empty_stack(pg_database, redis_server, artifacts)
    try:
        stack.model_server("edge", tier="edge", latency_ms=SLOW_MS, jitter=0, capacity=16)
        stack.model_server("gpu", tier="gpu", latency_ms=5, jitter=0)
        api = stack.api(api_key=API_KEY)
        stack.worker(concurrency=4, HEDGE_MAX_SHARE="0.5")
        yield ConsoleStack(stack, api, artifacts)
    finally:
        stack.close()


def test_a_hedged_job_shows_both_calls_and_which_was_the_hedge(console, console_stack):
    job = console_stack.api.submit(observations="Walks well and points.", preferred_target="edge", sla_ms=2000)
    done = console_stack.api.wait(job["job_id"])
    assert [(a["target"], a["hedge"]) for a in done["attempts"]] == [("edge", False), ("gpu", True)], done

    console.open(f"jobs/{job['job_id']}")
    console.login()
    detail = console.page.locator(f".job-detail .job[data-job-id='{job['job_id']}']")
    expect(detail).to_have_attribute("data-status", "completed")
    attempts = detail.locator("ol.events li[data-event=attempt]")
    expect(attempts).to_have_count(2)
    expect(attempts.nth(0)).to_contain_text(re.compile(r"Attempt 1 on edge: cancelled after .*lost the hedge race"))
    expect(attempts.nth(1)).to_contain_text(re.compile(r"Attempt 2 on gpu \(hedge\): answered in"))
    expect(detail.locator("svg.timeline-chart rect.attempt.err")).to_have_count(1)
    expect(detail.locator("svg.timeline-chart rect.attempt.ok.hedge")).to_have_count(1)
    hedge_tip = detail.locator("svg.timeline-chart rect.attempt.hedge title")
    expect(hedge_tip).to_have_text(re.compile(r"^gpu: ok in .*\(hedge\)$"))
    console.shot("jobs-timeline-hedge")
