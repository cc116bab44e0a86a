"""Issue 11, defect 1: no error can make a job loop.

* A worker on a host with a 63-character name (a Helm release's pod) runs jobs: its id is made
  to fit the audit's actor column in one place, and every job completes.
* A job whose every delivery fails before a claim (a database trigger refuses its ``claimed``
  row and the worker's ``failed`` row) is requeued JOB_MAX_REQUEUES times, then ends ``failed``
  (``undeliverable``), counted by pedi_jobs_undeliverable_total; it never reaches a model server.
"""

from __future__ import annotations

import os
import shutil
import time
from functools import partial

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.support.procs import python

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

POD_NAME = "pedi-orchestrator-worker-7c9f8d6b5-" + "x" * 28
KNOBS = {"RECONCILER_INTERVAL_SECONDS": "1", "RECONCILER_GRACE_SECONDS": "2"}
MAX_REQUEUES = 3
BODY = {"age_months": 18, "observations": "points at dogs", "sla_ms": 60_000}


def start_worker(stack, how: str):
    if how == "env":
        return stack.worker(concurrency=4, name="long-host", WORKER_HOSTNAME=POD_NAME)
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("unshare --uts needs root")
    # A real host name: the worker reads it with socket.gethostname() in its own UTS namespace.
    command = " ".join(python("-m", "modelreasoner.worker", "--concurrency", "4", "--name", "long-host"))
    argv = ["unshare", "--uts", "sh", "-c", f"hostname {POD_NAME} && exec {command}"]
    env = stack.base_env(**stack.target_env())
    return stack._spawn("long-host", argv, env, ready_check=partial(stack.worker_registered, "long-host"))


@pytest.mark.parametrize("how", ["env", "uts"])
def test_a_worker_on_a_63_character_host_runs_every_job(stack, ledger, report, how):
    assert len(POD_NAME) == 63
    stack.model_server("gpu", tier="gpu", latency_ms=5, jitter=0)
    api = stack.api(**KNOBS)
    start_worker(stack, how)
    accepted = [api.submit(**BODY)["job_id"] for _ in range(10)]
    statuses = ledger.wait_terminal(accepted, timeout=30)
    outcome = ledger.outcome(f"long_host_name_{how}", accepted)
    report(outcome)
    actors = ledger.actors("claimed")
    report(f"long_host_name_{how}: worker id {sorted(actors)[0]!r} ({len(sorted(actors)[0])} characters)")
    assert outcome.clean and set(statuses.values()) == {"completed"}, (outcome, statuses)
    assert all(len(a) <= 64 and a.startswith(POD_NAME[:40]) for a in actors), actors
    assert set(ledger.event_counts("requeued")[i] for i in accepted) == {0}, "no job looped"
    assert outcome.max_calls == 1


@pytest.fixture
def poisoned(pg_url):
    """Every worker-written ``claimed`` or ``failed`` row is refused, as a too-long actor was."""
    engine = create_engine(pg_url)
    ddl = [
        """CREATE FUNCTION pedi_test_poison() RETURNS trigger AS $$ BEGIN
             IF NEW.event = 'claimed' OR (NEW.event = 'failed' AND NEW.actor NOT LIKE 'reconciler:%') THEN
               RAISE EXCEPTION 'value too long' USING ERRCODE = '22001';
             END IF;
             RETURN NEW; END $$ LANGUAGE plpgsql""",
        "CREATE TRIGGER pedi_test_poison BEFORE INSERT ON audit FOR EACH ROW EXECUTE FUNCTION pedi_test_poison()",
    ]
    with engine.begin() as connection:
        for statement in ddl:
            connection.execute(text(statement))
    yield
    with engine.begin() as connection:
        connection.execute(text("DROP TRIGGER IF EXISTS pedi_test_poison ON audit"))
        connection.execute(text("DROP FUNCTION IF EXISTS pedi_test_poison()"))
    engine.dispose()


def undeliverable_total(api_url: str) -> float:
    for line in httpx.get(f"{api_url}/metrics", timeout=5).text.splitlines():
        if line.startswith("pedi_jobs_undeliverable_total "):
            return float(line.split()[1])
    return 0.0


def test_a_job_no_worker_can_claim_ends_undeliverable(stack, ledger, report, poisoned):
    stack.model_server("gpu", tier="gpu", latency_ms=5, jitter=0)
    api = stack.api(JOB_MAX_REQUEUES=str(MAX_REQUEUES), **KNOBS)
    stack.worker(concurrency=2, RECONCILER_ENABLED="false", **KNOBS)
    started = time.monotonic()
    job_id = api.submit(**BODY)["job_id"]
    done = api.wait(job_id, timeout=60)
    took = time.monotonic() - started
    outcome = ledger.outcome("undeliverable", [job_id])
    report(outcome)
    requeues = ledger.event_counts("requeued")[job_id]
    report(f"undeliverable: requeued {requeues} times, failed after {took:.1f} s")
    assert outcome.clean, outcome
    assert done["status"] == "failed" and done["error_kind"] == "undeliverable", done
    assert requeues == MAX_REQUEUES and f"requeued {MAX_REQUEUES} times" in done["error"]
    assert outcome.max_calls == 0 and done["attempts"] == []
    assert undeliverable_total(api.url) == 1
    assert "points at dogs" not in stack.logs(), "no PHI in any log"
