"""The books of a fault-injection test: what the API accepted, and what Postgres says became of it.

Postgres is read directly (not through the API) so a fault in the API cannot hide a lost job.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

import httpx
from sqlalchemy import create_engine, func, select

from orchestrator.models import Audit, Job

TERMINAL_EVENTS = ("completed", "failed")


@dataclass
class Outcome:
    """Counts for the one line each fault test prints."""

    name: str
    accepted: int
    terminal: int
    lost: int
    duplicates: int
    unaudited: int
    """Terminal in the jobs table without a terminal audit row (must be 0 too)."""
    max_calls: int = 0
    """Most model calls any accepted job made (its ``call_started`` audit rows), across claims."""

    def line(self) -> str:
        return (
            f"{self.name}: accepted={self.accepted} terminal={self.terminal} lost={self.lost} "
            f"duplicates={self.duplicates} max_calls_per_job={self.max_calls}"
        )

    @property
    def clean(self) -> bool:
        return self.accepted == self.terminal and self.lost == 0 and self.duplicates == 0 and self.unaudited == 0


class Ledger:
    """Reads job and audit state of the accepted jobs from Postgres."""

    def __init__(self, pg_url: str) -> None:
        self.engine = create_engine(pg_url, pool_size=2, max_overflow=2)

    def close(self) -> None:
        self.engine.dispose()

    def statuses(self, ids: Iterable[str]) -> dict[str, str]:
        wanted = [uuid.UUID(i) for i in ids]
        found: dict[str, str] = {}
        with self.engine.connect() as connection:
            for start in range(0, len(wanted), 1000):
                chunk = wanted[start : start + 1000]
                rows = connection.execute(select(Job.id, Job.status).where(Job.id.in_(chunk)))
                found.update({str(job_id): status for job_id, status in rows})
        return found

    def active_anywhere(self) -> int:
        """Jobs queued or running in the whole database (accepted or not)."""
        with self.engine.connect() as connection:
            return connection.scalar(select(func.count()).where(Job.status.in_(["queued", "running"])))

    def wait_terminal(self, ids: list[str], timeout: float) -> dict[str, str]:
        """Poll until every id is completed or failed, or ``timeout`` s pass; returns statuses."""
        deadline = time.monotonic() + timeout
        while True:
            statuses = self.statuses(ids)
            if all(statuses.get(i) in TERMINAL_EVENTS for i in ids) or time.monotonic() > deadline:
                return statuses
            time.sleep(0.25)

    def event_counts(self, event: str) -> Counter:
        """How many audit rows of ``event`` each job has."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(Audit.job_id, func.count()).where(Audit.event == event).group_by(Audit.job_id)
            )
            return Counter({str(job_id): count for job_id, count in rows})

    def actors(self, event: str) -> set[str]:
        """Every actor that wrote an ``event`` row."""
        with self.engine.connect() as connection:
            return set(connection.scalars(select(Audit.actor).where(Audit.event == event).distinct()))

    def events(self, job_id: str) -> list[tuple[str, datetime, str]]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(Audit.event, Audit.at, Audit.actor).where(Audit.job_id == uuid.UUID(job_id)).order_by(Audit.id)
            )
            return [tuple(row) for row in rows]

    def outcome(self, name: str, accepted: list[str]) -> Outcome:
        """The books: lost = accepted but not terminal; duplicates = more than one terminal row."""
        statuses = self.statuses(accepted)
        terminal = [i for i in accepted if statuses.get(i) in TERMINAL_EVENTS]
        finals = self.event_counts("completed") + self.event_counts("failed")
        duplicates = sum(1 for i in accepted if finals.get(i, 0) > 1)
        unaudited = sum(1 for i in terminal if finals.get(i, 0) == 0)
        calls = self.event_counts("call_started")
        max_calls = max((calls.get(i, 0) for i in accepted), default=0)
        lost = len(accepted) - len(terminal)
        return Outcome(name, len(accepted), len(terminal), lost, duplicates, unaudited, max_calls)

    def calls_by_target(self, ids: Iterable[str]) -> Counter:
        """``call_started`` rows of these jobs per target: the calls the audit says were made."""
        wanted = [uuid.UUID(i) for i in ids]
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(Audit.target, func.count())
                .where(Audit.event == "call_started", Audit.job_id.in_(wanted))
                .group_by(Audit.target)
            )
            return Counter({target: count for target, count in rows})


@dataclass
class Burst:
    """Submits from several threads and records every answer (status, seconds, body)."""

    api_url: str
    headers: dict[str, str] = field(default_factory=dict)
    request_timeout: float = 10.0
    answers: list[tuple[int | str, float, dict, dict]] = field(default_factory=list)
    sent: list[float] = field(default_factory=list)
    """When each request was sent (monotonic s): ``sent[i]`` goes with ``answers[i]``."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def submit_one(self, client: httpx.Client, body: dict) -> None:
        started = time.monotonic()
        try:
            response = client.post("/api/submit", json=body)
            status: int | str = response.status_code
            payload = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
            headers = dict(response.headers)
        except httpx.HTTPError as exc:
            status, payload, headers = type(exc).__name__, {}, {}
        with self._lock:
            self.answers.append((status, time.monotonic() - started, payload, headers))
            self.sent.append(started)

    def sent_between(self, start: float, end: float) -> list[tuple[int | str, float, dict, dict]]:
        """The answers to the requests sent between ``start`` and ``end`` (monotonic s)."""
        return [answer for at, answer in zip(self.sent, self.answers, strict=True) if start <= at <= end]

    def run(self, count: int, threads: int, body: dict) -> None:
        """Submit ``count`` jobs from ``threads`` clients."""

        def worker(share: int) -> None:
            with httpx.Client(base_url=self.api_url, headers=self.headers, timeout=self.request_timeout) as client:
                for _ in range(share):
                    self.submit_one(client, body)

        shares = [count // threads + (1 if n < count % threads else 0) for n in range(threads)]
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(worker, shares))

    def run_until(self, stop: threading.Event, threads: int, body: dict, pause: float = 0.02) -> None:
        """Submit continuously from ``threads`` clients until ``stop`` is set."""

        def worker(_: int) -> None:
            with httpx.Client(base_url=self.api_url, headers=self.headers, timeout=self.request_timeout) as client:
                while not stop.is_set():
                    self.submit_one(client, body)
                    time.sleep(pause)

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(worker, range(threads)))

    def accepted(self) -> list[str]:
        return [payload["job_id"] for status, _, payload, _ in self.answers if status == 202]

    def statuses(self) -> Counter:
        return Counter(status for status, *_ in self.answers)

    def slowest(self) -> float:
        return max((seconds for _, seconds, *_ in self.answers), default=0.0)
