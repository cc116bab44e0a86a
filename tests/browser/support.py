"""What the console's browser tests share: Chromium's flags, the API key, markup probes, and a
tab that records what the page logged."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import postgres
from tests.support.env import require
from tests.support.stack import Api, Stack

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    # This machine's network is closed: without these Chromium stalls on refused connections.
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
API_KEY = "console-browser-key-1"
VIEWPORT = {"width": 1440, "height": 900}
UI_TIMEOUT_MS = 15_000
"""Longest a test waits for the console to show something (ms); jobs here finish in well under 1 s."""

XSS_URL = "http://127.0.0.1:9/<svg/onload=window.__xss='url'>"
"""A registered (disabled) target's URL carrying markup (without whitespace, which a URL may not
hold): the Targets page must show it as text."""

CSP_WATCH = """
window.__csp = [];
document.addEventListener('securitypolicyviolation',
  e => window.__csp.push(e.violatedDirective + ' ' + (e.blockedURI || '')));
"""


def require_browser() -> None:
    require(CHROMIUM.exists(), f"{CHROMIUM} not found (apt-get install chromium, or scripts/install-tools)")
    require(importlib.util.find_spec("playwright"), "playwright is not installed (pip install -r requirements-dev.txt)")


def empty_stack(pg_database: str | None, redis_server, artifacts: Path) -> Stack:
    """A Stack over an emptied database and a running, flushed Redis, for one module's browser
    tests; skips (fails under CI=true) when either store is missing."""
    require(pg_database, "PostgreSQL not available (set TEST_DATABASE_URL, or install postgresql for initdb)")
    require(redis_server, "redis-server not found")
    postgres.truncate_all(pg_database)
    if not redis_server.process or redis_server.process.poll() is not None:
        redis_server.start()
    client = redis_server.client()
    client.flushall()
    client.close()
    return Stack(pg_database, redis_server.url, artifacts)


@dataclass
class ConsoleStack:
    stack: Stack
    api: Api
    artifacts: Path

    @property
    def ui(self) -> str:
        return f"{self.api.url}/ui/"


@dataclass
class Console:
    """One browser tab on the console, recording what the page logged."""

    page: object
    base: str
    artifacts: Path
    console_errors: list[str] = field(default_factory=list)
    allowed: list[re.Pattern] = field(default_factory=list)

    def open(self, route: str = ""):
        """Load the console (a real page load); returns Playwright's Response of the document."""
        return self.page.goto(f"{self.base}#/{route}" if route else self.base)

    def go(self, route: str) -> None:
        """Navigate inside the single-page console (a hash change, no reload)."""
        self.page.evaluate("r => { location.hash = r; }", f"#/{route}")

    def login(self, key: str = API_KEY) -> None:
        """Answer the key prompt. The console raised it because a call answered 401, which
        Chromium logs as a console error: expected here."""
        self.allow(401)
        self.page.locator("#key-prompt").wait_for(state="visible")
        self.page.fill("#key-input", key)
        self.page.click("#key-form button[type=submit]")

    def allow(self, status: int | None = None, pattern: str | None = None) -> None:
        """A failed request with this status (or a console error matching ``pattern``) is
        expected: Chromium logs every failed request as a console error."""
        self.allowed.append(re.compile(pattern or rf"status of {status} "))

    def shot(self, name: str) -> Path:
        path = self.artifacts / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def unexpected_errors(self) -> list[str]:
        return [e for e in self.console_errors if not any(p.search(e) for p in self.allowed)]

    def csp_violations(self) -> list[str]:
        return self.page.evaluate("window.__csp || []")
