"""The compose stack's monitoring without Docker: the processes docker-compose runs (edge, cloud
and gpu model servers, the API, a worker with METRICS_PORT) run as real processes, and a real
Prometheus (Debian package) scrapes them with the repo's scrape jobs and alert rules."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.env import ROOT, free_port, require
from tests.support.procs import ManagedProcess

pytestmark = [pytest.mark.e2e, pytest.mark.deploy, pytest.mark.postgres, pytest.mark.redis]

CONFIG = ROOT / "prometheus" / "prometheus.yml"
RULES = ROOT / "prometheus" / "rules" / "pedi-orchestrator-alerts.yaml"
CONTAINER_ROOT = "/etc/prometheus"
"""Where compose mounts ./prometheus inside the Prometheus container."""
COMPOSE_ADDRESSES = {"pedi-orchestrator": ["orchestrator:9000"], "pedi-worker": ["worker:9100"]}
"""Service names and ports of docker-compose.orchestrator.yml that the scrape jobs must hit."""
JOBS = 4
SCRAPE_INTERVAL = "1s"
"""Fast scrapes and rule evaluations keep the test to seconds."""
POLL_TIMEOUT_SECONDS = 20.0


def promtool() -> str:
    path = shutil.which("promtool")
    require(path, "promtool not found (Debian package prometheus; scripts/install-tools installs it)")
    return path


def prometheus_binary() -> str:
    path = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    require(path, "prometheus not found (Debian package prometheus; scripts/install-tools installs it)")
    return path


def scrape_addresses(job: dict) -> list[str]:
    """host:port of a scrape job, from static targets or DNS service discovery."""
    static = [target for config in job.get("static_configs", []) for target in config["targets"]]
    dns = [f"{name}:{config['port']}" for config in job.get("dns_sd_configs", []) for name in config["names"]]
    return static + dns


def alert_names() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}


def test_repo_config_is_valid_and_scrapes_the_compose_services():
    done = subprocess.run([promtool(), "check", "config", str(CONFIG)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    config = yaml.safe_load(CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for name, addresses in COMPOSE_ADDRESSES.items():
        assert scrape_addresses(jobs[name]) == addresses, name
        assert jobs[name].get("metrics_path", "/metrics") == "/metrics"
    # The rule glob, seen from the container, must pick up the repo's rules file.
    [pattern] = config["rule_files"]
    assert pattern.startswith(CONTAINER_ROOT + "/"), pattern
    host_pattern = pattern.removeprefix(CONTAINER_ROOT + "/")
    assert RULES in set((ROOT / "prometheus").glob(host_pattern)), f"{pattern} does not load {RULES.name}"


def local_config(addresses: dict[str, str]) -> dict:
    """The repo's prometheus.yml with every scrape job pointed at a local process and fast
    intervals; everything else (job names, paths, labels, relabelling) kept as shipped."""
    config = copy.deepcopy(yaml.safe_load(CONFIG.read_text()))
    config["global"].update(
        scrape_interval=SCRAPE_INTERVAL, scrape_timeout=SCRAPE_INTERVAL, evaluation_interval=SCRAPE_INTERVAL
    )
    config["rule_files"] = [str(RULES)]
    for job in config["scrape_configs"]:
        labels = {k: v for static in job.get("static_configs", []) for k, v in static.get("labels", {}).items()}
        job.pop("dns_sd_configs", None)
        job["static_configs"] = [{"targets": [addresses[job["job_name"]]], "labels": labels}]
    return config


def eventually(probe: Callable[[], Any], accept: Callable[[Any], bool], what: str) -> Any:
    """Poll ``probe`` until ``accept`` holds for its result; fail with the last result."""
    deadline = time.monotonic() + POLL_TIMEOUT_SECONDS
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if accept(last):
                return last
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.25)
    raise AssertionError(f"{what} not reached in {POLL_TIMEOUT_SECONDS} s; last: {last}")


class Prometheus:
    """A client of Prometheus' HTTP API (close it: it holds a connection pool)."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=5)

    def __enter__(self) -> Prometheus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def api(self, path: str, **params: str) -> Any:
        response = self.http.get(f"/api/v1/{path}", params=params)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    def scalar(self, query: str) -> float | None:
        result = self.api("query", query=query)["result"]
        return float(result[0]["value"][1]) if result else None

    def target_health(self) -> dict[str, str]:
        return {t["labels"]["job"]: t["health"] for t in self.api("targets", state="active")["activeTargets"]}

    def alerting_rules(self) -> dict[str, str]:
        groups = self.api("rules", type="alert")["groups"]
        return {rule["name"]: rule["health"] for group in groups for rule in group["rules"]}


def start_prometheus(stack, tmp_path: Path, addresses: dict[str, str], port: int) -> ManagedProcess:
    config_path = tmp_path / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(local_config(addresses), sort_keys=False))
    argv = [
        prometheus_binary(),
        f"--config.file={config_path}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    process = ManagedProcess(
        "prometheus",
        argv,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        log_path=stack.artifacts / "prometheus.log",
        ready_url=f"http://127.0.0.1:{port}/-/ready",
        cwd=tmp_path,
    )
    stack.processes.append(process)  # stopped with the rest of the stack
    return process.start()


def test_prometheus_scrapes_the_stack_and_loads_the_alert_rules(stack, tmp_path):
    prometheus_binary()  # skip (or fail under CI) before starting any process
    for tier in ("edge", "cloud", "gpu"):
        stack.model_server(tier, tier=tier, latency_ms=2, jitter=0)
    api = stack.api()
    worker_port = free_port()
    stack.worker(METRICS_PORT=str(worker_port))
    prometheus_port = free_port()
    addresses = {
        "pedi-orchestrator": api.url.removeprefix("http://"),
        "pedi-worker": f"127.0.0.1:{worker_port}",
        "prometheus": f"127.0.0.1:{prometheus_port}",
    }
    start_prometheus(stack, tmp_path, addresses, prometheus_port)
    jobs = [api.submit(sla_ms=5000)["job_id"] for _ in range(JOBS)]
    assert [api.wait(job_id)["status"] for job_id in jobs] == ["completed"] * JOBS

    with Prometheus(f"http://127.0.0.1:{prometheus_port}") as prom:
        health = eventually(prom.target_health, lambda h: set(h.values()) == {"up"} and len(h) == 3, "all targets up")
        assert set(health) == {"pedi-orchestrator", "pedi-worker", "prometheus"}
        eventually(lambda: prom.scalar("sum(pedi_jobs_completed_total)"), lambda v: v == JOBS, f"{JOBS} completed jobs")
        assert prom.scalar("sum(pedi_jobs_submitted_total)") == JOBS
        assert prom.scalar('sum(pedi_jobs_completed_total{service="worker"})') == JOBS, "worker relabelling lost"
        eventually(
            lambda: prom.scalar("max(pedi_workers_alive)"), lambda v: v == 1, "the API reporting one live worker"
        )
        assert prom.scalar("max(pedi_queue_depth)") == 0

        rules = eventually(
            prom.alerting_rules,
            lambda r: set(r) == alert_names() and set(r.values()) == {"ok"},
            "every alert rule loaded and evaluated",
        )
        assert len(rules) == len(alert_names())
