"""The Grafana dashboard: well-formed for provisioning, every PromQL expression parses (promtool),
and every metric it and the alert rules reference is exported by the running API and worker."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.env import ROOT, free_port, require

pytestmark = pytest.mark.deploy

DASHBOARD = ROOT / "grafana" / "dashboards" / "pedi-orchestrator-dashboard.json"
RULES = ROOT / "prometheus" / "rules" / "pedi-orchestrator-alerts.yaml"
PROVISIONING = ROOT / "grafana" / "provisioning"
PROMETHEUS_CONFIG = ROOT / "prometheus" / "prometheus.yml"
DASHBOARDS_MOUNT = "/var/lib/grafana/dashboards"
"""Where compose mounts ./grafana/dashboards in the Grafana container."""
DATASOURCE_REF = "${datasource}"
RATE_INTERVAL = "$__rate_interval"
SCHEMA_VERSION = 39
"""Grafana 10.4/11.x dashboards; older Grafana migrates them on load, newer ones too."""

PROMETHEUS_SYNTHETIC = {"up"}
"""Series Prometheus itself writes for every scrape target; no process exports them."""
SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
    "gauge": ("",),
    "stateset": ("",),
    "unknown": ("",),
}
"""Series names a metric family of each type exposes (the parser strips _total from counters)."""

PROMQL_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
}
STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
NAME_MATCHER = re.compile(r"__name__\s*=\s*\"([^\"]+)\"")
LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
IDENTIFIER = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
LABEL_VALUES = re.compile(r"label_values\(\s*([A-Za-z_:][\w:]*)")
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


# --- reading the dashboard ------------------------------------------------------------------------


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict) -> Iterator[dict]:
    """Every non-row panel, including those inside collapsed rows."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def variables(dashboard: dict) -> dict[str, dict]:
    return {var["name"]: var for var in dashboard["templating"]["list"]}


def dashboard_exprs(dashboard: dict) -> list[tuple[str, str]]:
    """(where, PromQL) for every query target of every panel."""
    return [
        (f"panel {panel['id']} {panel['title']!r} target {target['refId']}", target["expr"])
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    ]


def alert_exprs() -> list[tuple[str, str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [(f"alert {rule['alert']}", rule["expr"]) for group in groups for rule in group["rules"] if "alert" in rule]


def substitute(expr: str, dashboard: dict) -> str:
    """Replace Grafana variables by values PromQL accepts: intervals by 5m, a query variable by
    its "All" value (a regex, since panels use it with =~)."""
    values = {name: var.get("allValue") or ".*" for name, var in variables(dashboard).items()}

    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        return "5m" if name.startswith("__") else values[name]

    return VARIABLE.sub(value, expr)


# --- PromQL metric names ----------------------------------------------------------------------------


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: identifiers that are not functions, keywords,
    label names (inside {} or by/without/on/ignoring lists), durations or string contents."""
    names = set(NAME_MATCHER.findall(expr))
    text = STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = LABEL_LIST.sub(" ", text)
    names.update(name for name in IDENTIFIER.findall(text) if name.lower() not in PROMQL_KEYWORDS)
    return names


def exported_names(exposition: str) -> set[str]:
    """Every series name a /metrics page exposes, including families that have no sample yet
    (a labelled counter appears once its first label set is used)."""
    names = set()
    for family in text_string_to_metric_families(exposition):
        names.update(family.name + suffix for suffix in SAMPLE_SUFFIXES[family.type])
        names.update(sample.name for sample in family.samples)
    return names


def test_metric_name_extraction_skips_functions_labels_keywords_and_strings():
    expr = (
        'histogram_quantile(0.95, sum by (target, le) (rate(pedi_x_bucket{target=~"$t", outcome!="ok"}[5m])))'
        " / ignoring(target) group_left sum without (instance) (pedi_y_total offset 1h)"
        ' + on (job) bool pedi_z > 1e3 or vector(0) unless {__name__="pedi_w"} and Inf < NaN'
    )
    assert metric_names(expr) == {"pedi_x_bucket", "pedi_y_total", "pedi_z", "pedi_w"}
    assert metric_names('label_replace(up, "x", "$1", "job", "(.*)")') == {"up"}


def test_exported_names_expand_each_family_type():
    exposition = (
        "# TYPE a_total counter\n"
        "# TYPE b_seconds histogram\n"
        'b_seconds_bucket{le="+Inf"} 1\nb_seconds_sum 1\nb_seconds_count 1\n'
        "# TYPE c gauge\nc 3\n"
    )
    assert exported_names(exposition) == {"a_total", "b_seconds_bucket", "b_seconds_sum", "b_seconds_count", "c"}


# --- structure --------------------------------------------------------------------------------------


def test_dashboard_has_fixed_uid_schema_and_rows():
    dashboard = load_dashboard()
    assert dashboard["uid"] == "pedi-orchestrator"
    assert dashboard["schemaVersion"] == SCHEMA_VERSION
    assert dashboard.get("id") is None, "a provisioned dashboard must not carry a database id"
    rows = [panel["title"] for panel in dashboard["panels"] if panel["type"] == "row"]
    assert len(rows) >= 5, rows
    assert {panel["type"] for panel in panels(dashboard)} <= {"timeseries", "stat"}


def test_datasource_variable_and_every_query_use_it():
    dashboard = load_dashboard()
    datasource = variables(dashboard)["datasource"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    for name, var in variables(dashboard).items():
        if var["type"] == "query":
            assert var["datasource"]["uid"] == DATASOURCE_REF, f"variable {name} bypasses $datasource"
    for panel in panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_REF}, panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE_REF, panel["title"]


def test_every_panel_has_a_unit_and_a_description():
    for panel in panels(load_dashboard()):
        assert panel["fieldConfig"]["defaults"].get("unit"), f"panel {panel['title']!r} has no unit"
        assert panel.get("description"), f"panel {panel['title']!r} has no description"


def test_every_range_is_the_rate_interval():
    for where, expr in dashboard_exprs(load_dashboard()):
        ranges = re.findall(r"\[([^\]]*)\]", STRING.sub('""', expr))
        assert all(r == RATE_INTERVAL for r in ranges), f"{where}: {expr}"
        calls = len(re.findall(r"\b(?:rate|irate|increase)\s*\(", expr))
        assert len(ranges) >= calls, f"{where}: {expr}"


def test_panels_fit_the_grid_without_overlapping():
    dashboard = load_dashboard()
    nested = [inner for row in dashboard["panels"] for inner in row.get("panels", [])]
    ids = [panel["id"] for panel in dashboard["panels"] + nested]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_provisioning_serves_this_dashboard_from_the_prometheus_datasource():
    [source] = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert (source["name"], source["type"], source["url"]) == ("Prometheus", "prometheus", "http://prometheus:9090")
    assert source["uid"] == variables(load_dashboard())["datasource"]["current"]["value"], "default datasource uid"
    scrape_interval = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["global"]["scrape_interval"]
    assert source["jsonData"]["timeInterval"] == scrape_interval, "$__rate_interval needs the scrape interval"
    [provider] = yaml.safe_load((PROVISIONING / "dashboards" / "pedi.yaml").read_text())["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == DASHBOARDS_MOUNT


def test_every_expression_parses(tmp_path: Path):
    """promtool parses each query as a recording rule: PromQL checked without a Go toolchain."""
    promtool = shutil.which("promtool")
    require(promtool, "promtool not found (Debian package prometheus; scripts/install-tools installs it)")
    dashboard = load_dashboard()
    exprs = dashboard_exprs(dashboard)
    rules = [
        {"record": f"dashboard_query_{i}", "expr": substitute(expr, dashboard)} for i, (_, expr) in enumerate(exprs)
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sort_keys=False))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    index = "\n".join(f"dashboard_query_{i}: {where}" for i, (where, _) in enumerate(exprs))
    assert done.returncode == 0, f"{done.stdout}{done.stderr}\n{index}"
    assert f"SUCCESS: {len(exprs)} rules found" in done.stdout


# --- live /metrics ----------------------------------------------------------------------------------


def scrape(url: str) -> str:
    response = httpx.get(url, timeout=10)
    response.raise_for_status()
    return response.text


@pytest.mark.e2e
@pytest.mark.postgres
@pytest.mark.redis
def test_every_referenced_metric_is_exported_by_the_running_api_and_worker(stack):
    stack.model_server("gpu", tier="gpu", latency_ms=1)
    api = stack.api(PHI_RETENTION_DAYS="30")  # the retention gauge is exported only when retention is on
    metrics_port = free_port()
    stack.worker(METRICS_PORT=str(metrics_port))
    jobs = [api.submit(sla_ms=5000)["job_id"] for _ in range(3)]
    assert all(api.wait(job_id)["status"] == "completed" for job_id in jobs)

    api_page = scrape(f"{api.url}/metrics")
    worker_page = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
    completed = sum(
        sample.value
        for family in text_string_to_metric_families(worker_page)
        if family.name == "pedi_jobs_completed"
        for sample in family.samples
    )
    assert completed == len(jobs), "the worker's /metrics does not count the jobs it completed"
    exported = exported_names(api_page) | exported_names(worker_page)
    assert "pedi_queue_depth" in exported_names(api_page), "the API's backlog gauges are missing"

    dashboard = load_dashboard()
    referenced = [(where, substitute(expr, dashboard)) for where, expr in dashboard_exprs(dashboard)]
    referenced += [(f"variable {n}", v["definition"]) for n, v in variables(dashboard).items() if v["type"] == "query"]
    referenced += alert_exprs()
    missing = {}
    for where, expr in referenced:
        names = set(LABEL_VALUES.findall(expr)) if where.startswith("variable") else metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        unknown = names - exported - PROMETHEUS_SYNTHETIC
        if unknown:
            missing[where] = sorted(unknown)
    assert not missing, f"metrics referenced but not exported: {missing}"
