"""docker-compose.orchestrator.yml: validated by docker-compose itself, checked for structure, and
run for real without Docker.

The e2e test reads the resolved compose configuration (``docker-compose config``) and starts the
same commands the containers would run (the service's ``command``, else its image's CMD from the
Dockerfile) with the same environment (the image's ENV plus the service's), as local processes.
Only what a container network provides is rewritten: service hostnames become 127.0.0.1 with a free
port each, and Postgres/Redis are the test's own servers.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from orchestrator.settings import load_settings
from tests.deploy.test_dockerfiles import command, parse_dockerfile, runtime_env
from tests.support import postgres
from tests.support.env import ROOT, free_port, require
from tests.support.procs import ManagedProcess

pytestmark = [pytest.mark.deploy]

COMPOSE_FILE = ROOT / "docker-compose.orchestrator.yml"
ONE_SHOT = {"migrate"}
NO_PROBE = {"otel-collector": "distroless image: no shell or HTTP client to run a probe with"}
RQ_JOB_TIMEOUT_SECONDS = 300  # orchestrator.constants.RQ_JOB_TIMEOUT_SECONDS, restated on purpose
MODEL_TIERS = {"modelserver-edge": "edge", "modelserver-cloud": "cloud", "modelserver-gpu": "gpu"}
TEST_API_KEY = "compose-e2e-key-0001"
OWNER_ROLE, APP_ROLE = "pedi_owner", "pedi_app"
PASSWORDS = {
    "POSTGRES_PASSWORD": {"postgres"},
    "DB_OWNER_PASSWORD": {"postgres", "migrate"},
    "DB_APP_PASSWORD": {"postgres", "orchestrator", "worker"},
}
"""Each password variable -> the only services whose configuration may hold it."""


def docker_compose() -> str:
    binary = shutil.which("docker-compose")
    require(binary, "docker-compose not installed (scripts/install-tools installs Debian's docker-compose)")
    return binary


def compose_config(binary: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    return subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "config"],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(raw: dict) -> dict[str, dict]:
    return raw["services"]


# --- validation by the real tool -------------------------------------------------------------


def test_docker_compose_accepts_the_file():
    binary = docker_compose()
    result = compose_config(binary, API_KEY=TEST_API_KEY)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert resolved["services"]["orchestrator"]["environment"]["API_KEY"] == TEST_API_KEY


def test_docker_compose_refuses_to_start_without_an_api_key():
    result = compose_config(docker_compose())
    assert result.returncode != 0
    assert "API_KEY" in result.stderr


# --- structure -------------------------------------------------------------------------------


def test_every_long_running_service_has_a_healthcheck(services):
    for name, service in services.items():
        health = service.get("healthcheck") or {}
        if name in ONE_SHOT:
            assert service.get("restart") == "no", f"{name} is one-shot and must not restart"
            continue
        if name in NO_PROBE:
            assert not health, f"{name} has a healthcheck now: drop it from NO_PROBE"
            continue
        assert health.get("test") and not health.get("disable"), f"{name} has no healthcheck"
        assert health["test"][0] in ("CMD", "CMD-SHELL"), name
        assert health.get("interval") and health.get("timeout") and health.get("retries"), name


def test_every_dependency_waits_on_a_condition(services):
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on must be a mapping with conditions"
        for dependency, spec in depends.items():
            condition = spec.get("condition")
            if dependency in ONE_SHOT:
                expected = "service_completed_successfully"
            elif dependency in NO_PROBE:
                expected = "service_started"
            else:
                expected = "service_healthy"
            assert condition == expected, f"{name} -> {dependency}: {condition}, expected {expected}"


def test_migrate_runs_alembic_before_the_api_and_the_worker(services):
    migrate = services["migrate"]
    assert migrate["command"] == ["alembic", "upgrade", "head"]
    assert migrate["build"]["dockerfile"] == "Dockerfile.orchestrator"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("orchestrator", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def database_urls(services: dict) -> dict[str, make_url]:
    """service -> the database URL it connects with (resolved against the defaults)."""
    out = {}
    for name, service in services.items():
        env = service.get("environment") or {}
        for key in ("MIGRATION_DATABASE_URL", "DATABASE_URL"):
            if key in env:
                out[name] = make_url(interpolate(str(env[key]), {}))
    return out


def test_migrations_run_as_the_owner_and_the_app_as_the_runtime_role(services):
    env = {name: service.get("environment") or {} for name, service in services.items()}
    assert "DATABASE_URL" not in env["migrate"], "migrate needs only the owner's URL"
    urls = database_urls(services)
    assert set(urls) == {"migrate", "orchestrator", "worker"}
    assert urls["migrate"].username == OWNER_ROLE
    assert "MIGRATION_DATABASE_URL" in env["migrate"]
    for name in ("orchestrator", "worker"):
        assert "MIGRATION_DATABASE_URL" not in env[name]
        assert urls[name].username == APP_ROLE, f"{name} connects as the runtime role"
    assert {(u.host, u.port, u.database) for u in urls.values()} == {("postgres", 5432, "pedi")}
    assert env["postgres"]["POSTGRES_USER"] not in {OWNER_ROLE, APP_ROLE}
    mounts = bind_mounts(services["postgres"])
    assert mounts["/pedi/roles.sql"] == "migrations/roles.sql"
    init = mounts["/docker-entrypoint-initdb.d/10-pedi-roles.sh"]
    assert os.access(ROOT / init, os.X_OK), f"{init} must be executable (the image runs it, else sources it)"
    probe = services["postgres"]["healthcheck"]["test"]
    assert probe[probe.index("-h") + 1] == "127.0.0.1", "probe over TCP: ready only once the init scripts ran"


def test_no_app_container_receives_the_superusers_or_the_owners_password():
    secrets = {name: f"{name.lower()}-{uuid.uuid4().hex}" for name in PASSWORDS}
    result = compose_config(docker_compose(), API_KEY=TEST_API_KEY, **secrets)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    for variable, allowed in PASSWORDS.items():
        holders = {name for name, service in resolved.items() if secrets[variable] in yaml.safe_dump(service)}
        assert holders == allowed, f"{variable} reaches {sorted(holders)}, expected {sorted(allowed)}"


def test_scoped_keys_pass_through_only_when_set():
    unset = yaml.safe_load(compose_config(docker_compose(), API_KEY=TEST_API_KEY).stdout)
    env = unset["services"]["orchestrator"]["environment"]
    assert env["API_KEYS_JSON"] is None and env["API_KEYS_FILE"] is None, "unset stays unset (not empty)"
    keys = '[{"sha256": "' + "0" * 64 + '", "tenant": "clinic-a", "scopes": ["submit"]}]'
    given = compose_config(docker_compose(), API_KEY=TEST_API_KEY, API_KEYS_JSON=keys, API_KEYS_FILE="/run/keys.yaml")
    env = yaml.safe_load(given.stdout)["services"]["orchestrator"]["environment"]
    assert env["API_KEYS_JSON"] == keys and env["API_KEYS_FILE"] == "/run/keys.yaml"
    assert env["API_KEY"] == TEST_API_KEY, "API_KEY keeps working beside them"


def published(service: dict) -> dict[int, str]:
    """container port -> host binding, e.g. {9000: "${BIND_ADDRESS:-127.0.0.1}"}."""
    out = {}
    for spec in service.get("ports", []):
        host, _, container = str(spec).rpartition(":")
        out[int(container)] = host.rpartition(":")[0]
    return out


def test_ports_and_bindings(services):
    expected = {"orchestrator": 9000, "worker": 9100, "prometheus": 9090, "grafana": 3000}
    for name, port in expected.items():
        ports = published(services[name])
        assert port in ports, f"{name} does not publish {port}"
        assert ports[port] == "${BIND_ADDRESS:-127.0.0.1}", f"{name}: published ports bind to localhost by default"
    assert services["worker"]["environment"]["METRICS_PORT"] == "9100"
    for name in ("postgres", "redis", *MODEL_TIERS):
        assert not services[name].get("ports"), f"{name} has no reason to be reachable from outside"


def test_redis_keeps_nothing_on_disk(services):
    redis = services["redis"]
    assert redis["image"].startswith("redis:7")
    argv = redis["command"]
    assert argv[argv.index("--save") + 1] == "" and argv[argv.index("--appendonly") + 1] == "no"
    assert not redis.get("volumes")


def test_postgres_is_16_with_a_volume(services):
    assert services["postgres"]["image"].startswith("postgres:16")
    assert any(str(v).endswith(":/var/lib/postgresql/data") for v in services["postgres"]["volumes"])


def test_worker_gets_longer_than_a_job_to_shut_down(services):
    grace = services["worker"]["stop_grace_period"]
    assert re.fullmatch(r"\d+s", grace) and int(grace[:-1]) > RQ_JOB_TIMEOUT_SECONDS


def test_model_servers_share_one_image_with_their_tier(services):
    for name, tier in MODEL_TIERS.items():
        assert services[name]["build"]["dockerfile"] == "Dockerfile.modelserver"
        assert services[name]["environment"]["MODEL_SERVER_TIER"] == tier


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} against ``env``."""

    def one(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        if op == ":?":
            raise AssertionError(f"{name} is required: {arg}")
        return arg or ""

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value)


@pytest.mark.parametrize("service_name", ["orchestrator", "worker"])
def test_environment_is_valid_for_the_settings_object(services, service_name, monkeypatch):
    environment = services[service_name]["environment"].items()
    env = {k: interpolate(str(v), {"API_KEY": TEST_API_KEY}) for k, v in environment if v is not None}
    assert env["DATABASE_URL"].split("@")[1].startswith("postgres:5432/")
    assert env["REDIS_URL"].startswith("redis://redis:6379/")
    for tier, service in (("EDGE", "modelserver-edge"), ("CLOUD", "modelserver-cloud"), ("GPU", "modelserver-gpu")):
        assert env[f"{tier}_MODEL_URL"] == f"http://{service}:8001"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()  # refuses unknown ROUTING_/WORKER_/... names and malformed values
    assert settings.is_postgres and settings.gpu_model_url == "http://modelserver-gpu:8001"
    if service_name == "orchestrator":
        assert "${API_KEY:?" in services["orchestrator"]["environment"]["API_KEY"], "API_KEY must be required"
        assert settings.api_key is not None


def bind_mounts(service: dict) -> dict[str, str]:
    """container path -> repo path of every ./relative bind mount."""
    mounts = {}
    for spec in service.get("volumes", []):
        source, target = str(spec).split(":")[:2]
        if source.startswith("./"):
            mounts[target] = source[2:]
    return mounts


def test_observability_mounts_point_at_the_repos_files(services):
    expected = {
        "otel-collector": {"/etc/otelcol-contrib/config.yaml": "observability/otel-collector-config.yml"},
        "prometheus": {"/etc/prometheus": "prometheus"},
        "grafana": {
            "/etc/grafana/provisioning": "grafana/provisioning",
            "/var/lib/grafana/dashboards": "grafana/dashboards",
        },
    }
    for name, mounts in expected.items():
        assert bind_mounts(services[name]) == mounts, name
    for mounts in expected.values():
        for path in mounts.values():
            require((ROOT / path).exists(), f"{path} is not in this checkout yet (owned by the observability work)")


def test_prometheus_config_scrapes_the_api_and_worker_with_the_repos_rules():
    config_path = ROOT / "prometheus" / "prometheus.yml"
    require(config_path.exists(), "prometheus/prometheus.yml is not in this checkout yet")
    config = yaml.safe_load(config_path.read_text())
    targets = set()
    for job in config["scrape_configs"]:
        targets |= {t for sc in job.get("static_configs", []) for t in sc["targets"]}
        targets |= {f"{n}:{sd['port']}" for sd in job.get("dns_sd_configs", []) for n in sd["names"]}
    assert {"orchestrator:9000", "worker:9100"} <= targets, targets
    rule_globs = config.get("rule_files", [])
    assert any(g.startswith("/etc/prometheus/rules/") for g in rule_globs), rule_globs
    assert list((ROOT / "prometheus" / "rules").glob("*.yaml")), "no rules file for the glob to load"


# --- the compose commands as real processes ------------------------------------------------------


def argv_for(name: str, service: dict) -> list[str]:
    """What the container runs: the compose command, else the image's ENTRYPOINT + CMD."""
    if service.get("command"):
        return list(service["command"])
    return command(parse_dockerfile(ROOT / service["build"]["dockerfile"]))


def localize_argv(argv: list[str], port: int | None) -> list[str]:
    """Run the container's argv here: this venv's interpreter, 127.0.0.1, a free port."""
    head = {"python": [sys.executable], "uvicorn": [sys.executable, "-m", "uvicorn"]}
    head["alembic"] = [sys.executable, "-m", "alembic"]
    out = head.get(argv[0], [argv[0]]) + argv[1:]
    if "--host" in out:
        out[out.index("--host") + 1] = "127.0.0.1"
    if "--port" in out:
        assert port is not None
        out[out.index("--port") + 1] = str(port)
    return out


class Localizer:
    """Maps the compose network onto this machine: service name -> 127.0.0.1:<free port>."""

    def __init__(self, resolved: dict, database_url: str, redis_url: str, roles: dict[str, str]) -> None:
        self.resolved = resolved
        self.database_url = database_url
        self.redis_url = redis_url
        self.roles = roles  # compose's role name -> this session's (roles are cluster-wide)
        self.ports = {name: free_port() for name in resolved["services"]}

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def compose_env(self, name: str) -> dict[str, str]:
        """The container's environment: its image's ENV (less PATH), then the service's."""
        service = self.resolved["services"][name]
        image_env = runtime_env(parse_dockerfile(ROOT / service["build"]["dockerfile"]))
        env = {k: v for k, v in image_env.items() if k != "PATH"}
        # A variable without a value is passed through from the shell, and left unset when not set there.
        env.update({k: str(v) for k, v in (service.get("environment") or {}).items() if v is not None})
        return env

    def container_port(self, name: str) -> int | None:
        """The port the service's process listens on inside its container."""
        argv = argv_for(name, self.resolved["services"][name])
        if "--port" in argv:
            return int(argv[argv.index("--port") + 1])
        metrics = self.compose_env(name).get("METRICS_PORT")
        return int(metrics) if metrics else None

    def env(self, name: str) -> dict[str, str]:
        env = self.compose_env(name)
        for key in ("DATABASE_URL", "MIGRATION_DATABASE_URL"):
            if key in env:
                compose_url = make_url(env[key])
                assert (compose_url.host, compose_url.port) == ("postgres", 5432), env[key]
                role = self.roles[compose_url.username]
                env[key] = postgres.as_role(self.database_url, role, compose_url.password or "")
        if "REDIS_URL" in env:
            assert env["REDIS_URL"].startswith("redis://redis:6379/")
            env["REDIS_URL"] = self.redis_url
        # No collector runs here; tracing has its own tests with an in-memory exporter.
        env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
        if "METRICS_PORT" in env:
            env["METRICS_PORT"] = str(self.ports[name])
        for key, value in env.items():
            match = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", value)
            if match and match.group(1) in self.ports:
                target, port = match.group(1), int(match.group(2))
                # Failover would hide a dead target at run time, so a wrong port fails here.
                assert port == self.container_port(target), f"{name}: {key} -> {target}:{port}, not its port"
                env[key] = self.url(target)
        return {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **env}

    def ready_url(self, name: str) -> str:
        """The service's own compose healthcheck URL, on its local port."""
        probe = " ".join(self.resolved["services"][name]["healthcheck"]["test"])
        port, path = re.search(r"http://127\.0\.0\.1:(\d+)(/\S*?)'", probe).groups()
        assert int(port) == self.container_port(name), f"{name}: the healthcheck probes port {port}"
        return self.url(name) + path

    def start(self, name: str, artifacts: Path) -> ManagedProcess:
        service = self.resolved["services"][name]
        argv = localize_argv(argv_for(name, service), self.ports[name])
        process = ManagedProcess(
            name, argv, env=self.env(name), log_path=artifacts / f"{name}.log", ready_url=self.ready_url(name)
        )
        return process.start()


@pytest.mark.e2e
@pytest.mark.postgres
@pytest.mark.redis
def test_the_compose_commands_run_the_product(pg_server_url, redis_url, artifacts):
    require(pg_server_url, "PostgreSQL not available (set TEST_DATABASE_URL, or install postgresql)")
    result = compose_config(docker_compose(), API_KEY=TEST_API_KEY)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    require(shutil.which("psql"), "psql not installed (Debian: postgresql-client)")
    database_url = postgres.create_database(pg_server_url, prefix="pedi_compose")
    owner, app = postgres.unique_role_names("compose")
    processes: list[ManagedProcess] = []
    try:
        local = Localizer(resolved, database_url, redis_url, {OWNER_ROLE: owner, APP_ROLE: app})
        init_roles(resolved["services"]["postgres"], database_url, owner, app)
        migrate = subprocess.run(
            localize_argv(argv_for("migrate", resolved["services"]["migrate"]), None),
            cwd=ROOT,
            env=local.env("migrate"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert migrate.returncode == 0, migrate.stderr
        engine = create_engine(database_url)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
            owners = connection.execute(text("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"))
            assert owners.all() == [(owner,)], "migrate ran as the owner role"
        engine.dispose()

        for name in (*MODEL_TIERS, "orchestrator", "worker"):
            processes.append(local.start(name, artifacts))

        for name, tier in MODEL_TIERS.items():  # MODEL_SERVER_TIER from compose reached the server
            assert httpx.get(local.ready_url(name), timeout=5).json()["tier"] == tier
        headers = {"x-api-key": TEST_API_KEY}
        api = local.url("orchestrator")
        assert httpx.get(f"{api}/readyz", timeout=5).status_code == 200
        assert httpx.post(f"{api}/api/submit", json={"age_months": 24, "observations": "x"}).status_code == 401
        body = {"age_months": 24, "observations": "Says no words yet.", "sla_ms": 10000}
        accepted = httpx.post(f"{api}/api/submit", json=body, headers=headers, timeout=10)
        assert accepted.status_code == 202, accepted.text
        job = wait_terminal(api, accepted.json()["job_id"], headers)
        assert job["status"] == "completed", job
        assert job["target"] in {"edge", "cloud", "gpu"}
        metrics = httpx.get(local.ready_url("worker"), timeout=5).text
        assert re.search(rf'pedi_jobs_completed_total{{target="{job["target"]}"}} 1\.0', metrics)
        engine = create_engine(database_url)
        with engine.connect() as connection:
            users = connection.execute(
                text(
                    "SELECT DISTINCT usename FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = 'pedi-orchestrator'"
                )
            )
            assert users.all() == [(app,)], "the API and the worker connect as the runtime role"
        engine.dispose()
        # SIGTERM, as `docker stop` sends it to the exec-form PID 1: RQ's warm shutdown exits 0.
        assert processes[-1].stop(timeout=15) == 0, processes[-1].tail()
    finally:
        for process in reversed(processes):
            process.stop(timeout=15)
        postgres.drop_database(database_url)
        postgres.drop_roles(pg_server_url, app, owner)


def init_roles(service: dict, database_url: str, owner: str, app: str) -> None:
    """Run the postgres service's first-start script as its image would, with its environment
    (role names made unique, the socket replaced by this server's address)."""
    # `docker-compose config` resolves ./relative bind mounts to absolute host paths.
    mounts = {target: ROOT / source for source, target, *_ in (str(v).split(":") for v in service["volumes"])}
    script = mounts["/docker-entrypoint-initdb.d/10-pedi-roles.sh"]
    url = make_url(database_url)
    env = {k: str(v) for k, v in service["environment"].items()}
    env.update(
        {
            "PATH": os.environ["PATH"],
            "POSTGRES_DB": url.database,
            "POSTGRES_USER": url.username,
            "PGHOST": url.host,
            "PGPORT": str(url.port),
            "DB_OWNER_ROLE": owner,
            "DB_APP_ROLE": app,
            "ROLES_SQL": str(mounts["/pedi/roles.sql"]),
        }
    )
    done = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def wait_terminal(api: str, job_id: str, headers: dict[str, str], timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    last: dict = {}
    while time.monotonic() < deadline:
        last = httpx.get(f"{api}/api/status/{uuid.UUID(job_id)}", headers=headers, timeout=5).json()
        if last["status"] in ("completed", "failed"):
            return last
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not terminal after {timeout} s: {last}")
