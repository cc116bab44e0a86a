"""The hostile model server (tests/support/hostile_server.py) as a process in a fault test's stack."""

from __future__ import annotations

import httpx

from tests.support.env import free_port
from tests.support.procs import python
from tests.support.stack import TARGET_URL_VARS, ModelServer, Stack


class HostileServer(ModelServer):
    def mode(self, mode: str) -> None:
        httpx.post(f"{self.url}/admin/mode", json={"mode": mode}, timeout=5).raise_for_status()

    def calls(self) -> int:
        """/infer requests the server has read (served, or dropped after reading)."""
        return httpx.get(f"{self.url}/admin/count", timeout=5).json()["calls"]


def hostile_server(stack: Stack, name: str, mode: str = "ok") -> HostileServer:
    """Start ``python -m tests.support.hostile_server`` as target ``name`` (edge, cloud or gpu)."""
    assert name in TARGET_URL_VARS
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = python("-m", "tests.support.hostile_server", "--port", str(port), "--mode", mode)
    process = stack._spawn(f"hostile-{name}", argv, stack.base_env(), ready_url=f"{url}/healthz")
    server = HostileServer(process, url, name)
    stack.model_servers[name] = server
    return server
