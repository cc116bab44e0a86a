"""A live stack of real processes for e2e tests: model servers, the API (uvicorn), workers.

stack = Stack(pg_url, redis_url, artifacts)
gpu = stack.model_server("gpu", tier="gpu", latency_ms=5)
api = stack.api()                     # targets: every model server started so far
stack.worker()                        # python -m modelreasoner.worker
job = api.submit(age_months=24, observations="...")
done = api.wait(job["job_id"])
stack.close()
"""

from __future__ import annotations

import os
import time
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import redis

from tests.support.env import ROOT, free_port
from tests.support.keys import keys_env, principal
from tests.support.procs import ManagedProcess, python

TARGET_URL_VARS = {"edge": "EDGE_MODEL_URL", "cloud": "CLOUD_MODEL_URL", "gpu": "GPU_MODEL_URL"}
TERMINAL = ("completed", "failed")


class ModelServer:
    def __init__(self, process: ManagedProcess, url: str, tier: str) -> None:
        self.process = process
        self.url = url
        self.tier = tier

    def set_profile(self, **options: Any) -> dict:
        """Change emulation at run time (server started with admin=True)."""
        response = httpx.post(f"{self.url}/admin/profile", json=options, timeout=5)
        response.raise_for_status()
        return response.json()


class Api:
    def __init__(self, process: ManagedProcess, url: str, api_key: str | None) -> None:
        self.process = process
        self.url = url
        self.headers = {"x-api-key": api_key} if api_key else {}
        self.http = httpx.Client(base_url=url, headers=self.headers, timeout=10)
        self._clients: list[httpx.Client] = []

    def as_key(self, key: str) -> httpx.Client:
        """A client of this API presenting ``key`` (closed with the API)."""
        client = httpx.Client(base_url=self.url, headers={"x-api-key": key}, timeout=10)
        self._clients.append(client)
        return client

    def submit(self, headers: dict | None = None, **body: Any) -> dict:
        body.setdefault("age_months", 24)
        body.setdefault("observations", "Plays well with others.")
        response = self.http.post("/api/submit", json=body, headers=headers or {})
        assert response.status_code == 202, response.text
        return response.json()

    def status(self, job_id: str) -> dict:
        response = self.http.get(f"/api/status/{job_id}")
        response.raise_for_status()
        return response.json()

    def wait(self, job_id: str, timeout: float = 30.0, statuses: tuple[str, ...] = TERMINAL) -> dict:
        """Poll /api/status until the job reaches one of ``statuses``; fail loudly otherwise."""
        deadline = time.monotonic() + timeout
        last: dict = {}
        while time.monotonic() < deadline:
            last = self.status(job_id)
            if last["status"] in statuses:
                return last
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} still {last.get('status')} after {timeout} s: {last}")

    def close(self) -> None:
        self.http.close()
        while self._clients:
            self._clients.pop().close()


class Stack:
    """Owns every process it starts and stops them all in ``close``."""

    def __init__(self, pg_url: str, redis_url: str, artifacts: Path, **env: str) -> None:
        self.pg_url = pg_url
        self.redis_url = redis_url
        self.artifacts = artifacts
        self.extra_env = env
        self.processes: list[ManagedProcess] = []
        self.model_servers: dict[str, ModelServer] = {}
        self.apis: list[Api] = []

    def base_env(self, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PEDI_", "WORKER_", "ROUTING_"))}
        for name in ("DATABASE_URL", "REDIS_URL", "API_KEY", *TARGET_URL_VARS.values()):
            env.pop(name, None)
        env.update(
            {
                "PYTHONPATH": str(ROOT),
                "DATABASE_URL": self.pg_url,
                "REDIS_URL": self.redis_url,
                "LOG_LEVEL": "INFO",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        env.update(overrides)
        return env

    def target_env(self) -> dict[str, str]:
        """Target URL variables for every model server started under a tier name."""
        return {TARGET_URL_VARS[n]: s.url for n, s in self.model_servers.items() if n in TARGET_URL_VARS}

    def _spawn(self, name: str, argv: list[str], env: dict[str, str], **kwargs: Any) -> ManagedProcess:
        process = ManagedProcess(name, argv, env=env, log_path=self.artifacts / f"{name}.log", **kwargs)
        self.processes.append(process)
        return process.start()

    def model_server(self, name: str, *, tier: str = "none", admin: bool = True, **options: Any) -> ModelServer:
        """Start ``python -m modelreasoner.server``; ``options`` become --flags (latency_ms=5 ->
        --latency-ms 5). A tier's random transient failures (its default ``fail_rate``) stay off
        unless ``fail_rate`` is given: a test's server fails only when the test says so."""
        options.setdefault("fail_rate", 0)
        port = free_port()
        argv = python("-m", "modelreasoner.server", "--port", str(port), "--tier", tier)
        for key, value in options.items():
            argv += [f"--{key.replace('_', '-')}", str(value)]
        if admin:
            argv.append("--admin")
        url = f"http://127.0.0.1:{port}"
        process = self._spawn(f"model-{name}", argv, self.base_env(), ready_url=f"{url}/healthz")
        server = ModelServer(process, url, tier)
        self.model_servers[name] = server
        return server

    def api(self, *, api_key: str | None = None, module_app: bool = False, **env: str) -> Api:
        """Start the API under uvicorn on a free port: ``create_app --factory``, or with
        ``module_app`` the module-level ``orchestrator.app.main:app`` users paste."""
        port = free_port()
        overrides = {**self.target_env(), **env}
        keys = api_key.split(",") if api_key else []
        if keys:  # administrators' keys (a list: rotation): the stack's tests drive every route
            overrides = {**keys_env(*(principal(key, "admin") for key in keys)), **overrides}
        target = ["orchestrator.app.main:app"] if module_app else ["orchestrator.app.main:create_app", "--factory"]
        argv = python(
            "-m",
            "uvicorn",
            *target,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        )
        url = f"http://127.0.0.1:{port}"
        process = self._spawn(f"api-{port}", argv, self.base_env(**overrides), ready_url=f"{url}/healthz")
        api = Api(process, url, keys[0] if keys else None)
        self.apis.append(api)
        return api

    def worker(
        self, *, kind: str = "threaded", concurrency: int = 4, name: str | None = None, **env: str
    ) -> ManagedProcess:
        """Start a worker: ``threaded`` (python -m modelreasoner.worker) or ``rq`` (rq worker)."""
        overrides = {**self.target_env(), **env}
        label = name or f"worker-{kind}-{len(self.processes)}"
        if kind == "rq":
            argv = python("-m", "rq.cli", "worker", "pedi-screen", "--url", self.redis_url, "--name", label)
        else:
            argv = python("-m", "modelreasoner.worker", "--concurrency", str(concurrency), "--name", label)
        return self._spawn(label, argv, self.base_env(**overrides), ready_check=partial(self.worker_registered, label))

    def worker_registered(self, name: str) -> bool:
        """True once RQ lists a worker called ``name`` on pedi-screen (ready to dequeue)."""
        connection = redis.Redis.from_url(self.redis_url)
        try:
            return connection.sismember("rq:workers:pedi-screen", f"rq:worker:{name}")
        except redis.RedisError:
            return False
        finally:
            connection.close()

    def logs(self) -> str:
        return "\n".join(p.log_text() for p in self.processes)

    def close(self) -> None:
        for api in self.apis:
            api.close()
        for process in reversed(self.processes):
            process.stop(timeout=10)
