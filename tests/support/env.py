"""Where things are, and how a test reacts to a missing service."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", ROOT / "test-artifacts"))
IN_CI = os.environ.get("CI", "").lower() == "true"


def require(condition: object, reason: str) -> None:
    """Skip the test locally when ``condition`` is falsy, with ``reason``; under CI=true, fail:
    a green CI run must mean every test ran."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required service missing under CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def artifacts_dir(request: pytest.FixtureRequest) -> Path:
    """A per-test directory for logs and screenshots, kept after the run for CI upload."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)[-150:]
    path = ARTIFACTS / name
    path.mkdir(parents=True, exist_ok=True)
    return path
