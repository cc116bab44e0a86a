"""Generated routing scenarios: a documented space of fleets, latency shapes, failures and loads.

``draw_scenario(index)`` turns a scenario number into one point of the space below,
deterministically (the number is the seed of its own stream), so "scenario 137" means the same
thing on every machine and anyone can rerun it: ``python -m bench.routing_generated --only 137``.
``GenWorld`` is the simulator's ``World`` with the generated behaviour; the job stream and every
job's draws on every target come from their own seeded streams (common random numbers: every
policy faces the same jobs and the same target behaviour).

The space (every range is uniform unless it says otherwise):

* **Fleet**: 2-8 targets, each of a tier drawn from ``TIERS`` (edge: fast-ish, cheap, few
  slots; cpu: slow, cheap; cloud: slow, spiky, mid-price, many slots; gpu: fast, dear, few
  slots), with median, spread, error rate and price drawn within the tier's ranges. Slots are
  scaled so that the base load uses 30-85% of the fleet's total throughput.
* **Latency shape** per target: log-normal (50%); heavy-tailed (25%: a log-normal body with a
  2-10% Pareto tail, alpha 1.2-2.5, starting at 3x the median); bimodal (25%: 10-40% of calls in
  a slow mode 3-8x the fast one).
* **Events** (0-3 per scenario, starting at 6-22 s): level shift (one target 2-6x slower, or
  2-3x faster, from then on), slow drift (a target slows 2-5x over 8-15 s and stays slow),
  flapping (down 1-4 s after every 3-8 s up), cold start (down 1-3 s, then 3-10x slower fading
  out over 3-8 s), gray failure (2-5x slower and 2-10% errors for 8-15 s), error burst (30-90%
  errors for 2-6 s), correlated degradation (2-3 targets 1.5-4x slower with 0-10% errors at
  once, for 5-12 s).
* **Load**: Poisson, 15-40 jobs/s; in 30% of scenarios a ramp of one SLA class to 1.05-1.3x the
  fleet's total throughput over 3-6 s (from 8-18 s), held 2-6 s.
* **SLA mix**: 2-3 classes of tight (200-500 ms, and at least 3x the fastest target's median),
  medium (1-3 s) and loose (5-15 s), with random shares (each at least 10% before
  normalising). No budgets (the public ``cost_pressure`` scenario has them).
* **What the router is told** (catalogue): the true price; the prior latency right (within
  0.8-1.25x, 50%), wrong (0.25-4x, log-uniform, 30%) or unknown (the 200 ms default, 20%);
  the slot count right (70%) or half / double the truth (30%).

Runs are 30 s, of which the first 5 s are not counted (short, so that 200 scenarios x 3 seeds x
8 policies fit in minutes on a shared 2-core machine; the public scenarios run 200 s).
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass

from bench.sim_engine import World
from bench.sim_scenarios import Condition, Job, SimTarget, SlaClass, _arrivals, _surge_rate
from orchestrator.routing import Target

DURATION_S = 30.0
WARMUP_S = 5.0
MAX_DELAY_FACTOR = 50.0
"""A latency draw is capped at 50x the target's median (the heavy tails need room)."""
MAX_RATE = 100.0
"""Jobs per second at the top of a ramp: bounds the simulation's cost."""

TIERS = {
    # tier: (median ms, log-normal sigma, slots, $ per call, error probability) ranges
    "edge": ((60.0, 200.0), (0.2, 0.5), (1, 4), (0.0001, 0.0004), (0.0, 0.01)),
    "cpu": ((300.0, 900.0), (0.2, 0.6), (4, 16), (0.0001, 0.0005), (0.0, 0.01)),
    "cloud": ((200.0, 600.0), (0.3, 0.7), (8, 48), (0.0006, 0.002), (0.0, 0.02)),
    "gpu": ((30.0, 120.0), (0.15, 0.4), (2, 8), (0.002, 0.008), (0.0, 0.01)),
}
SHAPES = ("lognormal", "lognormal", "heavy", "bimodal")
EVENT_KINDS = ("shift", "drift", "flap", "cold", "gray", "errors", "correlated")


@dataclass(frozen=True)
class GenTarget(SimTarget):
    """A generated target: ``SimTarget`` plus its tier, latency shape and catalogue entry.

    ``shape``: lognormal; heavy (a share ``mode_p`` of calls from a Pareto tail with index
    ``tail_alpha`` starting at ``mode_x`` x the median); bimodal (a share ``mode_p`` of calls
    ``mode_x`` x slower). ``told_prior_ms`` (None: not told) and ``told_capacity`` are what
    the catalogue says."""

    tier: str = "edge"
    shape: str = "lognormal"
    mode_p: float = 0.0
    mode_x: float = 1.0
    tail_alpha: float = 2.0
    told_prior_ms: float | None = None
    told_capacity: int = 1

    def mean_service_s(self) -> float:
        body = self.median_ms * math.exp(self.sigma**2 / 2.0) / 1000.0
        if self.shape == "bimodal":
            return body * (1.0 - self.mode_p + self.mode_p * self.mode_x)
        if self.shape == "heavy":
            tail = self.mode_x * self.tail_alpha / max(self.tail_alpha - 1.0, 0.2) * self.median_ms / 1000.0
            return body * (1.0 - self.mode_p) + self.mode_p * tail
        return body


@dataclass(frozen=True)
class GenEffect:
    """One target's change in [start, end): latency x ``latency_x`` (``ramp``: "step", "up" from
    1 to x over the window then held to the end of the run, "down" from x to 1 over the window),
    an error probability, or unreachable."""

    target: str
    start: float
    end: float
    latency_x: float = 1.0
    ramp: str = "step"
    error_rate: float | None = None
    down: bool = False

    def active(self, t: float) -> bool:
        end = math.inf if self.ramp == "up" else self.end
        return self.start <= t < end

    def factor(self, t: float) -> float:
        if self.ramp == "step":
            return self.latency_x
        frac = min((t - self.start) / max(self.end - self.start, 1e-9), 1.0)
        if self.ramp == "down":
            frac = 1.0 - frac
        return 1.0 + (self.latency_x - 1.0) * frac


@dataclass(frozen=True)
class GenScenario:
    """One generated scenario: its number, fleet, SLA mix, load and events."""

    index: int
    fleet: tuple[GenTarget, ...]
    mix: tuple[SlaClass, ...]
    rate: float
    effects: tuple[GenEffect, ...]
    events: tuple[str, ...]
    surge: tuple[float, float, float, float, float] | None = None
    duration_s: float = DURATION_S
    warmup_s: float = WARMUP_S

    @property
    def name(self) -> str:
        return f"gen-{self.index}"

    def catalogue(self) -> list[Target]:
        """What the router is told about the fleet."""
        out = []
        for t in self.fleet:
            prior = {} if t.told_prior_ms is None else {"prior_latency_ms": t.told_prior_ms}
            out.append(
                Target(
                    t.name,
                    t.tier,
                    url=f"sim://{t.name}",
                    cost_per_call_usd=t.cost_usd,
                    capacity=t.told_capacity,
                    **prior,
                )
            )
        return out

    def describe(self) -> dict:
        """The parameters, for the report (enough to see what the scenario is; rerun by index)."""
        return {
            "index": self.index,
            "rate": round(self.rate, 1),
            "surge": self.surge,
            "mix": [(c.sla_ms, round(c.share, 2)) for c in self.mix],
            "events": list(self.events),
            "fleet": [
                {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(t).items() if k != "error_frac"}
                for t in self.fleet
            ],
            "effects": [asdict(e) for e in self.effects],
        }


def _target(rng: random.Random, name: str, tier: str) -> GenTarget:
    (m_lo, m_hi), (s_lo, s_hi), (c_lo, c_hi), (p_lo, p_hi), (e_lo, e_hi) = TIERS[tier]
    median = math.exp(rng.uniform(math.log(m_lo), math.log(m_hi)))
    shape = rng.choice(SHAPES)
    mode_p, mode_x, alpha = 0.0, 1.0, 2.0
    if shape == "heavy":
        mode_p, mode_x, alpha = rng.uniform(0.02, 0.1), 3.0, rng.uniform(1.2, 2.5)
    elif shape == "bimodal":
        mode_p, mode_x = rng.uniform(0.1, 0.4), rng.uniform(3.0, 8.0)
    prior_kind = rng.random()
    if prior_kind < 0.5:
        told_prior: float | None = median * rng.uniform(0.8, 1.25)
    elif prior_kind < 0.8:
        told_prior = median * math.exp(rng.uniform(math.log(0.25), math.log(4.0)))
    else:
        told_prior = None
    return GenTarget(
        name=name,
        median_ms=median,
        sigma=rng.uniform(s_lo, s_hi),
        capacity=rng.randint(c_lo, c_hi),
        error_rate=rng.uniform(e_lo, e_hi),
        cost_usd=round(rng.uniform(p_lo, p_hi), 6),
        prior_latency_ms=told_prior or 200.0,
        tier=tier,
        shape=shape,
        mode_p=mode_p,
        mode_x=mode_x,
        tail_alpha=alpha,
        told_prior_ms=told_prior,
    )


def _scaled(rng: random.Random, fleet: list[GenTarget], rate: float) -> tuple[GenTarget, ...]:
    """Slots scaled so the base load uses 30-85% of the fleet's throughput; the catalogue's
    slot count is right in 70% of targets, else half or double the truth."""
    throughput = sum(t.capacity / t.mean_service_s() for t in fleet)
    factor = rate / rng.uniform(0.3, 0.85) / throughput
    out = []
    for t in fleet:
        slots = max(1, round(t.capacity * factor))
        told = slots if rng.random() < 0.7 else max(1, round(slots * rng.choice((0.5, 2.0))))
        out.append(GenTarget(**{**asdict(t), "capacity": slots, "told_capacity": told}))
    return tuple(out)


def _mix(rng: random.Random, fastest_ms: float) -> tuple[SlaClass, ...]:
    """2-3 classes; a tight SLA is at least 3x the fastest target's median (else no router can
    meet it and the class only measures the fleet)."""
    kinds = rng.sample([(200.0, 500.0), (1000.0, 3000.0), (5000.0, 15000.0)], rng.choice((2, 3)))
    weights = [rng.uniform(0.1, 1.0) for _ in kinds]
    total = sum(weights)
    return tuple(
        SlaClass(float(round(max(rng.uniform(lo, hi), 3.0 * fastest_ms), -1)), w / total)
        for (lo, hi), w in sorted(zip(kinds, weights, strict=True))
    )


def _event(rng: random.Random, kind: str, names: list[str]) -> list[GenEffect]:
    start = rng.uniform(6.0, 22.0)
    one = rng.choice(names)
    if kind == "shift":
        x = rng.uniform(2.0, 6.0) if rng.random() < 0.7 else 1.0 / rng.uniform(2.0, 3.0)
        return [GenEffect(one, start, DURATION_S, latency_x=x)]
    if kind == "drift":
        return [GenEffect(one, start, start + rng.uniform(8.0, 15.0), latency_x=rng.uniform(2.0, 5.0), ramp="up")]
    if kind == "flap":
        out, t = [], start
        while t < DURATION_S:
            down = rng.uniform(1.0, 4.0)
            out.append(GenEffect(one, t, min(t + down, DURATION_S), down=True))
            t += down + rng.uniform(3.0, 8.0)
        return out
    if kind == "cold":
        down = rng.uniform(1.0, 3.0)
        fade = rng.uniform(3.0, 8.0)
        return [
            GenEffect(one, start, start + down, down=True),
            GenEffect(one, start + down, start + down + fade, latency_x=rng.uniform(3.0, 10.0), ramp="down"),
        ]
    if kind == "gray":
        x, err = rng.uniform(2.0, 5.0), rng.uniform(0.02, 0.1)
        return [GenEffect(one, start, start + rng.uniform(8.0, 15.0), latency_x=x, error_rate=err)]
    if kind == "errors":
        return [GenEffect(one, start, start + rng.uniform(2.0, 6.0), error_rate=rng.uniform(0.3, 0.9))]
    hit = rng.sample(names, min(len(names), rng.choice((2, 3))))
    end, x, err = start + rng.uniform(5.0, 12.0), rng.uniform(1.5, 4.0), rng.uniform(0.0, 0.1)
    return [GenEffect(n, start, end, latency_x=x, error_rate=err) for n in hit]


def draw_scenario(index: int) -> GenScenario:
    """Scenario number ``index`` of the space (deterministic)."""
    rng = random.Random(f"routing-gen:{index}")
    tiers = [rng.choice(tuple(TIERS)) for _ in range(rng.randint(2, 8))]
    raw = [_target(rng, f"{tier}-{i}", tier) for i, tier in enumerate(tiers)]
    rate = rng.uniform(15.0, 40.0)
    fleet = _scaled(rng, raw, rate)
    mix = _mix(rng, min(t.median_ms for t in fleet))
    names = [t.name for t in fleet]
    kinds = [rng.choice(EVENT_KINDS) for _ in range(rng.randint(0, 3))]
    effects = tuple(e for kind in kinds for e in _event(rng, kind, names))
    surge = None
    if rng.random() < 0.3:
        throughput = sum(t.capacity / t.mean_service_s() for t in fleet)
        extra = min(max(rng.uniform(1.05, 1.3) * throughput - rate, 5.0), MAX_RATE - rate)
        start = rng.uniform(8.0, 18.0)
        full = start + rng.uniform(3.0, 6.0)
        surge = (start, full, full + rng.uniform(2.0, 6.0), extra, rng.choice(mix).sla_ms)
        kinds.append("ramp")
    return GenScenario(index, fleet, mix, rate, effects, tuple(kinds), surge)


@dataclass
class GenDraws:
    """Per target, per job: the latency draws (normal body, mode choice, tail), the error draw
    and the fraction of the latency after which a failing call answers."""

    z: list[float]
    u_mode: list[float]
    u_tail: list[float]
    u_error: list[float]
    error_frac: list[float]


def make_draws(scenario: GenScenario, seed: int, n_jobs: int) -> dict[str, GenDraws]:
    draws = {}
    for t in scenario.fleet:
        rng = random.Random(f"{seed}:{scenario.name}:{t.name}")
        cols: list[list[float]] = [[], [], [], [], []]
        for _ in range(n_jobs):
            cols[0].append(rng.gauss(0.0, 1.0))
            cols[1].append(rng.random())
            cols[2].append(rng.random())
            cols[3].append(rng.random())
            cols[4].append(rng.uniform(0.1, 1.0))
        draws[t.name] = GenDraws(*cols)
    return draws


def make_jobs(scenario: GenScenario, seed: int) -> list[Job]:
    """Poisson arrivals at ``rate`` plus the optional ramp of one class, ordered by arrival."""
    rng = random.Random(f"{seed}:{scenario.name}:jobs")
    base = _arrivals(rng, lambda t: scenario.rate, scenario.rate, 0.0, scenario.duration_s)
    shares = [c.share for c in scenario.mix]
    entries = [(t, rng.choices(scenario.mix, weights=shares)[0].sla_ms) for t in base]
    if scenario.surge:
        surge_rng = random.Random(f"{seed}:{scenario.name}:surge")
        arrivals = _arrivals(surge_rng, _surge_rate(scenario.surge), scenario.surge[3], 0.0, scenario.duration_s)
        entries += [(t, scenario.surge[4]) for t in arrivals]
    entries.sort()
    return [Job(i, t, sla, None) for i, (t, sla) in enumerate(entries)]


class GenWorld(World):
    """The simulator's world with generated latency shapes and time-varying effects."""

    def __init__(self, scenario: GenScenario, draws: dict[str, GenDraws]) -> None:
        super().__init__(draws, (), scenario.fleet)  # type: ignore[arg-type]
        self.by_target = {t.name: [e for e in scenario.effects if e.target == t.name] for t in scenario.fleet}

    def condition(self, target: SimTarget, now: float) -> Condition:
        latency_x, error_rate, down = 1.0, target.error_rate, False
        for e in self.by_target[target.name]:
            if e.active(now):
                latency_x *= e.factor(now)
                error_rate = e.error_rate if e.error_rate is not None else error_rate
                down = down or e.down
        return Condition(latency_x, error_rate, down)

    def service_s(self, target: SimTarget, cond: Condition, i: int) -> float:
        t: GenTarget = target  # type: ignore[assignment]
        d = self.draws[t.name]
        x = math.exp(t.sigma * d.z[i])
        if t.shape == "bimodal" and d.u_mode[i] < t.mode_p:
            x *= t.mode_x
        elif t.shape == "heavy" and d.u_mode[i] < t.mode_p:
            x = t.mode_x * (1.0 - d.u_tail[i]) ** (-1.0 / t.tail_alpha)
        return t.median_ms * cond.latency_x * min(x, MAX_DELAY_FACTOR) / 1000.0
