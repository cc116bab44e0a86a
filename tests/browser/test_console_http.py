"""How the API serves the console: security headers on every /ui response, content types,
no key needed for the static files, and nothing outside orchestrator/ui is reachable."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from orchestrator.routers.ui import UI_DIR, asset_path
from tests.support.app import in_process_app
from tests.support.keys import admin_env

pytestmark = [pytest.mark.browser, pytest.mark.security]

REQUIRED_CSP = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "connect-src": "'self'",
    "frame-ancestors": "'none'",
    "object-src": "'none'",
    "base-uri": "'none'",
}


@pytest.fixture
def client(sqlite_engine, fake_redis, monkeypatch):
    app = in_process_app(sqlite_engine, fake_redis, monkeypatch, **admin_env("console-http-key-1"))
    with TestClient(app, follow_redirects=False) as test_client:
        yield test_client


def csp(response) -> dict[str, str]:
    policy = response.headers["content-security-policy"]
    return dict(part.strip().split(" ", 1) for part in policy.split(";") if part.strip())


def assert_secured(response) -> None:
    assert csp(response).items() >= REQUIRED_CSP.items(), response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/ui/", "text/html"),
        ("/ui/index.html", "text/html"),
        ("/ui/js/app.js", "text/javascript"),
        ("/ui/js/pages/jobs.js", "text/javascript"),
        ("/ui/console.css", "text/css"),
        ("/ui/favicon.svg", "image/svg+xml"),
    ],
)
def test_console_files_are_served_without_a_key_and_with_security_headers(client, path, content_type):
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(content_type)
    assert_secured(response)
    assert client.get("/api/jobs").status_code == 401, "the data behind the console still needs the key"


def test_ui_redirects_to_the_directory_so_relative_paths_resolve(client):
    response = client.get("/ui")
    assert response.status_code == 308 and response.headers["location"] == "ui/"
    assert_secured(response)


@pytest.mark.parametrize(
    "path",
    [
        "/ui/nope.js",
        "/ui/js/",
        "/ui/%2e%2e/settings.py",
        "/ui/js/%2e%2e/%2e%2e/routers/ui.py",
        "/ui/..%2f..%2fpyproject.toml",
    ],
)
def test_unknown_and_escaping_paths_answer_404_with_the_same_headers(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert_secured(response)


def test_asset_path_only_returns_files_of_served_kinds_inside_the_ui_directory(tmp_path):
    (tmp_path / "ok.js").write_text("")
    (tmp_path / "secret.txt").write_text("")
    assert asset_path("ok.js", tmp_path) == tmp_path / "ok.js"
    assert asset_path("secret.txt", tmp_path) is None
    assert asset_path("../ok.js", tmp_path / "sub") is None
    assert asset_path("index.html") == UI_DIR / "index.html"


def test_the_console_has_no_inline_script_style_or_html_injection():
    """The CSP would block inline code anyway; this keeps the source honest about it."""
    html = (UI_DIR / "index.html").read_text()
    assert "<script>" not in html and "style=" not in html and "<style" not in html
    for path in UI_DIR.rglob("*.js"):
        source = path.read_text()
        for forbidden in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", ".style."):
            assert forbidden not in source, f"{path.name} uses {forbidden}"
