"""The console's decision view marks a candidate whose p95 passes the deadline, even when it is
eligible and meets the SLA (run in Node against the shipped module, with the policy's output)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from orchestrator.routing import Outcome, RouteRequest, RoutingConfig, Target, TargetStats, decide, observe
from tests.support.env import require

DECISION_JS = Path(__file__).resolve().parents[2] / "orchestrator" / "ui" / "js" / "decision.js"
NOW = 7_000_000.0


def marks(candidates: list[dict], tmp_path: Path) -> list[bool]:
    node = shutil.which("node")
    require(node, "node is not installed (scripts/install-tools installs Debian's nodejs)")
    # The console's modules, in a package that declares them ES modules: Node before 20.19
    # (Debian's is 18) loads a bare .js file as CommonJS.
    modules = tmp_path / "js"
    shutil.copytree(DECISION_JS.parent, modules)
    (modules / "package.json").write_text('{"type": "module"}')
    script = (
        f"import {{ p95PastDeadline }} from {json.dumps((modules / DECISION_JS.name).as_uri())};\n"
        f"console.log(JSON.stringify({json.dumps(candidates)}.map(p95PastDeadline)));"
    )
    done = subprocess.run([node, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_an_eligible_candidate_that_meets_the_sla_with_its_p95_past_the_deadline_is_marked(tmp_path):
    stats = TargetStats()
    for i in range(20):  # a spiky cloud: median ~350 ms, p95 well past 874 ms
        latency = 350.0 * (4.0 if i % 4 == 0 else 0.8)
        stats = observe(stats, Outcome("cloud", True, latency, NOW - 1 + i * 0.01))
    cloud = Target("cloud", "cloud", cost_per_call_usd=0.001, capacity=64, prior_latency_ms=400)
    job = RouteRequest(job_id="j", sla_ms=2000, submitted_at=NOW - 1.126)
    decision = decide(job, [cloud], {"cloud": stats}, NOW, RoutingConfig(slo_default_objective=0.8)).to_dict()
    (c,) = decision["candidates"]
    assert c["eligible"] and c["meets_sla"] and c["predicted_p95_ms"] > c["time_left_ms"]
    assert f"p95 {c['predicted_p95_ms']:.0f} ms > 874 ms left" in c["reason"]
    roomy = dict(c, time_left_ms=c["predicted_p95_ms"] + 1)
    assert marks([c, roomy, dict(c, predicted_p95_ms=None)], tmp_path) == [True, False, False]
