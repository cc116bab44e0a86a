"""P3 of bench.e2e: ``POST /api/submit`` requests/s of the real API against a bare FastAPI app
that validates the same body and does one RQ enqueue (``bench.bare_submit:app``). Each is one
uvicorn process; the load generator is Debian's wrk (C, two threads, 32 connections), so it does
not starve the servers of the two cores the way a Python client would. Alternated: real, bare,
real, bare, after one unmeasured warm-up run each.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
from pathlib import Path

from bench.e2e_phases import BODY, Env, say
from tests.support.env import free_port
from tests.support.procs import ManagedProcess, python
from tests.support.stack import Api

WRK_ARGS = ("-t2", "-c32")
UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk_binary() -> str | None:
    return shutil.which("wrk")


def lua_script(path: Path, api_key: str) -> Path:
    """A wrk script that POSTs BODY as JSON with the API key."""
    path.write_text(
        "wrk.method = 'POST'\n"
        f"wrk.body = {json.dumps(json.dumps(BODY))}\n"
        "wrk.headers['Content-Type'] = 'application/json'\n"
        f"wrk.headers['x-api-key'] = {json.dumps(api_key)}\n"
    )
    return path


def parse(output: str) -> dict:
    """Requests/s, p50 latency (ms) and the count of non-2xx answers and socket errors."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    value, unit = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE).groups()
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return {
        "rps": rps,
        "p50_ms": float(value) * UNITS_MS[unit],
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": sum(map(int, errors.groups())) if errors else 0,
    }


def wrk(url: str, script: Path, seconds: int) -> dict:
    argv = [wrk_binary(), *WRK_ARGS, f"-d{seconds}s", "--latency", "-s", str(script), f"{url}/api/submit"]
    done = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=seconds + 60)
    return parse(done.stdout)


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def bare_app(env: Env) -> str:
    """Start ``uvicorn bench.bare_submit:app`` (one process) on the stack's Redis; its URL."""
    port = free_port()
    argv = python(
        "-m", "uvicorn", "bench.bare_submit:app", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"
    )
    process = ManagedProcess(
        "bare-submit",
        argv,
        env=env.stack.base_env(LOG_LEVEL="WARNING"),
        log_path=env.workdir / "bare-submit.log",
        ready_check=lambda: listening(port),
    )
    env.stack.processes.append(process)
    process.start()
    return f"http://127.0.0.1:{port}"


def submit_path(env: Env, api: Api, seconds: int, rounds: int = 2) -> dict:
    """Requests/s and p50 of both apps, ``rounds`` times alternated."""
    script = lua_script(env.workdir / "submit.lua", env.api_key)
    apps = {"pipeline": api.url, "bare": bare_app(env)}
    for name, url in apps.items():
        say(f"(P3) warm-up, {name}")
        warm = wrk(url, script, 2)
        if warm["non_2xx"] or warm["socket_errors"]:
            raise RuntimeError(
                f"(P3) {name} warm-up: {warm['non_2xx']} non-2xx answers, {warm['socket_errors']} errors"
            )
    runs: dict[str, list[dict]] = {name: [] for name in apps}
    for round_ in range(rounds):
        for name, url in apps.items():
            result = wrk(url, script, seconds)
            say(f"(P3) round {round_ + 1}, {name}: {result['rps']:.0f} req/s, p50 {result['p50_ms']:.1f} ms")
            runs[name].append(result)
    return runs
