"""Baseline routing policies and the clairvoyant oracle, as the simulator runs them.

Each is a faithful, small re-implementation of a well-known strategy; they all see what a
router in this system sees (the catalogue: names, costs; and the outcomes of their own calls),
and all get the same worker mechanics (failover down their order) from the harness. None of
them hedges. Failed calls that are not timeouts carry no latency information, so the
latency-learning baselines learn from successes and timeouts (a connect timeout included) only.
"""

from __future__ import annotations

import math
import random
from collections import deque
from typing import Any

from bench.sim_engine import CallOutcome, Plan, World
from bench.sim_scenarios import FLEET, Job, SimTarget
from orchestrator.error_kinds import ErrorKind

SLOW_ERRORS = frozenset({ErrorKind.TIMEOUT, ErrorKind.CONNECT_ERROR})
"""Failures whose elapsed time the baselines take as a latency (a timeout; a connect timeout on a
target that is down): the time a caller waited before it could fail over."""


def _names(fleet: tuple[SimTarget, ...] | None) -> tuple[str, ...]:
    return tuple(t.name for t in (fleet or FLEET))


def _learns_latency(outcome: CallOutcome) -> bool:
    return outcome.ok or outcome.error_kind in SLOW_ERRORS


class _Base:
    name = "base"

    def call_started(self, target: str, now: float) -> Any:
        return None

    def call_ended(self, target: str, token: Any, outcome: CallOutcome) -> None:
        return None

    def hedge_allowed(self, job: Job, now: float) -> bool:
        return False


class RandomPolicy(_Base):
    """Uniformly random order."""

    name = "random"

    def __init__(self, rng: random.Random, fleet: tuple[SimTarget, ...] | None = None) -> None:
        self.rng = rng
        self.names = _names(fleet)

    def plan(self, job: Job, now: float) -> Plan:
        order = list(self.names)
        self.rng.shuffle(order)
        return Plan(tuple(order))


class RoundRobinPolicy(_Base):
    """Each job starts one target further along the list."""

    name = "round-robin"

    def __init__(self, fleet: tuple[SimTarget, ...] | None = None) -> None:
        self.next = 0
        self.names = _names(fleet)

    def plan(self, job: Job, now: float) -> Plan:
        names = self.names
        i, self.next = self.next, (self.next + 1) % len(names)
        return Plan(names[i:] + names[:i])


class CheapestPolicy(_Base):
    """Always the cheapest target first, then the next cheapest."""

    name = "always-cheapest"

    def __init__(self, fleet: tuple[SimTarget, ...] | None = None) -> None:
        fleet = fleet or FLEET
        self.order = tuple(t.name for t in sorted(fleet, key=lambda t: t.cost_usd))

    def plan(self, job: Job, now: float) -> Plan:
        return Plan(self.order)


class LeastEwmaPolicy(_Base):
    """Lowest EWMA of observed latency first (alpha 0.3); targets never observed go first, so
    every target is tried."""

    name = "least-EWMA"
    ALPHA = 0.3

    def __init__(self, fleet: tuple[SimTarget, ...] | None = None) -> None:
        self.ewma: dict[str, float] = {}
        self.names = _names(fleet)

    def plan(self, job: Job, now: float) -> Plan:
        return Plan(tuple(sorted(self.names, key=lambda n: self.ewma.get(n, 0.0))))

    def call_ended(self, target: str, token: Any, outcome: CallOutcome) -> None:
        if _learns_latency(outcome):
            old = self.ewma.get(target)
            x = outcome.latency_ms
            self.ewma[target] = x if old is None else old + self.ALPHA * (x - old)


class PeakEwmaP2CPolicy(_Base):
    """Power of two choices over peak-EWMA load (Finagle's ``Balancers.p2cPeakEwma``, Linkerd).

    Cost of a target = peak-sensitive EWMA of latency x (outstanding calls + 1). The EWMA jumps
    up to any slower observation and decays towards faster ones with time constant 10 s
    (Finagle's default decayTime). A target never observed costs 0 when idle and a large
    penalty when busy, as in Finagle. Two distinct targets are drawn at random; the cheaper
    (in this cost) goes first.
    """

    name = "P2C peak-EWMA"
    DECAY_S = 10.0
    PENALTY = 1e9

    def __init__(self, rng: random.Random, fleet: tuple[SimTarget, ...] | None = None) -> None:
        self.rng = rng
        self.names = _names(fleet)
        self.ewma: dict[str, float] = {}
        self.stamp: dict[str, float] = {}
        self.outstanding = dict.fromkeys(self.names, 0)

    def _cost(self, name: str) -> float:
        ewma, busy = self.ewma.get(name, 0.0), self.outstanding[name]
        if ewma == 0.0 and busy:
            return self.PENALTY + busy
        return ewma * (busy + 1)

    def plan(self, job: Job, now: float) -> Plan:
        a, b = self.rng.sample(self.names, 2)
        first, second = (a, b) if self._cost(a) <= self._cost(b) else (b, a)
        rest = tuple(sorted((n for n in self.names if n not in (a, b)), key=self._cost))
        return Plan((first, second, *rest))

    def call_started(self, target: str, now: float) -> Any:
        self.outstanding[target] += 1
        return None

    def call_ended(self, target: str, token: Any, outcome: CallOutcome) -> None:
        self.outstanding[target] -= 1
        if not _learns_latency(outcome):
            return
        x, old = outcome.latency_ms, self.ewma.get(target, 0.0)
        if x > old:
            self.ewma[target] = x
        else:
            w = math.exp(-max(outcome.at - self.stamp.get(target, outcome.at), 0.0) / self.DECAY_S)
            self.ewma[target] = old * w + x * (1.0 - w)
        self.stamp[target] = outcome.at


class LiteLLMLatencyPolicy(_Base):
    """LiteLLM's ``latency-based-routing`` with its cooldowns (defaults of the LiteLLM router).

    Each deployment's latency is the mean of its last 10 successful calls
    (``max_latency_list_size``); a timeout adds a 1000 s penalty to that list; a deployment
    with no data counts as 0 ms, so it is tried first. Cooldown: more than ``allowed_fails`` = 3
    failures in the current minute, or a failure rate of 50% or more over at least 5 calls in
    it, takes a deployment out of every pick for ``cooldown_time`` = 5 s. Fallback order is by
    latency too; cooled-down deployments are used only when nothing else is left.
    """

    name = "LiteLLM latency"
    WINDOW = 10
    TIMEOUT_PENALTY_MS = 1_000_000.0
    ALLOWED_FAILS = 3
    COOLDOWN_S = 5.0

    def __init__(self, fleet: tuple[SimTarget, ...] | None = None) -> None:
        self.names = names = _names(fleet)
        self.latencies = {n: deque(maxlen=self.WINDOW) for n in names}
        self.minute = dict.fromkeys(names, -1)
        self.calls = dict.fromkeys(names, 0)
        self.fails = dict.fromkeys(names, 0)
        self.cooldown_until = dict.fromkeys(names, -1.0)

    def _latency(self, name: str) -> float:
        values = self.latencies[name]
        return sum(values) / len(values) if values else 0.0

    def plan(self, job: Job, now: float) -> Plan:
        healthy = [n for n in self.names if self.cooldown_until[n] <= now]
        cooling = [n for n in self.names if self.cooldown_until[n] > now]
        order = sorted(healthy, key=self._latency) + sorted(cooling, key=self._latency)
        return Plan(tuple(order))

    def call_ended(self, target: str, token: Any, outcome: CallOutcome) -> None:
        minute = int(outcome.at // 60)
        if self.minute[target] != minute:
            self.minute[target], self.calls[target], self.fails[target] = minute, 0, 0
        self.calls[target] += 1
        if outcome.ok:
            self.latencies[target].append(outcome.latency_ms)
            return
        self.fails[target] += 1
        if outcome.error_kind in SLOW_ERRORS:
            self.latencies[target].append(self.TIMEOUT_PENALTY_MS)
        too_many = self.fails[target] > self.ALLOWED_FAILS
        rate = self.calls[target] >= 5 and self.fails[target] / self.calls[target] >= 0.5
        if too_many or rate:
            self.cooldown_until[target] = outcome.at + self.COOLDOWN_S


class OraclePolicy(_Base):
    """Clairvoyant: knows how each call would end (success, and its latency including the
    queue) on every target, and picks the cheapest that would answer successfully by the
    deadline; if none would, the fastest that would succeed, else the fastest. The rest of its
    order (used only if its pick fails) is by that latency."""

    name = "oracle"

    def __init__(self, world: World) -> None:
        self.world = world
        self.names = tuple(world.targets)
        self.cost = {n: t.cost_usd for n, t in world.targets.items()}

    def plan(self, job: Job, now: float) -> Plan:
        seen = {n: self.world.peek(n, job, now) for n in self.names}
        left = job.deadline - now
        meets = [n for n, (ok, wait) in seen.items() if ok and wait <= left]
        if meets:
            first = min(meets, key=lambda n: (self.cost[n], seen[n][1]))
        else:
            first = min(self.names, key=lambda n: (not seen[n][0], seen[n][1]))
        rest = sorted((n for n in self.names if n != first), key=lambda n: seen[n][1])
        return Plan((first, *rest))


def catalogue(fleet: tuple[SimTarget, ...] = FLEET) -> dict[str, SimTarget]:
    return {t.name: t for t in fleet}
