"""charts/pedi-orchestrator: linted and rendered by the real helm, then the manifests are checked.

Renders: the default values, values.prod.yaml, existingSecret, KEDA, and values the schema must
refuse. Beyond shape, the checks tie the chart to the code: the containers run the images' own
commands, the ConfigMap passes the app's settings validation, the KEDA list is the app's queue,
the worker's grace period exceeds the app's RQ job timeout, the API's liveness path answers with
Postgres and Redis down, and the embedded alert rules equal prometheus/rules/.
"""

from __future__ import annotations

import base64
import functools
import shutil
import subprocess

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from orchestrator.constants import QUEUE_NAME, RQ_JOB_TIMEOUT_SECONDS
from orchestrator.settings import load_settings
from tests.deploy.test_dockerfiles import command, parse_dockerfile
from tests.support.env import ROOT, free_port, require

pytestmark = [pytest.mark.deploy]

CHART = ROOT / "charts" / "pedi-orchestrator"
PROD = CHART / "values.prod.yaml"
RULES = ROOT / "prometheus" / "rules" / "pedi-orchestrator-alerts.yaml"
CHART_RULES = CHART / "files" / "pedi-orchestrator-alerts.yaml"
RELEASE = "pedi"
WORKLOADS = ("Deployment", "Job")
DB_OR_REDIS_WORDS = ("readyz", "redis", "psql", "pg_isready", "postgres", "alembic", "rq ")


def helm() -> str:
    local = ROOT / "tools" / "bin" / "helm"
    binary = str(local) if local.exists() else shutil.which("helm")
    require(binary, "helm not found (scripts/install-tools --only helm puts it in tools/bin)")
    return binary


def run_helm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([helm(), *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


@functools.cache
def render(*args: str) -> tuple[dict, ...]:
    """`helm template` with ``args``; the rendered objects, cached per argument list."""
    result = run_helm("template", RELEASE, str(CHART), "--namespace", "pedi", *args)
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


VARIANTS = {
    "default": (),
    "prod": ("-f", str(PROD)),
    "existing-secret": ("--set", "secret.existingSecret=pedi-secrets,migrations.existingSecret=pedi-migrations"),
    "api-keys-file": ("--set-string", "apiKeysFile.content=principals: []"),
    "keda": ("--set", "worker.keda.enabled=true"),
}


@pytest.fixture(params=list(VARIANTS))
def manifests(request: pytest.FixtureRequest) -> tuple[dict, ...]:
    return render(*VARIANTS[request.param])


def of_kind(docs, kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def named(docs, kind: str, suffix: str) -> dict:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, f"{kind} *{suffix}: {[d['metadata']['name'] for d in of_kind(docs, kind)]}"
    return found[0]


def pod_specs(docs) -> list[tuple[str, dict]]:
    return [(d["metadata"]["name"], d["spec"]["template"]["spec"]) for d in docs if d["kind"] in WORKLOADS]


def containers(pod: dict) -> list[dict]:
    return pod.get("initContainers", []) + pod["containers"]


# --- helm lint and the schema --------------------------------------------------------------------


@pytest.mark.parametrize("values", [(), ("-f", str(PROD))], ids=["default", "prod"])
def test_helm_lint_strict(values):
    result = run_helm("lint", "--strict", str(CHART), *values)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("replicaCount=3", "additional properties 'replicaCount' not allowed"),
        ("api.replicas=two", "/api/replicas"),
        ("worker.terminationGracePeriodSeconds=60", "/worker/terminationGracePeriodSeconds"),
        ("config.logLevel=LOUD", "/config/logLevel"),
        ("secret.apiKey=short", "/secret/apiKey"),
        ("worker.keda.redisAddress=redis://r:6379", "/worker/keda/redisAddress"),
    ],
)
def test_schema_refuses_bad_values(setting, message):
    for verb in (("lint", "--strict"), ("template", RELEASE)):
        result = run_helm(*verb, str(CHART), "--set", setting)
        assert result.returncode != 0, f"helm {verb[0]} accepted --set {setting}"
        assert message in result.stdout + result.stderr, result.stdout + result.stderr


def test_hpa_and_keda_together_are_refused():
    result = run_helm("template", RELEASE, str(CHART), "-f", str(PROD), "--set", "worker.keda.enabled=true")
    assert result.returncode != 0 and "enable only one" in result.stderr


# --- pods -----------------------------------------------------------------------------------------


def test_every_pod_is_restricted_and_has_no_service_links(manifests):
    pods = pod_specs(manifests)
    assert len(pods) >= 5
    for name, pod in pods:
        assert pod["enableServiceLinks"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in containers(pod):
            ctx = container["securityContext"]
            where = f"{name}/{container['name']}"
            assert ctx["runAsNonRoot"] is True and ctx.get("runAsUser", 1) != 0, where
            assert ctx["readOnlyRootFilesystem"] is True, where
            assert ctx["allowPrivilegeEscalation"] is False, where
            assert ctx.get("privileged", False) is False, where
            assert ctx["capabilities"]["drop"] == ["ALL"] and not ctx["capabilities"].get("add"), where
            assert ctx["seccompProfile"]["type"] == "RuntimeDefault", where
            assert not container["image"].endswith(":latest"), where


def test_liveness_probes_never_depend_on_postgres_or_redis(manifests):
    for name, pod in pod_specs(manifests):
        for container in containers(pod):
            probe = container.get("livenessProbe")
            if probe is None:
                continue
            assert probe.get("httpGet", {}).get("path") != "/readyz", name
            argv = " ".join(probe.get("exec", {}).get("command", [])).lower()
            assert not any(word in argv for word in DB_OR_REDIS_WORDS), f"{name}: exec probe {argv!r}"
    api = named(manifests, "Deployment", "-api")["spec"]["template"]["spec"]["containers"][0]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    worker = named(manifests, "Deployment", "-worker")["spec"]["template"]["spec"]["containers"][0]
    assert worker["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}


def test_the_api_liveness_path_answers_with_postgres_and_redis_down(monkeypatch):
    """The probe path the chart uses, asked of the real app with nothing listening behind it."""
    api = named(render(), "Deployment", "-api")["spec"]["template"]["spec"]["containers"][0]
    monkeypatch.setenv("DATABASE_URL", f"postgresql://nobody@127.0.0.1:{free_port()}/none")
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setenv("DB_CONNECT_TIMEOUT_SECONDS", "1")
    from orchestrator.app.main import create_app

    with TestClient(create_app()) as client:
        assert client.get(api["livenessProbe"]["httpGet"]["path"]).status_code == 200
        assert client.get(api["readinessProbe"]["httpGet"]["path"]).status_code == 503


def test_worker_grace_period_outlasts_a_job(manifests):
    worker = named(manifests, "Deployment", "-worker")["spec"]["template"]["spec"]
    assert worker["terminationGracePeriodSeconds"] > RQ_JOB_TIMEOUT_SECONDS


def test_containers_run_the_images_own_commands(manifests):
    expected = {
        "-api": "Dockerfile.orchestrator",
        "-worker": "Dockerfile.worker",
        "-modelserver-edge": "Dockerfile.modelserver",
    }
    for suffix, dockerfile in expected.items():
        container = named(manifests, "Deployment", suffix)["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == command(parse_dockerfile(ROOT / dockerfile)), suffix
    job = of_kind(manifests, "Job")[0]
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["alembic", "upgrade", "head"]


def test_model_servers_one_per_tier_with_services(manifests):
    for tier in ("edge", "cloud", "gpu"):
        deployment = named(manifests, "Deployment", f"-modelserver-{tier}")
        env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["MODEL_SERVER_TIER"] == tier
        named(manifests, "Service", f"-modelserver-{tier}")


def test_selectors_match_pods_and_ports(manifests):
    pods = {d["metadata"]["name"]: d["spec"]["template"] for d in of_kind(manifests, "Deployment")}
    for name, template in pods.items():
        selector = named(manifests, "Deployment", name)["spec"]["selector"]["matchLabels"]
        assert selector.items() <= template["metadata"]["labels"].items(), name
    for service in of_kind(manifests, "Service"):
        matches = [t for t in pods.values() if service["spec"]["selector"].items() <= t["metadata"]["labels"].items()]
        assert len(matches) == 1, service["metadata"]["name"]
        port_names = {p["name"] for c in matches[0]["spec"]["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names, service["metadata"]["name"]


# --- configuration and secrets ----------------------------------------------------------------------


def secret_value(docs, name: str, key: str) -> str:
    secret = next(d for d in of_kind(docs, "Secret") if d["metadata"]["name"] == name)
    return base64.b64decode(secret["data"][key]).decode()


def test_configmap_and_secret_pass_the_apps_settings_validation(monkeypatch):
    docs = render()
    config = of_kind(docs, "ConfigMap")[0]["data"]
    secret_name = named(docs, "Deployment", "-api")["spec"]["template"]["spec"]["containers"][0]["env"][0]
    secret_name = secret_name["valueFrom"]["secretKeyRef"]["name"]
    for key, value in config.items():
        monkeypatch.setenv(key, value)
    for key in ("DATABASE_URL", "REDIS_URL", "API_KEY"):
        monkeypatch.setenv(key, secret_value(docs, secret_name, key))
    settings = load_settings()  # refuses unknown ROUTING_/JOB_/... names and malformed values
    assert settings.is_postgres and settings.api_key is not None
    assert len(secret_value(docs, secret_name, "API_KEY")) == 40
    services = {s["metadata"]["name"]: s["spec"]["ports"][0]["port"] for s in of_kind(docs, "Service")}
    for url in (settings.edge_model_url, settings.cloud_model_url, settings.gpu_model_url):
        host, port = url.removeprefix("http://").split(":")
        assert services[host] == int(port), url


def test_worker_gets_no_api_key_and_the_api_does(manifests):
    def env_names(suffix: str) -> set[str]:
        container = named(manifests, "Deployment", suffix)["spec"]["template"]["spec"]["containers"][0]
        return {e["name"] for e in container["env"]}

    assert {"DATABASE_URL", "REDIS_URL", "API_KEY"} <= env_names("-api")
    assert {"DATABASE_URL", "REDIS_URL", "METRICS_PORT"} <= env_names("-worker")
    assert "API_KEY" not in env_names("-worker")


def secret_refs(docs) -> set[str]:
    refs = set()
    for _, pod in pod_specs(docs):
        for container in containers(pod):
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.add(ref["name"])
    return refs


def test_existing_secret_is_referenced_and_none_is_rendered():
    docs = render(*VARIANTS["existing-secret"])
    assert not of_kind(docs, "Secret"), "with existingSecret the chart must not render any Secret"
    assert secret_refs(docs) == {"pedi-secrets", "pedi-migrations"}


def secret_keys_by_workload(docs) -> dict[str, set[tuple[str, str, str]]]:
    """workload name -> {(env name, secret name, secret key)} of every env fed by a Secret."""
    out: dict[str, set[tuple[str, str, str]]] = {}
    for name, pod in pod_specs(docs):
        for container in containers(pod):
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    out.setdefault(name, set()).add((env["name"], ref["name"], ref["key"]))
    return out


@pytest.mark.parametrize("variant", ["default", "prod", "existing-secret"])
def test_the_migration_job_and_the_pods_read_different_secrets(variant):
    docs = render(*VARIANTS[variant])
    refs = secret_keys_by_workload(docs)
    job = of_kind(docs, "Job")[0]["metadata"]["name"]
    job_refs = refs.pop(job)
    assert {env for env, _, _ in job_refs} == {"MIGRATION_DATABASE_URL"}, "the Job gets the owner's URL only"
    job_secrets = {secret for _, secret, _ in job_refs}
    for workload, pod_refs in refs.items():
        assert not job_secrets & {secret for _, secret, _ in pod_refs}, f"{workload} reads the Job's Secret"
        assert "MIGRATION_DATABASE_URL" not in {key for _, _, key in pod_refs}, workload
        assert "MIGRATION_DATABASE_URL" not in {env for env, _, _ in pod_refs}, workload
    if variant == "default":  # the rendered URLs: the owner for the Job, the runtime role for the pods
        owner_url = secret_value(docs, next(iter(job_secrets)), "MIGRATION_DATABASE_URL")
        app_url = secret_value(docs, f"{RELEASE}-pedi-orchestrator", "DATABASE_URL")
        assert make_url(owner_url).username == "pedi_owner" and make_url(app_url).username == "pedi_app"


def test_one_role_for_migrations_and_pods_is_refused():
    result = run_helm(
        "template", RELEASE, str(CHART), "--set", "secret.databaseUrl=postgresql://pedi_owner:pw@db:5432/pedi"
    )
    assert result.returncode != 0 and "both log in as" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("values", "secret_name", "rendered"),
    [
        (VARIANTS["api-keys-file"], f"{RELEASE}-pedi-orchestrator-api-keys", True),
        (("--set", "apiKeysFile.existingSecret=my-keys,apiKeysFile.key=keys.yml"), "my-keys", False),
        (("-f", str(PROD)), "pedi-orchestrator-api-keys", False),
    ],
    ids=["inline", "existing-secret", "prod"],
)
def test_a_keys_file_is_mounted_into_the_api_only(values, secret_name, rendered):
    docs = render(*values)
    api = named(docs, "Deployment", "-api")["spec"]["template"]["spec"]
    volume = next(v for v in api["volumes"] if v["name"] == "api-keys")
    assert volume["secret"]["secretName"] == secret_name
    key = volume["secret"]["items"][0]["key"]
    mount = next(m for m in api["containers"][0]["volumeMounts"] if m["name"] == "api-keys")
    assert mount["readOnly"] is True
    env = {e["name"]: e.get("value") for e in api["containers"][0]["env"]}
    assert env["API_KEYS_FILE"] == f"{mount['mountPath']}/{volume['secret']['items'][0]['path']}"
    assert "API_KEY" in env, "API_KEY keeps working beside the file"
    secrets = {d["metadata"]["name"]: d for d in of_kind(docs, "Secret")}
    assert (secret_name in secrets) is rendered
    if rendered:
        assert secret_value(docs, secret_name, key) == "principals: []"
    worker = named(docs, "Deployment", "-worker")["spec"]["template"]["spec"]
    assert "api-keys" not in {v["name"] for v in worker["volumes"]}
    assert "API_KEYS_FILE" not in {e["name"] for e in worker["containers"][0]["env"]}


def test_no_keys_file_no_mount():
    api = named(render(), "Deployment", "-api")["spec"]["template"]["spec"]
    assert "api-keys" not in {v["name"] for v in api["volumes"]}
    assert "API_KEYS_FILE" not in {e["name"] for e in api["containers"][0]["env"]}


def test_migration_job_is_a_pre_install_and_pre_upgrade_hook_after_its_secret():
    docs = render()
    job = of_kind(docs, "Job")[0]
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    source = next(e for e in env if e["name"] == "MIGRATION_DATABASE_URL")["valueFrom"]["secretKeyRef"]["name"]
    hook_secret = next(d for d in of_kind(docs, "Secret") if d["metadata"]["name"] == source)
    assert "pre-install" in hook_secret["metadata"]["annotations"]["helm.sh/hook"]
    assert int(hook_secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(annotations["helm.sh/hook-weight"])
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


# --- scaling and monitoring -------------------------------------------------------------------------


def test_default_has_no_autoscaling_or_monitoring_objects():
    docs = render()
    for kind in ("HorizontalPodAutoscaler", "ServiceMonitor", "PrometheusRule", "ScaledObject"):
        assert not of_kind(docs, kind), kind


def test_prod_turns_on_hpa_servicemonitor_rules_and_workload_identity():
    docs = render(*VARIANTS["prod"])
    hpas = of_kind(docs, "HorizontalPodAutoscaler")
    assert {h["apiVersion"] for h in hpas} == {"autoscaling/v2"} and len(hpas) == 2
    deployments = {d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")}
    targets = {h["spec"]["scaleTargetRef"]["name"] for h in hpas}
    assert targets == {f"{RELEASE}-pedi-orchestrator-api", f"{RELEASE}-pedi-orchestrator-worker"}
    for target in targets:
        assert "replicas" not in deployments[target]["spec"], f"{target}: the HPA owns the replica count"
    monitors = of_kind(docs, "ServiceMonitor")
    assert {m["spec"]["endpoints"][0]["port"] for m in monitors} == {"http", "metrics"}
    assert of_kind(docs, "PrometheusRule")
    annotations = of_kind(docs, "ServiceAccount")[0]["metadata"]["annotations"]
    assert "eks.amazonaws.com/role-arn" in annotations and "iam.gke.io/gcp-service-account" in annotations


@pytest.mark.parametrize("toggle", ["serviceMonitor", "prometheusRule"])
def test_monitoring_objects_follow_their_switch(toggle):
    kind = {"serviceMonitor": "ServiceMonitor", "prometheusRule": "PrometheusRule"}[toggle]
    assert of_kind(render("--set", f"{toggle}.enabled=true"), kind)
    assert not of_kind(render("-f", str(PROD), "--set", f"{toggle}.enabled=false"), kind)


def test_keda_scales_the_worker_on_the_apps_queue_list():
    docs = render(*VARIANTS["keda"])
    (scaled,) = of_kind(docs, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == named(docs, "Deployment", "-worker")["metadata"]["name"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == f"rq:queue:{QUEUE_NAME}"
    assert not of_kind(docs, "HorizontalPodAutoscaler"), "KEDA owns the worker's HPA"
    assert "replicas" not in named(docs, "Deployment", "-worker")["spec"]


def test_prometheus_rule_embeds_the_repos_alert_rules():
    require(RULES.exists(), "prometheus/rules/pedi-orchestrator-alerts.yaml is not in this checkout yet")
    assert CHART_RULES.read_bytes() == RULES.read_bytes(), (
        f"{CHART_RULES.relative_to(ROOT)} differs from {RULES.relative_to(ROOT)}: copy it again"
    )
    (rule,) = of_kind(render("--set", "prometheusRule.enabled=true"), "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


# --- PHI retention ----------------------------------------------------------------------------------


def test_retention_cronjob_runs_the_pass_as_the_runtime_role_with_the_apis_period(monkeypatch):
    assert not of_kind(render(), "CronJob") and "PHI_RETENTION_DAYS" not in of_kind(render(), "ConfigMap")[0]["data"]
    docs = render("--set", "retention.days=30,retention.cronJob.enabled=true,retention.batchSize=200")
    [cron] = of_kind(docs, "CronJob")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["args"] == ["python", "-m", "orchestrator.retention", "--once", "--max-batches", "100"]
    assert {e["name"] for e in container["env"]} == {"DATABASE_URL"}, "no Redis URL, no API key"
    assert pod["enableServiceLinks"] is False and pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["runAsNonRoot"] is True
    config = of_kind(docs, "ConfigMap")[0]["data"]
    assert (config["PHI_RETENTION_DAYS"], config["PHI_RETENTION_BATCH_SIZE"]) == ("30", "200")
    for key, value in config.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DATABASE_URL", "postgresql://pedi@db:5432/pedi")
    settings = load_settings()
    assert (settings.phi_retention_days, settings.phi_retention_batch_size) == (30, 200)


def test_retention_cronjob_without_a_period_is_refused():
    result = run_helm("template", RELEASE, str(CHART), "--set", "retention.cronJob.enabled=true")
    assert result.returncode != 0 and "needs retention.days" in result.stderr
    result = run_helm("template", RELEASE, str(CHART), "--set", "retention.days=0")
    assert result.returncode != 0 and "/retention/days" in result.stdout + result.stderr
