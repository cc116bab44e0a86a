"""process_job's logic on SQLite with a scripted model client: every path ends terminal."""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.orm import Session

from modelreasoner import calls
from modelreasoner.client import CallInput, CallResult
from modelreasoner.lease import LeaseKeeper
from modelreasoner.runtime import Runtime
from modelreasoner.worker import execute
from orchestrator import intake, jobs
from orchestrator.db import make_session_factory
from orchestrator.errors import ModelCallError
from orchestrator.models import Audit, Job, JobStatus
from orchestrator.routing import InMemoryStatsStore, Router, Target
from orchestrator.schemas import JobCreate
from orchestrator.settings import load_settings

ANSWER = {"risk_level": "low", "flagged_domains": [], "rationale": "ok", "model_version": "t"}
EDGE = Target("edge", "edge", url="http://edge", cost_per_call_usd=0.0002, prior_latency_ms=50)
GPU = Target("gpu", "gpu", url="http://gpu", cost_per_call_usd=0.004, prior_latency_ms=40)


@dataclass
class ScriptedClient:
    """Answers per target from a script: an exception instance to raise, or a result dict.
    ``delays`` (s) make a target slow: it answers after that long, or times out at the call's
    timeout if that comes first."""

    script: dict[str, list] = field(default_factory=dict)
    calls: list[tuple[str, float]] = field(default_factory=list)
    delays: dict[str, float] = field(default_factory=dict)

    def call(self, target: Target, job: CallInput, timeout_s: float) -> CallResult:
        self.calls.append((target.name, timeout_s))
        outcome = self.script.get(target.name, [ANSWER]).pop(0) if self.script.get(target.name) else ANSWER
        delay = self.delays.get(target.name, 0.0)
        if delay:
            time.sleep(min(delay, timeout_s))
            if delay > timeout_s:
                raise ModelCallError("timeout", f"no answer within {timeout_s * 1000:.0f} ms")
        if isinstance(outcome, BaseException):
            raise outcome
        return CallResult(result=outcome, latency_ms=delay * 1000.0 or 5.0, cost_usd=target.cost_per_call_usd)


def make_runtime(engine, fake_redis, client, targets=(EDGE, GPU), **env) -> Runtime:
    settings = load_settings().model_copy(update=env)
    sessions = make_session_factory(engine)
    return Runtime(
        settings=settings,
        engine=engine,
        sessions=sessions,
        redis=fake_redis,
        router=Router(InMemoryStatsStore(), rng=random.Random(1)),
        client=client,
        http=httpx.Client(),
        leases=LeaseKeeper(sessions, worker_id="w-test", lease_seconds=15),
        worker_id="w-test",
        static_targets=list(targets),
    )


def submit(engine, **body) -> uuid.UUID:
    body.setdefault("age_months", 24)
    body.setdefault("observations", "x")
    with Session(engine) as session:
        return intake.submit_screening(session, JobCreate(**body), actor="anonymous", default_sla_ms=2000).job.id


def load(engine, job_id) -> tuple[Job, list[Audit]]:
    with Session(engine) as session:
        job = session.get(Job, job_id)
        trail = session.scalars(select(Audit).where(Audit.job_id == job_id).order_by(Audit.id)).all()
        return job, list(trail)


def test_a_job_completes_on_the_first_choice_with_a_full_trail(sqlite_engine, fake_redis):
    client = ScriptedClient()
    job_id = submit(sqlite_engine)
    summary = execute(make_runtime(sqlite_engine, fake_redis, client), job_id)
    job, trail = load(sqlite_engine, job_id)
    assert summary == {"status": "completed", "target": "edge"}
    assert job.status == "completed" and job.result == ANSWER and job.target == "edge"
    assert job.sla_met is True and job.attempts == 1 and job.cost_usd == pytest.approx(0.0002)
    assert job.decision["chosen"] == "edge" and job.lease_expires_at is None
    assert [a.event for a in trail] == ["submitted", "claimed", "routed", "call_started", "attempt", "completed"]
    assert trail[3].target == "edge" and trail[3].details == {"claim": 1, "call": 1, "hedge": False}
    assert trail[4].target == "edge" and trail[4].outcome == "ok" and trail[4].actor == "w-test"


def test_a_failing_target_fails_over_to_the_next_candidate(sqlite_engine, fake_redis):
    client = ScriptedClient({"edge": [ModelCallError("http_5xx", "HTTP 500")]})
    job_id = submit(sqlite_engine)
    execute(make_runtime(sqlite_engine, fake_redis, client), job_id)
    job, trail = load(sqlite_engine, job_id)
    assert [name for name, _ in client.calls] == ["edge", "gpu"]
    assert job.status == "completed" and job.target == "gpu" and job.attempts == 2
    attempts = [(a.target, a.outcome) for a in trail if a.event == "attempt"]
    assert attempts == [("edge", "http_5xx"), ("gpu", "ok")]
    assert job.cost_usd == pytest.approx(0.0002 + 0.004)  # the 500 reached the server: it cost


def test_when_every_target_fails_the_job_fails_with_each_reason(sqlite_engine, fake_redis):
    client = ScriptedClient(
        {
            "edge": [ModelCallError("timeout", "no answer within 500 ms")],
            "gpu": [ModelCallError("connect_error", "refused")],
        }
    )
    job_id = submit(sqlite_engine)
    summary = execute(make_runtime(sqlite_engine, fake_redis, client), job_id)
    job, trail = load(sqlite_engine, job_id)
    assert summary["status"] == "failed" and job.status == "failed" and job.error_kind == "all_targets_failed"
    assert "edge: timeout (no answer within 500 ms)" in job.error and "gpu: connect_error (refused)" in job.error
    assert [a.event for a in trail][-1] == "failed"


def test_a_duplicate_delivery_is_a_no_op(sqlite_engine, fake_redis):
    client = ScriptedClient()
    runtime = make_runtime(sqlite_engine, fake_redis, client)
    job_id = submit(sqlite_engine)
    execute(runtime, job_id)
    assert execute(runtime, job_id) == {"status": "skipped", "target": None}
    job, trail = load(sqlite_engine, job_id)
    assert len(client.calls) == 1 and [a.event for a in trail].count("completed") == 1


def test_a_strict_sla_nobody_can_meet_fails_fast_without_a_call(sqlite_engine, fake_redis):
    client = ScriptedClient()
    slow = [Target("edge", "edge", url="http://edge", prior_latency_ms=5000)]
    job_id = submit(sqlite_engine, sla_ms=100, strict_sla=True)
    execute(make_runtime(sqlite_engine, fake_redis, client, targets=slow), job_id)
    job, _ = load(sqlite_engine, job_id)
    assert client.calls == [] and job.status == "failed" and job.error_kind == "sla_unmeetable"
    assert job.error.startswith("sla_unmeetable:")


def test_no_configured_target_fails_the_job_with_that_reason(sqlite_engine, fake_redis):
    job_id = submit(sqlite_engine)
    execute(make_runtime(sqlite_engine, fake_redis, ScriptedClient(), targets=()), job_id)
    job, _ = load(sqlite_engine, job_id)
    assert job.status == "failed" and job.error_kind == "no_targets"


def test_any_exception_from_a_client_is_a_failed_attempt_that_fails_over(sqlite_engine, fake_redis):
    """Issue 11, defect 2: whatever class a client throws, the call is a failed attempt (audited,
    fed to the stats) and the next target is tried; the job is not crashed."""
    client = ScriptedClient({"edge": [ZeroDivisionError("bug"), RecursionError("deep"), TypeError("list")]})
    runtime = make_runtime(sqlite_engine, fake_redis, client)
    for _ in range(3):
        job_id = submit(sqlite_engine)
        execute(runtime, job_id)
        job, trail = load(sqlite_engine, job_id)
        assert job.status == "completed" and job.target == "gpu", job.error
        assert [(a.target, a.outcome) for a in trail if a.event == "attempt"][0][0] == "edge"
    edge = runtime.router.store.snapshot(["edge"], time.time())["edge"]
    assert edge.consecutive_failures == 3


def test_an_unexpected_crash_still_ends_the_job_failed_naming_the_step(sqlite_engine, fake_redis, monkeypatch):
    from modelreasoner import dispatch

    def crash(*_args):
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(dispatch, "execute_plan", crash)
    job_id = submit(sqlite_engine)
    execute(make_runtime(sqlite_engine, fake_redis, ScriptedClient()), job_id)
    job, _ = load(sqlite_engine, job_id)
    assert job.status == "failed" and job.error_kind == "internal_error"
    assert job.error == "call failed: ZeroDivisionError"


def test_the_call_timeout_is_the_configured_one_or_the_time_left_whichever_is_smaller(sqlite_engine, fake_redis):
    client = ScriptedClient()
    roomy, tight = submit(sqlite_engine, sla_ms=60_000), submit(sqlite_engine, sla_ms=1500)
    runtime = make_runtime(sqlite_engine, fake_redis, client, routing_timeout_seconds=4.0)
    execute(runtime, roomy)
    execute(runtime, tight)
    (_, roomy_timeout), (_, tight_timeout) = client.calls
    assert roomy_timeout == 4.0
    assert 1.0 < tight_timeout <= 1.5


def test_the_first_terminal_write_wins(sqlite_engine):
    job_id = submit(sqlite_engine)
    now = datetime.now(UTC)
    with Session(sqlite_engine) as session:
        assert jobs.claim(session, job_id, worker_id="a", now=now, lease_seconds=15) is not None
        assert jobs.finish(session, job_id, JobStatus.COMPLETED, actor="a", now=now, target="edge")
        assert not jobs.finish(session, job_id, JobStatus.FAILED, actor="b", now=now + timedelta(seconds=1))
    job, trail = load(sqlite_engine, job_id)
    assert job.status == "completed" and [a.event for a in trail].count("failed") == 0


def attempts_of(trail: list[Audit]) -> list[tuple[str, str, bool]]:
    return [(a.target, a.outcome, a.details["hedge"]) for a in trail if a.event == "attempt"]


def hedges_sent(target: str) -> float:
    return REGISTRY.get_sample_value("pedi_hedges_total", {"target": target}) or 0.0


def test_a_late_first_call_is_hedged_and_the_first_success_wins(sqlite_engine, fake_redis):
    client = ScriptedClient(delays={"edge": 3.0})
    runtime = make_runtime(sqlite_engine, fake_redis, client, hedge_max_share=0.5)
    job_id = submit(sqlite_engine, sla_ms=800)
    before = hedges_sent("gpu")
    started = time.monotonic()
    execute(runtime, job_id)
    took = time.monotonic() - started
    job, trail = load(sqlite_engine, job_id)
    assert job.status == "completed" and job.target == "gpu" and job.sla_met
    assert took < 1.0  # did not wait for the slow edge call
    assert attempts_of(trail) == [("edge", "cancelled", False), ("gpu", "ok", True)]
    assert job.attempts == 2 and job.cost_usd == pytest.approx(0.0002 + 0.004)
    assert hedges_sent("gpu") == before + 1
    assert "lost the hedge race" in next(a for a in trail if a.outcome == "cancelled").details["error"]


def test_the_abandoned_call_still_teaches_the_router_when_it_ends(sqlite_engine, fake_redis):
    client = ScriptedClient(delays={"edge": 3.0})
    runtime = make_runtime(sqlite_engine, fake_redis, client, hedge_max_share=0.5)
    execute(runtime, submit(sqlite_engine, sla_ms=800))
    deadline = time.monotonic() + 5
    while runtime.router.stats([EDGE], time.time())["edge"].calls == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    edge = runtime.router.stats([EDGE], time.time())["edge"]
    # its real outcome, a timeout cut short by the 800 ms deadline: latency evidence, not a failure
    assert edge.calls == 1 and edge.samples > 0 and edge.failures == 0 and edge.in_flight == 0


HOLD_LIMIT_S = 10.0
"""Longest a held call waits for its release: only reached when the code under test never
releases it (a hedge that was never considered), and then the test fails."""


@dataclass
class HeldClient(ScriptedClient):
    """A ScriptedClient whose ``held`` targets answer (their script) only once their job is
    released: a first call late for exactly as long as the test needs, with no clock involved.
    The end of the job's call to ``release_after`` releases it; so can the test (``release``)."""

    held: tuple[str, ...] = ("edge",)
    release_after: str | None = None
    _released: dict[str, threading.Event] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def release(self, job_id: uuid.UUID | str) -> None:
        self._event(str(job_id)).set()

    def _event(self, job_id: str) -> threading.Event:
        with self._lock:
            return self._released.setdefault(job_id, threading.Event())

    def call(self, target: Target, job: CallInput, timeout_s: float) -> CallResult:
        if target.name not in self.held:
            try:
                return super().call(target, job, timeout_s)
            finally:
                if target.name == self.release_after:
                    self.release(job.job_id)
        if not self._event(job.job_id).wait(HOLD_LIMIT_S):
            raise ModelCallError("timeout", "held call never released")
        return super().call(target, job, timeout_s)


def test_when_the_backup_fails_the_first_call_can_still_win(sqlite_engine, fake_redis):
    # a backup whose prior p95 is ~700 ms is hedged to ~1 s before the deadline; the first call
    # (edge) answers only once that backup has failed
    slow_gpu = Target("gpu", "gpu", url="http://gpu", cost_per_call_usd=0.004, prior_latency_ms=300)
    client = HeldClient({"gpu": [ModelCallError("http_5xx", "HTTP 503")]}, release_after="gpu")
    runtime = make_runtime(sqlite_engine, fake_redis, client, targets=(EDGE, slow_gpu), hedge_max_share=0.5)
    job_id = submit(sqlite_engine, sla_ms=2000)
    execute(runtime, job_id)
    job, trail = load(sqlite_engine, job_id)
    assert job.status == "completed" and job.target == "edge"
    assert attempts_of(trail) == [("gpu", "http_5xx", True), ("edge", "ok", False)]


def test_the_hedge_budget_caps_backup_calls(sqlite_engine, fake_redis, monkeypatch):
    """Six workers (each its own router, so each still trusts the slow edge box) share one
    budget through Redis: a quarter of all calls may be hedges. Each job's edge call is still
    running when the budget is asked (it is released by the answer), then times out. The SLA
    leaves room for a backup even when a loaded machine is slow to reach the decision."""
    client = HeldClient({"edge": [ModelCallError("timeout", "no answer within the SLA")] * 6})
    real_try_hedge = calls._try_hedge
    asked = []

    def try_hedge(rt) -> bool:
        admitted = real_try_hedge(rt)
        asked.append(admitted)
        client.release(jobs_run[-1])  # jobs run one after another: this is the current one
        return admitted

    monkeypatch.setattr(calls, "_try_hedge", try_hedge)
    jobs_run = []
    for _ in range(6):
        jobs_run.append(submit(sqlite_engine, sla_ms=1200))
        execute(make_runtime(sqlite_engine, fake_redis, client, hedge_max_share=0.25), jobs_run[-1])
    trails = [load(sqlite_engine, j)[1] for j in jobs_run]
    hedges = sum(a.details["hedge"] for t in trails for a in t if a.event == "attempt")
    assert len(asked) == len(jobs_run)  # every job asked the budget for a hedge
    assert hedges == sum(asked)
    assert 1 <= hedges <= 0.25 * len(client.calls)
    assert hedges < len(jobs_run)  # without the cap every job would have been hedged


def test_with_hedging_off_a_late_call_is_waited_for(sqlite_engine, fake_redis):
    client = ScriptedClient(delays={"edge": 0.3})
    runtime = make_runtime(sqlite_engine, fake_redis, client, hedge_enabled=False, hedge_max_share=1.0)
    job_id = submit(sqlite_engine, sla_ms=600)
    execute(runtime, job_id)
    job, trail = load(sqlite_engine, job_id)
    assert job.target == "edge" and [name for name, _ in client.calls] == ["edge"]
    assert attempts_of(trail) == [("edge", "ok", False)]


def test_attempt_rows_come_before_the_terminal_row_in_the_timeline(sqlite_engine, fake_redis):
    client = ScriptedClient({"edge": [ModelCallError("http_5xx", "HTTP 500")]})
    job_id = submit(sqlite_engine)
    execute(make_runtime(sqlite_engine, fake_redis, client), job_id)
    with Session(sqlite_engine) as session:
        by_time = [a.event for a in session.scalars(select(Audit).where(Audit.job_id == job_id).order_by(Audit.at))]
    assert by_time == [
        "submitted",
        "claimed",
        "routed",
        "call_started",
        "attempt",
        "call_started",
        "attempt",
        "completed",
    ]


def test_a_task_with_no_runner_target_fails_saying_so(sqlite_engine, fake_redis):
    from orchestrator.schemas import TaskCreate

    with Session(sqlite_engine) as session:
        body = TaskCreate(task_type="summarize", payload={"n": 1}, consent=True)
        job_id = intake.submit_task(session, body, actor="anonymous", default_sla_ms=2000).job.id
    execute(make_runtime(sqlite_engine, fake_redis, ScriptedClient()), job_id)
    job, _ = load(sqlite_engine, job_id)
    assert job.status == "failed" and job.error_kind == "no_targets" and "runner-contract" in job.error


def test_a_call_whose_answer_was_lost_shows_as_started(sqlite_engine, fake_redis, monkeypatch):
    """Issue 11, defect 10: the worker dies after the model answered, before any write. The
    call's ``call_started`` row, committed before the request left, is all that remains; the
    status view lists it as ``started``. The rerun's call is listed with its outcome."""
    from modelreasoner import dispatch
    from orchestrator.audit import attempt_rows

    class Killed(BaseException):
        """Stands for SIGKILL: nothing after it runs."""

    def killed_after_the_call(rt, job, attempt, number):
        raise Killed()

    client = ScriptedClient({"edge": [ModelCallError("http_5xx", "HTTP 500")]})
    runtime = make_runtime(sqlite_engine, fake_redis, client)
    job_id = submit(sqlite_engine)
    monkeypatch.setattr(dispatch, "_record_failover", killed_after_the_call)
    with pytest.raises(Killed):
        execute(runtime, job_id)
    monkeypatch.undo()
    with Session(sqlite_engine) as session:  # the lease lapsed; the reconciler put it back
        job = session.get(Job, job_id)
        job.status, job.worker_id, job.lease_expires_at = "queued", None, None
        session.commit()
    execute(runtime, job_id)
    _, trail = load(sqlite_engine, job_id)
    calls = [(row.target, row.outcome, row.details["claim"]) for row in attempt_rows(trail)]
    assert calls == [("edge", "started", 1), ("edge", "ok", 2)]
    assert [name for name, _ in client.calls] == ["edge", "edge"]


def test_a_hedge_whose_start_cannot_be_recorded_is_not_sent(sqlite_engine, fake_redis, monkeypatch):
    """No call without its ``call_started`` row: when the hedge's row cannot be written, the job
    waits for its first call instead of sending an unrecorded backup."""
    from modelreasoner import dispatch
    from orchestrator.errors import DatabaseUnavailable

    real = dispatch.CallLog.__call__

    def no_row_for_hedges(self, target, hedge):
        if hedge:
            client.release(job_id)  # the first call answers once the hedge was refused its row
            raise DatabaseUnavailable()
        return real(self, target, hedge)

    monkeypatch.setattr(dispatch.CallLog, "__call__", no_row_for_hedges)
    # Every target is held until then, so whichever the router picks first, a backup is due
    # while it runs (the SLA leaves room for one even on a loaded machine).
    client = HeldClient(held=("edge", "cloud", "gpu"))
    job_id = submit(sqlite_engine, sla_ms=2000)
    execute(make_runtime(sqlite_engine, fake_redis, client, hedge_max_share=0.5), job_id)
    job, trail = load(sqlite_engine, job_id)
    called = [name for name, _ in client.calls]
    assert len(called) == 1, called
    assert job.status == "completed" and job.target == called[0]
    assert [a.target for a in trail if a.event == "call_started"] == called
