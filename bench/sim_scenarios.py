"""The simulated fleet, the scenarios, and the seeded draws every policy shares.

Common random numbers: for one (scenario, seed) the job stream (arrival times, SLA classes,
budgets) and every job's latency, error and error-time draw on every target are generated up
front from their own seeded streams. Every policy is then run against exactly the same jobs and
the same target behaviour; only its choices differ.

The fleet mirrors the reference model server's tier profiles (modelreasoner/server/emulation.py) and
the catalogue's priors (orchestrator/targets.py): what a router is told about a target is the
catalogue entry, what the target really does is the profile below.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator.targets import TIER_DEFAULTS

MAX_DELAY_FACTOR = 20.0
"""A latency draw is capped at 20x the median, as in the reference model server's emulation."""
UNREACHABLE_CONNECT_S = 2.0
"""A target that is down is unreachable: the client gives up connecting after 2 s
(modelreasoner.client.CONNECT_TIMEOUT_CAP_SECONDS), or sooner if the call's timeout is shorter."""


@dataclass(frozen=True)
class SimTarget:
    """How one target really behaves (median ms, log-normal sigma, concurrent slots, error
    probability, $ per call) and its catalogue entry (prior latency ms) the routers see."""

    name: str
    median_ms: float
    sigma: float
    capacity: int
    error_rate: float
    cost_usd: float
    prior_latency_ms: float


PROFILES = {
    # tier: (median ms, log-normal sigma, error probability, slots): the reference model
    # server's tier profiles (modelreasoner/server/emulation.py)...
    "edge": (120.0, 0.35, 0.002, 2),
    "cloud": (350.0, 0.5, 0.01, 64),
    # ...except the GPU's slots: one GPU serving 4 requests at once (~64 jobs/s) where the
    # catalogue default assumes 8. Sized for the tight jobs plus headroom, not for the whole
    # load: a GPU that could take every job would make "send everything to the fastest target"
    # the answer to routing, at 8x the cost (docs/routing.md, "Benchmark").
    "gpu": (60.0, 0.25, 0.002, 4),
}


def _fleet() -> tuple[SimTarget, ...]:
    return tuple(
        SimTarget(
            name=tier,
            median_ms=median,
            sigma=sigma,
            capacity=slots,
            error_rate=errors,
            cost_usd=TIER_DEFAULTS[tier].cost_per_call_usd,
            prior_latency_ms=TIER_DEFAULTS[tier].prior_latency_ms,
        )
        for tier, (median, sigma, errors, slots) in PROFILES.items()
    )


FLEET = _fleet()
"""edge: 120 ms, 2 slots (~16 jobs/s), $0.0002; cloud: 350 ms and spiky, 64 slots (~160/s),
$0.001; gpu: 60 ms, 4 slots (~64/s), $0.004. Routers are told name, cost, slots and the
catalogue's prior latency (150/400/80 ms), never the true profile."""

RATE = 60.0
"""Jobs per second in every scenario: 94% of the GPU's capacity, 4x the edge box's, 20% of
the whole fleet's. No single target can take the load, but the fleet can, comfortably."""


@dataclass(frozen=True)
class SlaClass:
    """A share of the job stream with one SLA (ms) and an optional per-job budget ($)."""

    sla_ms: float
    share: float
    budget_usd: float | None = None


STANDARD_MIX = (SlaClass(300.0, 0.3), SlaClass(2000.0, 0.5), SlaClass(10000.0, 0.2))
"""Triage answers wanted in 300 ms, interactive screenings in 2 s, batch reviews in 10 s."""


@dataclass(frozen=True)
class Effect:
    """A change of one target's behaviour in [start, end) seconds of simulated time."""

    target: str
    start: float
    end: float
    latency_x: float = 1.0
    error_rate: float | None = None
    down: bool = False


@dataclass(frozen=True)
class Scenario:
    """One workload: Poisson arrivals at ``rate`` jobs/s (plus an optional surge of one SLA
    class), an SLA mix, and effects on the targets (fixed, or drawn per seed by ``make_effects``)."""

    name: str
    title: str
    rate: float
    mix: tuple[SlaClass, ...] = STANDARD_MIX
    duration_s: float = 200.0
    warmup_s: float = 20.0
    effects: tuple[Effect, ...] = ()
    make_effects: Callable[[random.Random], tuple[Effect, ...]] | None = None
    surge: tuple[float, float, float, float, float] | None = None
    """(start s, full from s, end s, extra jobs/s at full, SLA ms of the surge jobs)."""
    notes: str = ""

    def effects_for(self, seed: int) -> tuple[Effect, ...]:
        if self.make_effects is None:
            return self.effects
        return self.effects + self.make_effects(random.Random(f"{seed}:{self.name}:effects"))


def _flapping(rng: random.Random) -> tuple[Effect, ...]:
    """Edge up for 10-25 s, then unreachable for 5-12 s, from t=40 s to t=160 s."""
    effects, t = [], 40.0
    while t < 160.0:
        t += rng.uniform(10.0, 25.0)
        down = rng.uniform(5.0, 12.0)
        if t < 160.0:
            effects.append(Effect("edge", t, min(t + down, 160.0), down=True))
        t += down
    return tuple(effects)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "steady",
            "Steady mixed load",
            rate=RATE,
            notes="60 jobs/s, 30% with a 300 ms SLA, 50% 2 s, 20% 10 s; targets behave as profiled.",
        ),
        Scenario(
            "brownout",
            "Cloud brownout",
            rate=RATE,
            effects=(Effect("cloud", 60.0, 120.0, latency_x=5.0, error_rate=0.3),),
            notes="cloud answers 5x slower and fails 30% of calls from t=60 s to t=120 s.",
        ),
        Scenario(
            "gpu_saturation",
            "GPU saturation",
            rate=RATE,
            surge=(60.0, 90.0, 120.0, 40.0, 300.0),
            notes="a surge of 300 ms jobs ramps from 0 to +40/s (t=60-90 s) and holds to t=120 s: 58 "
            "tight jobs/s against the GPU's ~64/s, so it queues unless the edge box takes its share.",
        ),
        Scenario(
            "edge_flapping",
            "Edge flapping",
            rate=RATE,
            make_effects=_flapping,
            notes="edge is unreachable for 5-12 s after every 10-25 s up, t=40-160 s (connects time out at 2 s).",
        ),
        Scenario(
            "gray_failure",
            "Gray failure",
            rate=RATE,
            effects=(Effect("edge", 60.0, 140.0, latency_x=4.0),),
            notes="edge answers every call, but 4x slower, from t=60 s to t=140 s.",
        ),
        Scenario(
            "cost_pressure",
            "Cost pressure",
            rate=RATE,
            mix=(SlaClass(300.0, 0.3, 0.004), SlaClass(2000.0, 0.5, 0.001), SlaClass(10000.0, 0.2, 0.0005)),
            notes="every job carries a budget: $0.004 (300 ms), $0.001 (2 s), $0.0005 (10 s).",
        ),
    )
}


@dataclass(frozen=True)
class Job:
    index: int
    arrival: float
    sla_ms: float
    budget_usd: float | None

    @property
    def deadline(self) -> float:
        return self.arrival + self.sla_ms / 1000.0


@dataclass
class Draws:
    """Per target, per job: standard-normal latency draw, uniform error draw, and the fraction
    of the latency after which a failing call answers with its error."""

    z: list[float] = field(default_factory=list)
    u_error: list[float] = field(default_factory=list)
    error_frac: list[float] = field(default_factory=list)


def _arrivals(rng: random.Random, rate: Callable[[float], float], peak: float, start: float, end: float) -> list[float]:
    """Non-homogeneous Poisson arrivals by thinning a rate-``peak`` process."""
    times, t = [], start
    while True:
        t += rng.expovariate(peak)
        if t >= end:
            return times
        if rng.random() * peak <= rate(t):
            times.append(t)


def _surge_rate(surge: tuple[float, float, float, float, float]) -> Callable[[float], float]:
    start, full, end, extra, _ = surge

    def rate(t: float) -> float:
        if t < start or t >= end:
            return 0.0
        return extra * min((t - start) / max(full - start, 1e-9), 1.0)

    return rate


def make_jobs(scenario: Scenario, seed: int) -> list[Job]:
    """The job stream of ``scenario`` for ``seed``, ordered by arrival."""
    rng = random.Random(f"{seed}:{scenario.name}:jobs")
    base = _arrivals(rng, lambda t: scenario.rate, scenario.rate, 0.0, scenario.duration_s)
    shares = [c.share for c in scenario.mix]
    entries = [(t, rng.choices(scenario.mix, weights=shares)[0]) for t in base]
    if scenario.surge:
        surge_rng = random.Random(f"{seed}:{scenario.name}:surge")
        rate = _surge_rate(scenario.surge)
        sla = scenario.surge[4]
        cls = next((c for c in scenario.mix if c.sla_ms == sla), SlaClass(sla, 0.0))
        entries += [(t, cls) for t in _arrivals(surge_rng, rate, scenario.surge[3], 0.0, scenario.duration_s)]
    entries.sort(key=lambda e: e[0])
    return [Job(i, t, c.sla_ms, c.budget_usd) for i, (t, c) in enumerate(entries)]


def make_draws(scenario: Scenario, seed: int, n_jobs: int) -> dict[str, Draws]:
    """Each target's draws for jobs 0..n_jobs-1, from a stream of its own."""
    draws = {}
    for target in FLEET:
        rng = random.Random(f"{seed}:{scenario.name}:{target.name}")
        d = Draws()
        for _ in range(n_jobs):
            d.z.append(rng.gauss(0.0, 1.0))
            d.u_error.append(rng.random())
            d.error_frac.append(rng.uniform(0.1, 1.0))
        draws[target.name] = d
    return draws


@dataclass(frozen=True)
class Condition:
    """A target's behaviour at one instant: latency multiplier, error probability, reachability."""

    latency_x: float
    error_rate: float
    down: bool


def condition(target: SimTarget, effects: tuple[Effect, ...], t: float) -> Condition:
    latency_x, error_rate, down = 1.0, target.error_rate, False
    for e in effects:
        if e.target == target.name and e.start <= t < e.end:
            latency_x *= e.latency_x
            error_rate = e.error_rate if e.error_rate is not None else error_rate
            down = down or e.down
    return Condition(latency_x, error_rate, down)


def service_ms(target: SimTarget, cond: Condition, z: float) -> float:
    """The time the server needs for one request under ``cond`` (ms), capped like the emulation."""
    median = target.median_ms * cond.latency_x
    return median * min(math.exp(target.sigma * z), MAX_DELAY_FACTOR)
