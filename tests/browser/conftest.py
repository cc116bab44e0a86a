"""Fixtures of the console's browser tests: one live stack and one headless Chromium per module,
a fresh browser context (so a fresh sessionStorage) per test.

Chromium is Debian's /usr/bin/chromium driven by Playwright for Python; `playwright install`
is never needed. Without Chromium or Playwright the tests skip locally and fail under CI=true.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.support import (
    API_KEY,
    CHROMIUM,
    CHROMIUM_ARGS,
    CSP_WATCH,
    UI_TIMEOUT_MS,
    VIEWPORT,
    Console,
    ConsoleStack,
    empty_stack,
    require_browser,
)
from tests.support.env import artifacts_dir


@pytest.fixture(scope="module")
def browser() -> Iterator:
    require_browser()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def console_stack(request, pg_database, redis_server) -> Iterator[ConsoleStack]:
    """Two model servers (edge also as the runner edge-agent), the API with API_KEY serving the
    console, and one worker."""
    artifacts = artifacts_dir(request)
    stack = empty_stack(pg_database, redis_server, artifacts)
    try:
        edge = stack.model_server("edge", tier="edge", latency_ms=25, jitter=0.2)
        stack.model_server("gpu", tier="gpu", latency_ms=10, jitter=0.2)
        # The edge server also answers the runner contract (POST /run), so generic tasks have a target.
        runner = {"EDGE_AGENT_URL": edge.url}
        api = stack.api(api_key=API_KEY, **runner)
        stack.worker(concurrency=4, **runner)
        yield ConsoleStack(stack, api, artifacts)
    finally:
        stack.close()


@pytest.fixture
def console(browser, console_stack: ConsoleStack, artifacts: Path) -> Iterator[Console]:
    """A fresh tab; after the test, no unexpected console error and no CSP violation."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(UI_TIMEOUT_MS)
    context.add_init_script(CSP_WATCH)
    page = context.new_page()
    tab = Console(page, console_stack.ui, artifacts)
    page.on("console", lambda m: m.type == "error" and tab.console_errors.append(m.text))
    page.on("pageerror", lambda exc: tab.console_errors.append(f"uncaught: {exc}"))
    try:
        yield tab
        assert tab.csp_violations() == [], "Content-Security-Policy violations"
        assert tab.unexpected_errors() == [], "errors in the browser console"
    finally:
        context.close()
