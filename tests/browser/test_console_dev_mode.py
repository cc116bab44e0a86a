"""Dev mode is loud in the console: a real API without keys, a real Chromium, the red banner on
every page; the same console against an API with keys shows none."""

from __future__ import annotations

import pytest

from tests.browser.support import VIEWPORT, empty_stack
from tests.support.env import artifacts_dir
from tests.support.keys import admin_env

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]


def banner(browser, url: str) -> tuple[bool, str]:
    """Whether the console at ``url`` shows the dev-mode banner once its header has read /readyz
    (which needs no key: with keys configured the key prompt is up, and the header still is)."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    try:
        page.goto(url)
        page.locator("#health.ok").wait_for()  # /readyz answered: the banner has been decided
        element = page.locator("#dev-mode")
        return element.is_visible(), element.inner_text() if element.is_visible() else ""
    finally:
        context.close()


def test_the_console_shows_a_banner_in_dev_mode_and_none_with_keys(browser, request, pg_database, redis_server):
    stack = empty_stack(pg_database, redis_server, artifacts_dir(request))
    try:
        dev = stack.api()
        keyed = stack.api(**admin_env("dev-banner-admin-key-1"))
        shown, text = banner(browser, f"{dev.url}/ui/")
        assert shown and "Dev mode" in text and "administrator" in text
        assert banner(browser, f"{keyed.url}/ui/")[0] is False
    finally:
        stack.close()
