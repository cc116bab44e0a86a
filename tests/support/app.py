"""The API in-process with injected services (SQLite, fakeredis): fast unit tests of HTTP."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from sqlalchemy.engine import Engine

from orchestrator.app.deps import Services
from orchestrator.app.main import create_app
from orchestrator.settings import load_settings


def in_process_app(engine: Engine, redis, monkeypatch: pytest.MonkeyPatch, **env: str) -> FastAPI:
    """The real app factory, on ``engine`` and ``redis``, with ``env`` set for its settings."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    return create_app(services=Services.over(settings, engine, redis))
