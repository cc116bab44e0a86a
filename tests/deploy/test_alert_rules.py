"""The alert rules as Prometheus will load them: promtool accepts the file, promtool's unit tests
pass, every alert is tested both firing and quiet, and every alert carries a severity, a summary,
a description and a runbook that exists in docs/runbooks/."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from tests.support.env import ROOT, require

pytestmark = pytest.mark.deploy

RULES = ROOT / "prometheus" / "rules" / "pedi-orchestrator-alerts.yaml"
RULE_TESTS = ROOT / "prometheus" / "tests" / "pedi-orchestrator-alerts.test.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks"
RUNBOOK_BASE = "https://github.com/pedi-orchestrator/pedi-orchestrator/blob/main/docs/runbooks/"
"""Where runbook_url annotations point; documented in docs/runbooks/README.md."""
SEVERITIES = {"critical", "warning"}
MIN_FOR_SECONDS = 120
"""Shortest `for:` accepted: anything shorter pages on a single bad scrape or a rolling restart."""
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def promtool() -> str:
    path = shutil.which("promtool")
    require(path, "promtool not found (Debian package prometheus; scripts/install-tools installs it)")
    return path


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def kebab(name: str) -> str:
    """PediOldestQueuedJobOverSla -> pedi-oldest-queued-job-over-sla."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def seconds(duration: str) -> int:
    parts = re.findall(r"(\d+)([smhd])", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"unsupported duration {duration!r}"
    return sum(int(n) * DURATION_UNITS[u] for n, u in parts)


ALERTS = alert_rules()


def test_promtool_check_rules_is_clean():
    done = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert f"SUCCESS: {len(ALERTS)} rules found" in output, output
    assert "WARNING" not in output.upper(), output


def test_promtool_unit_tests_pass():
    done = subprocess.run(
        [promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_alert_names_are_unique_and_cover_the_required_signals():
    names = [rule["alert"] for rule in ALERTS]
    assert len(names) == len(set(names)), names
    exprs = " ".join(rule["expr"] for rule in ALERTS)
    for metric in (
        "pedi_queue_depth",
        "pedi_oldest_queued_job_age_seconds",
        "pedi_jobs_failed_total",
        "pedi_job_e2e_latency_seconds_bucket",
        "pedi_workers_alive",
        "pedi_db_errors_total",
        "pedi_http_requests_total",
        "pedi_circuit_state",
        "pedi_sla_violations_total",
    ):
        assert metric in exprs, f"no alert watches {metric}"


@pytest.mark.parametrize("rule", ALERTS, ids=[rule["alert"] for rule in ALERTS])
def test_every_alert_has_severity_annotations_and_a_runbook(rule):
    assert rule.get("labels", {}).get("severity") in SEVERITIES, rule
    annotations = rule.get("annotations", {})
    assert annotations.get("summary", "").strip(), "summary missing"
    assert len(annotations.get("description", "")) > len(annotations["summary"]), "description missing or too short"
    runbook = kebab(rule["alert"]) + ".md"
    assert annotations.get("runbook_url") == RUNBOOK_BASE + runbook
    page = RUNBOOKS / runbook
    assert page.is_file(), f"runbook {page} missing"
    assert rule["alert"] in page.read_text(), f"{page.name} does not name the alert it is for"
    assert seconds(rule.get("for", "0s")) >= MIN_FOR_SECONDS, "a `for:` this short flaps"


def test_the_runbook_index_links_every_runbook():
    index = (RUNBOOKS / "README.md").read_text()
    assert RUNBOOK_BASE in index, "the index must document the runbook_url base"
    for rule in ALERTS:
        assert f"]({kebab(rule['alert'])}.md)" in index, f"README.md does not link {rule['alert']}"


def test_unit_tests_cover_every_alert_firing_and_quiet():
    """Each alert needs a scenario whose series trip it (a case expecting it to fire) and a
    scenario whose series never trip it (a test group in which every case expects nothing;
    a "not yet, `for:` has not elapsed" case inside a firing scenario does not count)."""
    spec = yaml.safe_load(RULE_TESTS.read_text())
    assert [(RULE_TESTS.parent / path).resolve() for path in spec["rule_files"]] == [RULES.resolve()]
    names = {rule["alert"] for rule in ALERTS}
    seen: dict[str, set[str]] = {name: set() for name in names}
    for group in spec["tests"]:
        fires_in_group: dict[str, bool] = {}
        for case in group.get("alert_rule_test", []):
            # An unknown name would make an "expect nothing" case pass vacuously.
            assert case["alertname"] in names, f"test {group['name']!r} names unknown alert {case['alertname']}"
            firing = case.get("exp_alerts") or []
            fires_in_group[case["alertname"]] = fires_in_group.get(case["alertname"], False) or bool(firing)
            for alert in firing:
                assert alert.get("exp_annotations"), "firing cases must check the rendered annotations"
        for name, fires in fires_in_group.items():
            seen[name].add("firing" if fires else "quiet")
    missing = {name: {"firing", "quiet"} - kinds for name, kinds in seen.items() if kinds != {"firing", "quiet"}}
    assert not missing, f"alerts without a firing and a quiet unit-test scenario: {missing}"
