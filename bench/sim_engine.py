"""The discrete-event harness: every policy runs the same worker mechanics in simulated time.

It mirrors modelreasoner/dispatch.py: a job is routed once on arrival, called with a timeout of
min(10 s, time left) (never under 0.5 s), failed over down the policy's order on any error, and
(for a policy that hedges) given one backup call when its first call is late. A call that loses
a hedge race is not cancelled at the server: it runs to its end, its outcome is fed back, and it
is billed. Targets are FIFO servers with ``capacity`` slots, so latency grows with queueing.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any, Protocol

from bench.sim_scenarios import (
    FLEET,
    UNREACHABLE_CONNECT_S,
    Condition,
    Draws,
    Effect,
    Job,
    SimTarget,
    condition,
    service_ms,
)
from orchestrator.error_kinds import COST_BEARING, ErrorKind

ROUTING_TIMEOUT_S = 10.0
"""The worker's per-call timeout ceiling (ROUTING_TIMEOUT_SECONDS default)."""
MIN_CALL_TIMEOUT_S = 0.5
"""The floor for a late non-strict job's call (orchestrator.constants.MIN_CALL_TIMEOUT_SECONDS)."""
COST_BEARING_ERRORS = COST_BEARING
"""Failed calls that reached the server and are billed: the worker's set (``ErrorKind``'s
``COST_BEARING``, which modelreasoner/calls.py bills); a success is billed too."""


def billed(target: SimTarget, kind: ErrorKind | None) -> float:
    """What one call costs: its target's price when it succeeded or failed in a cost-bearing way."""
    return target.cost_usd if kind is None or kind in COST_BEARING_ERRORS else 0.0


@dataclass(frozen=True)
class Plan:
    """A policy's answer for one job: the call order, and optionally when (s after the first
    call starts) and where to send a backup call."""

    order: tuple[str, ...]
    run: bool = True
    hedge: tuple[float, str] | None = None


@dataclass(frozen=True)
class CallOutcome:
    target: str
    ok: bool
    latency_ms: float
    at: float
    error_kind: ErrorKind | None
    cost_usd: float


class Policy(Protocol):
    name: str

    def plan(self, job: Job, now: float) -> Plan: ...

    def call_started(self, target: str, now: float) -> Any: ...

    def call_ended(self, target: str, token: Any, outcome: CallOutcome) -> None: ...

    def hedge_allowed(self, job: Job, now: float) -> bool: ...


class World:
    """The targets' real behaviour: FIFO slots, the scenario's effects, the shared draws."""

    def __init__(self, draws: dict[str, Draws], effects: tuple[Effect, ...], fleet: tuple[SimTarget, ...] = FLEET):
        self.targets = {t.name: t for t in fleet}
        self.draws = draws
        self.effects = effects
        self.slots = {t.name: [0.0] * t.capacity for t in fleet}

    def _response(self, name: str, job: Job, now: float) -> tuple[float, bool, float]:
        """(seconds until the server answers, whether it fails, when its slot frees up)."""
        target, d = self.targets[name], self.draws[name]
        cond = self.condition(target, now)
        if cond.down:
            return UNREACHABLE_CONNECT_S, False, -1.0
        i = job.index
        busy = self.service_s(target, cond, i)
        fails = d.u_error[i] < cond.error_rate
        if fails:
            busy *= d.error_frac[i]
        start = max(now, self.slots[name][0])
        return start + busy - now, fails, start + busy

    def condition(self, target: SimTarget, now: float) -> Condition:
        """The target's behaviour at ``now`` (generated worlds override this)."""
        return condition(target, self.effects, now)

    def service_s(self, target: SimTarget, cond: Condition, i: int) -> float:
        """Seconds the server needs for job ``i`` under ``cond`` (generated worlds override this)."""
        return service_ms(target, cond, self.draws[target.name].z[i]) / 1000.0

    def peek(self, name: str, job: Job, now: float) -> tuple[bool, float]:
        """(would succeed, seconds until it answers) for a call made now: what a clairvoyant
        oracle knows. Nothing is changed."""
        wait, fails, slot_free = self._response(name, job, now)
        return (not fails and slot_free >= 0), wait

    def call(self, name: str, job: Job, now: float, timeout_s: float) -> CallOutcome:
        """Make the call: occupy a slot and return how it ends, as the client sees it."""
        wait, fails, slot_free = self._response(name, job, now)
        target = self.targets[name]
        if slot_free < 0:
            # httpx raises ConnectTimeout (whichever of the connect and call timeouts is shorter
            # fires), which the client classifies as connect_error: nothing is billed.
            elapsed = min(wait, timeout_s)
            kind = ErrorKind.CONNECT_ERROR
            return CallOutcome(name, False, elapsed * 1000.0, now + elapsed, kind, billed(target, kind))
        heapq.heapreplace(self.slots[name], slot_free)
        if wait > timeout_s:
            return CallOutcome(
                name, False, timeout_s * 1000.0, now + timeout_s, ErrorKind.TIMEOUT, billed(target, ErrorKind.TIMEOUT)
            )
        kind = ErrorKind.HTTP_5XX if fails else None
        return CallOutcome(name, not fails, wait * 1000.0, now + wait, kind, billed(target, kind))


@dataclass
class JobRecord:
    """What happened to one job, for the metrics."""

    job: Job
    first: str | None = None
    winner: str | None = None
    success_at: float | None = None
    end_at: float | None = None
    cost_usd: float = 0.0
    calls: int = 0
    hedged: bool = False

    @property
    def on_time(self) -> bool:
        return self.success_at is not None and self.success_at <= self.job.deadline + 1e-9


@dataclass
class _State:
    record: JobRecord
    order: list[str]
    tried: set[str] = field(default_factory=set)
    pending: int = 0
    done: bool = False


def call_timeout(job: Job, now: float) -> float:
    return min(ROUTING_TIMEOUT_S, max(job.deadline - now, MIN_CALL_TIMEOUT_S))


class Harness:
    """Runs one policy over one job stream in one world; ``run`` returns the job records."""

    _ARRIVE, _END, _HEDGE = 0, 1, 2

    def __init__(self, policy: Policy, world: World, jobs: list[Job]) -> None:
        self.policy = policy
        self.world = world
        self.jobs = jobs
        self.events: list[tuple[float, int, int, Any]] = []
        self._seq = 0
        self.records = [JobRecord(job) for job in jobs]
        self.hedges = 0

    def _push(self, at: float, kind: int, data: Any) -> None:
        self._seq += 1
        heapq.heappush(self.events, (at, self._seq, kind, data))

    def run(self) -> list[JobRecord]:
        for job in self.jobs:
            self._push(job.arrival, self._ARRIVE, job)
        while self.events:
            now, _, kind, data = heapq.heappop(self.events)
            if kind == self._ARRIVE:
                self._arrive(data, now)
            elif kind == self._END:
                self._end(*data)
            else:
                self._hedge(data, now)
        return self.records

    def _arrive(self, job: Job, now: float) -> None:
        plan = self.policy.plan(job, now)
        state = _State(self.records[job.index], list(plan.order))
        if not plan.run or not plan.order:
            state.record.end_at = now
            self._job_ended(state.record)
            return
        state.record.first = plan.order[0]
        self._start(state, plan.order[0], now)
        if plan.hedge is not None:
            delay, backup = plan.hedge
            self._push(now + delay, self._HEDGE, (state, backup))

    def _job_ended(self, record: JobRecord) -> None:
        """Tell a policy that learns from whole jobs (``job_ended``) how this one ended."""
        hook = getattr(self.policy, "job_ended", None)
        if hook is not None:
            hook(record.job, record.on_time, record.end_at)

    def _start(self, state: _State, target: str, now: float) -> None:
        job = state.record.job
        state.tried.add(target)
        state.pending += 1
        state.record.calls += 1
        token = self.policy.call_started(target, now)
        outcome = self.world.call(target, job, now, call_timeout(job, now))
        self._push(outcome.at, self._END, (state, token, outcome))

    def _hedge(self, data: tuple[_State, str], now: float) -> None:
        state, backup = data
        if state.done or state.pending == 0 or backup in state.tried:
            return
        if not self.policy.hedge_allowed(state.record.job, now):
            return
        self.hedges += 1
        state.record.hedged = True
        self._start(state, backup, now)

    def _end(self, state: _State, token: Any, outcome: CallOutcome) -> None:
        state.pending -= 1
        record = state.record
        record.cost_usd += outcome.cost_usd
        self.policy.call_ended(outcome.target, token, outcome)
        if state.done:
            return
        if outcome.ok:
            state.done = True
            record.winner, record.success_at, record.end_at = outcome.target, outcome.at, outcome.at
            self._job_ended(record)
            return
        if state.pending:
            return  # the other (hedged) call may still win
        nxt = next((t for t in state.order if t not in state.tried), None)
        if nxt is None:
            state.done = True
            record.end_at = outcome.at
            self._job_ended(record)
            return
        self._start(state, nxt, outcome.at)
