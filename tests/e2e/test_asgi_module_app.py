"""``uvicorn orchestrator.app.main:app`` (the form users and the design documents paste) works
like ``create_app --factory``, and importing the module has no side effects."""

from __future__ import annotations

import importlib
import socket
import subprocess
import sys

import pytest

from orchestrator.settings import get_settings
from tests.support.env import ROOT
from tests.support.procs import python
from tests.support.stack import Stack

MODULE = "orchestrator.app.main"


def test_importing_the_module_reads_no_settings_and_connects_to_nothing(monkeypatch):
    # A broken variable would stop create_app; a connect would fail loudly. Import must do neither.
    monkeypatch.setenv("MAX_BODY_BYTES", "not-a-number")
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/nothing")

    def no_connect(*args, **kwargs):
        raise AssertionError("importing orchestrator.app.main opened a connection")

    monkeypatch.setattr(socket.socket, "connect", no_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", no_connect)
    monkeypatch.delitem(sys.modules, MODULE, raising=False)  # put back after the test
    get_settings.cache_clear()

    module = importlib.import_module(MODULE)

    assert get_settings.cache_info().currsize == 0, "importing the module read the settings"
    assert module.app._app is None, "the app was built at import"
    assert callable(module.app)


def test_a_bad_setting_stops_uvicorn_with_the_variable_named(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'dev.db'}",
        "MAX_BODY_BYTES": "not-a-number",
    }
    done = subprocess.run(
        python("-m", "uvicorn", f"{MODULE}:app", "--port", "0"),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0, done.stdout + done.stderr
    assert "MAX_BODY_BYTES" in done.stderr


@pytest.mark.e2e
def test_module_app_serves_the_same_api_as_the_factory(redis_url, artifacts, tmp_path):
    stack = Stack(f"sqlite:///{tmp_path / 'dev.db'}", redis_url, artifacts)
    try:
        module_api = stack.api(module_app=True)
        factory_api = stack.api()
        # Same defaults: the same OpenAPI document, the same readiness, the same submit.
        module_doc = module_api.http.get("/openapi.json").json()
        assert module_doc == factory_api.http.get("/openapi.json").json()
        assert module_api.http.get("/readyz").status_code == 200
        accepted = module_api.submit(age_months=24, observations="says no words yet")
        assert accepted["status"] == "queued"
        status = factory_api.status(accepted["job_id"])  # one database behind both
        assert status["status"] == "queued"
    finally:
        stack.close()
