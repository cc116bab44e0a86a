"""`python -m bench.e2e --quick`, end to end with real processes: the one benchmark command
prints every figure of issue 12 with a number, its same-run baseline and ratio, and rewrites
only its block of the report file."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess

import pytest

from tests.support import postgres
from tests.support.env import ROOT, require
from tests.support.procs import python
from tests.support.redis_server import redis_server_binary

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

NUMBER = r"\d+(\.\d+)?"
# (start of the figure's name, baseline has a number, ratio given, goal given)
FIGURES = [
    ("(P1) pipeline jobs/s", True, True, True),
    ("(P2) overhead p50", False, False, True),
    ("(P2) overhead p99", False, False, True),
    ("(P3) `POST /api/submit`", True, True, True),
    ("(P6) one worker process, concurrency 16,", True, True, True),
    ("(P6) one worker process, concurrency 64,", True, True, True),
    ("stock `rq worker pedi-screen`, no RQ_CONFIG", True, True, True),
    ("worker CPU per job", True, True, False),
    ("Redis commands per job", True, True, False),
    ("Postgres round trips", False, False, False),
]
PHASES = ["(bare)", "(P1)", "(P2)", "(counts)", "(P6)", "(stock)", "(P3)"]


def rows(table: str) -> dict[str, list[str]]:
    found = {}
    for line in table.splitlines():
        if line.startswith("| ") and not line.startswith("| figure"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            found[cells[0]] = cells[1:]
    return found


def find(found: dict[str, list[str]], prefix: str) -> list[str]:
    matches = [cells for name, cells in found.items() if name.startswith(prefix)]
    assert len(matches) == 1, f"expected one row starting {prefix!r}, got {len(matches)}: {list(found)}"
    return matches[0]


@pytest.mark.timeout(600)
def test_quick_run_prints_every_figure_with_baseline_and_ratio(tmp_path):
    require(shutil.which("wrk"), "wrk is not installed (scripts/install-tools)")
    require(redis_server_binary(), "no redis-server binary")
    require(postgres.postgres_bindir(), "no initdb/pg_ctl")
    out = tmp_path / "e2e.md"
    out.write_text("# Hand-written title\n\n<!-- bench.e2e:begin -->\nold table\n<!-- bench.e2e:end -->\n\nReading.\n")
    done = subprocess.run(
        python("-m", "bench.e2e", "--quick", "--out", str(out)), cwd=ROOT, capture_output=True, text=True, timeout=580
    )
    assert done.returncode == 0, done.stderr[-4000:]
    for phase in PHASES:
        assert f"[bench.e2e] {phase}" in done.stderr, f"no progress line for {phase}"
    found = rows(done.stdout)
    figures = list(FIGURES)
    if importlib.util.find_spec("modelreasoner.rq_settings"):
        figures.append(("stock `rq worker pedi-screen`, RQ_CONFIG=modelreasoner.rq_settings", True, True, True))
    for prefix, has_baseline, has_ratio, has_goal in figures:
        measured, baseline, ratio, goal, verdict = find(found, prefix)
        assert re.search(NUMBER, measured), f"{prefix}: no number in {measured!r}"
        if has_baseline:
            assert re.search(NUMBER, baseline), f"{prefix}: no baseline number in {baseline!r}"
        if has_ratio:
            assert re.fullmatch(rf"{NUMBER}×", ratio), f"{prefix}: ratio {ratio!r}"
        if has_goal:
            assert goal and verdict in {"met", "**MISSED**"}, f"{prefix}: goal {goal!r}, verdict {verdict!r}"
    text = out.read_text()
    assert text.startswith("# Hand-written title\n") and text.endswith("\n\nReading.\n")
    assert "old table" not in text and "(P1) pipeline jobs/s" in text
