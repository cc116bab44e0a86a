"""Issue 11 on SQLite: a step that raises ends the job failed naming the step (no loop), settings
that contradict each other are refused naming the variables, and the lease keeper holds a job
for its own longest run, not RQ's timeout."""

from __future__ import annotations

import time
import uuid

import pytest
from sqlalchemy.exc import DataError

from modelreasoner import dispatch
from modelreasoner.lease import LeaseKeeper, check_targets_fit_the_lease, longest_run_seconds
from modelreasoner.reasons import step_failed
from modelreasoner.runtime import check_id_fits, new_worker_id
from modelreasoner.worker import execute
from orchestrator import jobs
from orchestrator.constants import RQ_JOB_TIMEOUT_SECONDS
from orchestrator.errors import ConfigError
from orchestrator.metrics import JOB_STEP_FAILURES
from orchestrator.routing import Target
from orchestrator.settings import load_settings
from tests.unit.test_worker_logic import EDGE, GPU, ScriptedClient, load, make_runtime, submit


def data_error() -> DataError:
    return DataError("INSERT INTO audit (actor) VALUES (%(actor)s)", {"actor": "x"}, Exception("too long"))


def test_a_claim_that_raises_fails_the_job_once_naming_the_step(sqlite_engine, fake_redis, monkeypatch):
    """Defect 1: a deterministic error in the claim used to roll the claim back and leave the job
    queued, to be delivered forever. Now the job ends failed at the first delivery."""
    tries = []

    def broken_claim(*args, **kwargs):
        tries.append(1)
        raise data_error()

    monkeypatch.setattr(jobs, "claim", broken_claim)
    client = ScriptedClient()
    job_id = submit(sqlite_engine)
    before = JOB_STEP_FAILURES.labels("claim")._value.get()
    summary = execute(make_runtime(sqlite_engine, fake_redis, client), job_id)
    job, trail = load(sqlite_engine, job_id)
    assert summary == {"status": "failed", "target": None} and len(tries) == 1, "not retried: it is not a blip"
    assert job.status == "failed" and job.error_kind == "internal_error"
    assert job.error.startswith("claim failed: ") and client.calls == []
    assert [a.event for a in trail] == ["submitted", "failed"] and trail[-1].actor == "w-test"
    assert JOB_STEP_FAILURES.labels("claim")._value.get() == before + 1
    # A second delivery of the same id finds it finished: nothing runs again.
    monkeypatch.undo()
    assert execute(make_runtime(sqlite_engine, fake_redis, client), job_id)["status"] == "skipped"


def test_a_decision_that_cannot_be_stored_fails_the_job_naming_the_route_step(sqlite_engine, fake_redis, monkeypatch):
    def broken(*args, **kwargs):
        raise data_error()

    monkeypatch.setattr(dispatch, "record_decision", broken)
    client = ScriptedClient()
    job_id = submit(sqlite_engine)
    execute(make_runtime(sqlite_engine, fake_redis, client), job_id)
    job, _ = load(sqlite_engine, job_id)
    assert job.status == "failed" and job.error.startswith("route failed: ") and client.calls == []


def test_a_decision_whose_write_fails_is_never_followed_by_a_call(sqlite_engine, fake_redis, monkeypatch):
    """The decision is written with the first call's ``call_started`` row: when that write
    fails for good, no call is made, and the job ends failed with the decision and its
    ``routed`` row written with the terminal state."""

    def broken(*args, **kwargs):
        raise data_error()

    monkeypatch.setattr(jobs, "start_call", broken)
    client = ScriptedClient()
    job_id = submit(sqlite_engine)
    execute(make_runtime(sqlite_engine, fake_redis, client), job_id)
    job, trail = load(sqlite_engine, job_id)
    assert client.calls == [] and job.status == "failed" and job.error.startswith("call failed: ")
    assert job.decision is not None and [a.event for a in trail] == ["submitted", "claimed", "routed", "failed"]


def test_a_result_that_cannot_be_written_fails_the_job_naming_the_persist_step(sqlite_engine, fake_redis, monkeypatch):
    """Defect 3's tail: a terminal write that fails deterministically used to leave the job
    running until its lease lapsed, then ran the model again (up to JOB_MAX_CLAIMS times)."""
    real_finish, tries = jobs.finish, []

    def finish(*args, **kwargs):
        tries.append(1)
        raise data_error()

    monkeypatch.setattr(jobs, "finish", finish)
    client = ScriptedClient()
    job_id = submit(sqlite_engine)
    execute(make_runtime(sqlite_engine, fake_redis, client), job_id)
    job, trail = load(sqlite_engine, job_id)
    assert len(tries) == 1 and len(client.calls) == 1
    assert job.status == "failed" and job.error.startswith("persist failed: ") and job.result is None
    assert job.lease_expires_at is None
    assert real_finish is not finish


def test_reasons_name_the_step_and_never_quote_the_data():
    secret = "SECRET-OBSERVATION"
    exc = DataError("UPDATE jobs SET result=%(result)s", {"result": secret}, Exception(f"bad {secret}"))
    assert step_failed("persist", exc) == "persist failed: DataError in jobs"
    assert secret not in step_failed("call", KeyError(secret))


# --- settings that contradict each other ----------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"JOB_LEASE_SECONDS": "5", "ROUTING_TIMEOUT_SECONDS": "10"}, ["JOB_LEASE_SECONDS", "ROUTING_TIMEOUT_SECONDS"]),
        ({"RECONCILER_GRACE_SECONDS": "1", "MAX_CLOCK_SKEW_SECONDS": "2"}, ["RECONCILER_GRACE_SECONDS"]),
        ({"DEFAULT_SLA_MS": str((RQ_JOB_TIMEOUT_SECONDS + 1) * 1000)}, ["DEFAULT_SLA_MS"]),
        ({"ROUTING_TIMEOUT_SECONDS": str(RQ_JOB_TIMEOUT_SECONDS + 1), "JOB_LEASE_SECONDS": "600"}, ["RQ"]),
    ],
)
def test_contradicting_settings_are_refused_naming_the_variables(monkeypatch, env, names):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as raised:
        load_settings()
    for name in names:
        assert name in raised.value.message


def test_agreeing_settings_are_accepted(monkeypatch):
    monkeypatch.setenv("JOB_LEASE_SECONDS", "3")
    monkeypatch.setenv("ROUTING_TIMEOUT_SECONDS", "3")
    monkeypatch.setenv("RECONCILER_GRACE_SECONDS", "1")
    monkeypatch.setenv("MAX_CLOCK_SKEW_SECONDS", "0.5")
    assert load_settings().job_lease_seconds == 3


def test_a_target_timeout_longer_than_the_lease_is_refused_at_worker_start():
    slow = Target("gpu", "gpu", url="http://gpu", cost_per_call_usd=0.004, timeout_seconds=60)
    with pytest.raises(ConfigError, match="JOB_LEASE_SECONDS .* 'gpu'"):
        check_targets_fit_the_lease(load_settings(), [EDGE, slow])
    check_targets_fit_the_lease(load_settings(), [EDGE, GPU])


# --- worker ids and leases -----------------------------------------------------------------------------


def test_a_63_character_host_name_gives_an_id_that_fits(sqlite_engine):
    host = "pedi-orchestrator-worker-" + "a" * 38
    worker_id = new_worker_id(host)
    assert len(host) == 63 and len(worker_id) <= 64 and worker_id.startswith(host[:40])
    check_id_fits(sqlite_engine, worker_id)
    with pytest.raises(ConfigError, match="audit.actor"):
        check_id_fits(sqlite_engine, "w" * 65)


def test_the_lease_keeper_holds_a_long_legitimate_job_past_rqs_timeout(sqlite_engine, fake_redis):
    """Defect 6: a job whose plan may take longer than RQ_JOB_TIMEOUT_SECONDS keeps its lease for
    its own longest run; a wedged one is dropped once that has passed."""
    slow = [Target(n, "gpu", url=f"http://{n}", cost_per_call_usd=0.004, timeout_seconds=120) for n in "abc"]
    rt = make_runtime(sqlite_engine, fake_redis, ScriptedClient(), targets=slow, job_lease_seconds=120)
    planned = dispatch.plan(rt, rt_job(sqlite_engine), rt.static_targets)
    hold = longest_run_seconds(rt.settings, planned)
    assert hold > RQ_JOB_TIMEOUT_SECONDS and hold >= 3 * 120
    keeper = LeaseKeeper(rt.sessions, worker_id="w", lease_seconds=120)
    long_job, wedged = uuid.uuid4(), uuid.uuid4()
    keeper.add(long_job, hold_seconds=hold)
    keeper.add(wedged, hold_seconds=0.01)
    time.sleep(0.05)
    assert keeper.held() == [long_job]
    keeper.stop()


def rt_job(engine):
    from sqlalchemy.orm import Session

    from orchestrator.models import Job

    job_id = submit(engine, sla_ms=600_000)
    with Session(engine) as session:
        return session.get(Job, job_id)
