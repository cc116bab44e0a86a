"""The operator console in real headless Chromium against a live stack: model servers, the API
(with API_KEY, serving /ui), a worker, Postgres and Redis. Every test also checks (in the
``console`` fixture) that the page logged no unexpected error and no CSP violation."""

from __future__ import annotations

import re

import pytest

from tests.browser.support import API_KEY, XSS_URL

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or fails under CI=true) and says why
    expect = None

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

OBSERVATIONS = "At 24 months she does not point to show things and says no words. Walks well."
HIDE_TAB = """
Object.defineProperty(document, 'hidden', {configurable: true, get: () => true});
document.dispatchEvent(new Event('visibilitychange'));
"""
SHOW_TAB = """
Object.defineProperty(document, 'hidden', {configurable: true, get: () => false});
document.dispatchEvent(new Event('visibilitychange'));
"""
EMPTY_ANSWERS = {
    r"/api/jobs\?": '{"items": [], "next_cursor": null}',
    r"/api/sla-events\?": '{"items": [], "counts": []}',
    r"/api/model-metrics\?": '{"targets": []}',
}
"""What the API answers with no data, served by the browser to test the empty-state sentences."""
PAGES = {
    "targets": "Targets",
    "route": "Route tester",
    "submit": "Submit a screening case",
    "jobs": "Jobs",
    "sla": "SLA events",
    "metrics": "Model metrics",
}
XSS_OBSERVATIONS = "Laughs a lot. <img src=x onerror=\"window.__xss='obs'\"><script>window.__xss='script'</script>"
XSS_FILTER = "<img src=x onerror=\"window.__xss='filter'\">"
TASK_TYPE = "caption/v1:demo"
"""The API refuses markup in task_type and target names (pattern-validated), so markup reaches the
console only through a target URL, the job filters and the observations typed in the form."""


def job_count(console_stack) -> int:
    page = console_stack.api.http.get("/api/jobs", params={"limit": 200}).json()
    return len(page["items"])


def submit_through_form(console, age: str, observations: str) -> None:
    console.go("submit")
    console.page.fill("main [name=age_months]", age)
    console.page.fill("main [name=observations]", observations)
    console.page.click("main form button[type=submit]")


def test_the_key_prompt_guards_every_page_until_the_right_key_is_given(console):
    console.allow(401)
    document = console.open("jobs")
    policy = document.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert document.headers["x-content-type-options"] == "nosniff"
    prompt, main = console.page.locator("#key-prompt"), console.page.locator("#page")
    expect(prompt).to_be_visible()
    expect(console.page.locator("#key-message")).to_contain_text("needs a key")
    for route in PAGES:
        console.go(route)
        expect(prompt).to_be_visible()
        expect(main).to_be_hidden()
        assert main.inner_html().strip() == "", f"#/{route} rendered behind the prompt"
    console.shot("key-prompt")

    console.login("not-the-right-key")
    expect(console.page.locator("#key-message")).to_contain_text("did not accept")
    expect(prompt).to_be_visible()
    expect(main).to_be_hidden()

    console.login(API_KEY)
    expect(prompt).to_be_hidden()
    expect(console.page.locator("main h1")).to_have_text(PAGES["metrics"])
    console.go("jobs")
    expect(console.page.locator("main h1")).to_have_text("Jobs")
    expect(console.page.locator(".job-list table.jobs, .job-list .empty")).to_be_visible()
    assert console.page.evaluate("Object.values(sessionStorage)") == [API_KEY]
    assert API_KEY not in console.page.url

    console.page.click("#forget-key")
    expect(prompt).to_be_visible()
    assert console.page.evaluate("Object.values(sessionStorage)") == []


def test_a_submitted_case_is_followed_to_completed_and_its_timeline_opens(console):
    console.open()
    console.login()
    console.go("submit")
    console.page.fill("main [name=age_months]", "24")
    console.page.locator("main [name=observations]").press_sequentially("No words.")
    expect(console.page.locator(".count")).to_have_text("9 / 4000")
    console.page.fill("main [name=observations]", OBSERVATIONS)
    console.page.click("main form button[type=submit]")

    job = console.page.locator(".follow .job")
    expect(job).to_have_attribute("data-status", "completed")
    job_id = job.get_attribute("data-job-id")
    expect(job.locator(".risk .badge")).to_have_text(re.compile("^(moderate|high)$"))
    expect(job.locator(".domains")).to_contain_text("communication")
    assert job.locator("table.candidates tr.cand-row").count() >= 2
    reasons = job.locator("table.candidates tr.reason-row td.reason")
    assert reasons.count() == job.locator("table.candidates tr.cand-row").count()
    assert all(text.strip() for text in reasons.all_inner_texts())
    console.shot("submit")

    console.page.click(f".accepted a[href='#/jobs/{job_id}']")
    detail = console.page.locator(f".job-detail .job[data-job-id='{job_id}']")
    expect(detail).to_have_attribute("data-status", "completed")
    events = detail.locator("ol.events li")
    assert [e.get_attribute("data-event") for e in events.all()] == [
        "submitted",
        "claimed",
        "routed",
        "call_started",
        "attempt",
        "completed",
    ]
    expect(detail.locator("ol.events li[data-event=attempt]")).to_contain_text("answered in")
    expect(detail.locator("svg.timeline-chart rect.attempt.ok")).to_have_count(1)
    expect(console.page.locator(f"tr.job-row.selected[data-job-id='{job_id}']")).to_be_visible()
    console.shot("jobs-timeline")


def test_the_jobs_list_pages_and_filters_by_status_target_and_time(console, console_stack):
    api = console_stack.api
    seeded = {api.submit(age_months=30, observations="Says many words.")["job_id"] for _ in range(26)}
    done = api.wait(sorted(seeded)[0])
    console.open("jobs")
    console.login()
    rows = console.page.locator("table.jobs tr.job-row")
    expect(rows).to_have_count(25)
    first_page = {row.get_attribute("data-job-id") for row in rows.all()}
    console.page.click("nav.pager button:has-text('Older')")
    expect(console.page.locator("nav.pager")).to_contain_text("page 2")
    second_page = {row.get_attribute("data-job-id") for row in rows.all()}
    assert second_page and not first_page & second_page
    assert seeded <= first_page | second_page
    console.page.click("nav.pager button:has-text('Newer')")
    expect(console.page.locator("nav.pager")).to_contain_text("page 1")

    console.page.select_option("main [name=status]", "completed")
    console.page.fill("main [name=target]", done["target"])
    console.page.click("main form.filters button[type=submit]")
    expect(console.page.locator("tr.job-row:not([data-status=completed])")).to_have_count(0)
    expect(console.page.locator(f"tr.job-row:not([data-target='{done['target']}'])")).to_have_count(0)
    expect(console.page.locator(f"tr.job-row[data-job-id='{done['job_id']}']")).to_be_visible()
    assert f"target={done['target']}" in console.page.url and "observations" not in console.page.url

    console.page.fill("main [name=since]", "2099-01-01T00:00")
    console.page.click("main form.filters button[type=submit]")
    expect(console.page.locator(".job-list .empty")).to_contain_text("No jobs match these filters")
    console.page.click("main form.filters button[type=reset]")
    expect(rows).to_have_count(25)
    for job_id in seeded:  # leave no work in flight for the next test
        api.wait(job_id)


def test_validation_messages_appear_next_to_their_field(console, console_stack):
    console.allow(422)
    before = job_count(console_stack)
    console.open()
    console.login()
    submit_through_form(console, "300", "x" * 4001)
    expect(console.page.locator(".count")).to_have_class(re.compile(r"\bover\b"))
    expect(console.page.locator("[data-error-for=age_months]")).to_contain_text("216")
    expect(console.page.locator("[data-error-for=observations]")).to_contain_text("4000")
    expect(console.page.locator("main [name=age_months]")).to_have_attribute("aria-invalid", "true")
    expect(console.page.locator(".follow .job")).to_have_count(0)
    console.shot("submit-422")
    assert job_count(console_stack) == before


def test_the_route_tester_ranks_candidates_and_queues_nothing(console, console_stack):
    before = job_count(console_stack)
    console.open()
    console.login()
    console.go("route")
    console.page.fill("main [name=sla_ms]", "1500")
    console.page.fill("main [name=age_months]", "30")
    console.page.click("main form button[type=submit]")
    expect(console.page.locator(".dry-run")).to_contain_text("nothing was queued")
    rows = console.page.locator("table.candidates tr.cand-row")
    names = [row.get_attribute("data-target") for row in rows.all()]
    assert {"edge", "gpu"} <= set(names)
    for name in names:
        reason = console.page.locator(f"tr.reason-row[data-reason-for='{name}'] td.reason").inner_text()
        assert reason.startswith(f"{name}:"), reason
    chosen = console.page.locator(".decision .chosen").inner_text()
    assert chosen == names[0] and chosen in {"edge", "gpu", "edge-agent"}
    expect(console.page.locator("svg.latency-chart g.cand")).to_have_count(len(names))
    console.shot("route-tester")
    assert job_count(console_stack) == before


def test_targets_sla_events_and_model_metrics_show_data(console, console_stack):
    api = console_stack.api
    late = api.submit(age_months=24, observations=OBSERVATIONS, sla_ms=1)
    on_time = api.submit(age_months=24, observations=OBSERVATIONS, sla_ms=5000)
    assert api.wait(late["job_id"])["sla_met"] is False
    assert api.wait(on_time["job_id"])["status"] == "completed"
    console.open()
    console.login()

    console.go("targets")
    for name in ("edge", "gpu"):
        expect(console.page.locator(f"table.targets tr[data-target={name}]")).to_be_visible()
    expect(console.page.locator("table.targets tr[data-target=edge] .badge.tier-edge")).to_have_text("edge")
    console.shot("targets")

    console.go("sla")
    expect(console.page.locator(f"table.sla-events a[title='{late['job_id']}']")).to_be_visible()
    expect(console.page.locator(f"table.sla-events a[title='{on_time['job_id']}']")).to_have_count(0)
    assert console.page.locator("svg.chart rect.bar").count() >= 1
    console.shot("sla-events")

    console.go("metrics")
    expect(console.page.locator("table.model-metrics tbody tr").first).to_be_visible()
    assert console.page.locator("svg.chart circle.dot").count() >= 2
    expect(console.page.locator("svg.chart line.diagonal")).to_have_count(1)
    console.shot("model-metrics")

    for route in PAGES:
        console.go(route)
        expect(console.page.locator("main h1")).to_have_text(PAGES[route])
        console.page.wait_for_load_state("networkidle")
        expect(console.page.locator("main .problem:visible")).to_have_count(0)
        assert not re.search(r"Traceback|TypeError|undefined|NaN|\[object", console.page.locator("main").inner_text())


def test_a_registered_target_is_removed_from_the_targets_page_only_after_confirming(console, console_stack):
    http = console_stack.api.http
    probe = {"name": "remove-me", "tier": "edge", "url": "http://10.9.9.9:8001", "enabled": False}
    assert http.post("/register_agent", json=probe).status_code in (200, 201)

    def listed() -> set[str]:
        return {t["name"] for t in http.get("/api/targets").json()["targets"]}

    console.open()
    console.login()
    console.go("targets")
    row = console.page.locator("table.targets tr[data-target=remove-me]")
    expect(row.locator("button.remove")).to_be_visible()
    expect(console.page.locator("table.targets tr[data-target=edge] button.remove")).to_have_count(0)

    console.page.once("dialog", lambda dialog: dialog.dismiss())
    row.locator("button.remove").click()
    expect(row).to_be_visible()
    assert "remove-me" in listed()

    console.page.once("dialog", lambda dialog: dialog.accept())
    row.locator("button.remove").click()
    expect(console.page.locator("main .removal")).to_have_text("Removed “remove-me”.")
    expect(row).to_have_count(0)
    assert "remove-me" not in listed()
    console.shot("target-removed")


def test_targets_refresh_every_3_s_and_pause_while_the_tab_is_hidden(console):
    calls = []
    console.page.on("request", lambda r: r.url.endswith("/api/targets") and calls.append(r.url))
    console.open("targets")
    console.login()
    expect(console.page.locator("table.targets")).to_be_visible()
    console.page.wait_for_timeout(3500)
    assert len(calls) >= 2, "the Targets page did not refresh itself"
    console.page.evaluate(HIDE_TAB)
    console.page.wait_for_timeout(500)  # a refresh already in flight may still land
    hidden_at = len(calls)
    console.page.wait_for_timeout(3500)
    assert len(calls) == hidden_at, "the Targets page kept polling while the tab was hidden"
    console.page.evaluate(SHOW_TAB)
    console.page.wait_for_timeout(500)
    assert len(calls) > hidden_at, "the Targets page did not resume when the tab came back"


def answer_with(body: str):
    """A Playwright route handler that answers 200 with this JSON body."""
    return lambda route: route.fulfill(status=200, content_type="application/json", body=body)


def test_empty_and_unreachable_states_read_as_sentences(console):
    console.allow(pattern=r"net::ERR_FAILED")
    console.open()
    console.login()
    for pattern, body in EMPTY_ANSWERS.items():
        console.page.route(re.compile(pattern), answer_with(body))
    console.page.route("**/api/targets", lambda route: route.abort())

    console.go("jobs")
    expect(console.page.locator(".job-list .empty")).to_have_text("No jobs yet — submit one.")
    console.go("sla")
    expect(console.page.locator("main .empty")).to_have_text("No SLA violations in the last 24 hours.")
    console.go("metrics")
    expect(console.page.locator("main .empty")).to_contain_text("No jobs with both a predicted and a measured latency")
    console.go("targets")
    problem = console.page.locator("main .problem")
    expect(problem).to_have_text(re.compile(r"^The API is unreachable; retrying in [1-5] s\.$"))
    console.shot("unreachable")
    console.page.unroute("**/api/targets")
    expect(console.page.locator("table.targets tr[data-target=edge]")).to_be_visible(timeout=8000)
    expect(problem).to_be_hidden()


def test_markup_in_data_is_shown_as_text_and_never_runs(console, console_stack):
    http = console_stack.api.http
    probe = {"name": "markup-probe", "tier": "cloud", "url": XSS_URL, "contract": "run", "enabled": False}
    assert http.post("/register_agent", json=probe).status_code == 201
    task = http.post("/route_task", json={"task_type": TASK_TYPE, "payload": {"note": XSS_FILTER}, "consent": True})
    assert task.status_code == 202, task.text
    console.open()
    console.login()
    submit_through_form(console, "24", XSS_OBSERVATIONS)
    expect(console.page.locator(".follow .job")).to_have_attribute("data-status", "completed")

    console.go("targets")
    expect(console.page.locator("tr[data-target=markup-probe] td.url code")).to_have_text(XSS_URL)

    console.go(f"jobs/{task.json()['task_id']}")
    detail = console.page.locator(".job-detail .job")
    expect(detail).to_have_attribute("data-status", "completed")
    expect(detail.locator(".facts")).to_contain_text(TASK_TYPE)

    console.page.fill("main [name=target]", XSS_FILTER)
    console.page.click("main form.filters button[type=submit]")
    expect(console.page.locator(".job-list .empty")).to_contain_text(f"target “{XSS_FILTER}”")
    console.shot("markup-as-text")

    assert console.page.evaluate("window.__xss") is None
    assert console.page.locator("img").count() == 0
    assert console.page.locator("main script").count() == 0
