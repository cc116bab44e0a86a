"""A fixed battery of routing decisions, each written out in full, for proving that a change to
the policy's code (a speed-up, a refactor) changes no decision.

Two sources: synthetic scenes (fleets of 1 to 120 targets in every state the policy
distinguishes, several configs, jobs with budgets, strict SLAs, preferred targets and
exploration draws) and every decision our router makes in a short run of the simulator's
brownout and flapping scenarios at fixed seeds (stats learned from the simulated calls).

``python -m tests.support.decision_battery OUT`` writes one line per decision (``repr`` of every
field of the Decision and of its candidates): run it on two commits and ``cmp`` the files.
``digests()`` condenses the lines per source for the recorded test
(tests/unit/test_routing_decisions_recorded.py); ``python -m tests.support.decision_battery
--record`` rewrites its record, RECORD, after a change meant to change decisions.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from collections.abc import Iterator
from dataclasses import fields, replace
from pathlib import Path

from orchestrator.routing import (
    CircuitState,
    Decision,
    Outcome,
    RouteRequest,
    RoutingConfig,
    SloClassStats,
    Target,
    TargetStats,
    decide,
    hedge_plan,
    observe,
)

NOW = 1_700_000_000.0
RECORD = Path(__file__).parent / "decision_battery.json"
CONFIGS = (
    RoutingConfig(),
    RoutingConfig(slo_objectives=((500.0, 0.99), (3000.0, 0.95)), slo_default_objective=0.9),
    RoutingConfig(tail_quantile=True, stall_detection=False, circuit_probe_all_open=True),
    RoutingConfig(slo_default_objective=0.97, circuit_open_probe=False, probe_share=0.3, max_error_rate=0.05),
)
TIERS = (("edge", 0.0002, 2, 150.0), ("cloud", 0.001, 64, 400.0), ("gpu", 0.004, 8, 80.0))


def canonical(decision: Decision) -> str:
    """Every field of ``decision`` and of each candidate, floats in full (``repr``)."""
    head = [repr(getattr(decision, f.name)) for f in fields(decision) if f.name not in ("candidates", "hints")]
    head.append(repr(sorted(decision.hints.items())))
    rows = [repr(tuple(getattr(c, f.name) for f in fields(c))) for c in decision.candidates]
    return "|".join(head + rows)


def _learned(rng: random.Random, median: float, sigma: float, error_rate: float, start: float) -> TargetStats:
    stats = TargetStats()
    for i in range(rng.randint(1, 40)):
        ok = rng.random() >= error_rate
        latency = median * rng.lognormvariate(0.0, sigma)
        stats = observe(stats, Outcome("t", ok, latency, start + i * 0.5, None if ok else "http_5xx"))
    return stats


def _stats(rng: random.Random, capacity: int, prior: float) -> TargetStats:
    kind = rng.random()
    if kind < 0.08:
        return TargetStats()
    errors = rng.choice((0.0, 0.01, 0.1, 0.5))
    s = _learned(rng, prior * rng.uniform(0.5, 3.0), rng.uniform(0.1, 1.0), errors, NOW - rng.choice((60.0, 15.0)))
    if kind < 0.18:
        s = replace(s, circuit=CircuitState.OPEN, circuit_until=NOW + rng.uniform(-5.0, 20.0), open_count=1)
    elif kind < 0.25:
        s = replace(s, circuit=CircuitState.HALF_OPEN, circuit_until=NOW - 1.0, open_count=1)
    elif kind < 0.35:
        s = replace(s, updated_at=NOW - rng.uniform(10.0, 120.0), last_call_at=NOW - rng.uniform(10.0, 120.0))
    if rng.random() < 0.2:
        s = replace(s, tail_z95=rng.uniform(1.0, 4.0))
    busy = rng.choice((0, rng.randint(0, capacity + 4)))
    if busy:
        s = replace(s, in_flight=busy, oldest_in_flight_at=NOW - rng.choice((0.01, 0.3, 5.0)))
    if rng.random() < 0.35:
        s = replace(
            s,
            telemetry_at=NOW - rng.choice((1.0, 100.0)),
            telemetry_latency_ms=rng.choice((None, prior)),
            telemetry_utilization=rng.choice((None, rng.random())),
            telemetry_queue_depth=rng.choice((None, 0, 3)),
            telemetry_up=rng.choice((None, True, True, False)),
        )
    return s


def _scene(rng: random.Random) -> tuple[list[Target], dict[str, TargetStats]]:
    size = rng.choice((1, 2, 3, 3, 5, 12, 40, 120))
    targets, stats = [], {}
    for i in range(size):
        tier, cost, capacity, prior = TIERS[rng.randrange(3)]
        name = f"{tier}-{i}"
        targets.append(
            Target(
                name,
                tier,
                cost_per_call_usd=rng.choice((cost, cost * rng.uniform(0.8, 1.2))),
                capacity=rng.choice((capacity, 1)),
                prior_latency_ms=prior,
                enabled=rng.random() > 0.05,
            )
        )
        if rng.random() > 0.05:  # else: no stats at all
            stats[name] = _stats(rng, capacity, prior)
    return targets, stats


def _request(rng: random.Random, index: int, targets: list[Target]) -> RouteRequest:
    preferred = rng.choice(("auto",) * 6 + ("", "edge", "gpu", targets[0].name, "nowhere"))
    return RouteRequest(
        job_id=f"j{index}",
        sla_ms=rng.choice((50.0, 300.0, 500.0, 2000.0, 2000.0, 10000.0, 10000.0)),
        submitted_at=NOW - rng.choice((0.0, rng.uniform(0.0, 0.5), rng.uniform(0.0, 0.5), 20.0)),
        preferred_target=preferred,
        strict_sla=rng.random() < 0.15,
        budget_usd=rng.choice((None, None, 0.0001, 0.001, 0.005)),
    )


def synthetic(scenes: int = 60, jobs: int = 25, seed: int = 13) -> Iterator[Decision]:
    """``scenes`` x ``jobs`` decisions over random fleets, configs and class records."""
    rng = random.Random(seed)
    for scene in range(scenes):
        targets, stats = _scene(rng)
        config = CONFIGS[scene % len(CONFIGS)]
        slo = rng.choice((None, SloClassStats(jobs=50.0, miss_rate=0.05), SloClassStats(jobs=5.0, miss_rate=0.0)))
        for job in range(jobs):
            request = _request(rng, scene * jobs + job, targets)
            u = rng.choice((rng.random(), rng.uniform(0.0, 0.05)))  # half of them may explore
            decision = decide(request, targets, stats, NOW + rng.uniform(0.0, 2.0), config, u, slo)
            hedge_plan(decision, request, config)
            yield decision


def simulated(seeds: tuple[int, ...] = (1,)) -> Iterator[Decision]:
    """Every decision our router makes in short runs of two simulator scenarios."""
    from bench import routing_sim
    from bench.sim_scenarios import SCENARIOS
    from orchestrator.routing import policy

    made: list[Decision] = []
    original = policy.decide

    def recording(*args, **kwargs) -> Decision:
        decision = original(*args, **kwargs)
        made.append(decision)
        return decision

    policy.decide = recording
    try:
        for name in ("brownout", "edge_flapping"):
            scenario = replace(SCENARIOS[name], duration_s=45.0, warmup_s=5.0)
            for seed in seeds:
                routing_sim.run_one(scenario, seed, "ours")
    finally:
        policy.decide = original
    yield from made


SOURCES = {"synthetic": synthetic, "simulated": simulated}


def digests() -> dict[str, dict[str, object]]:
    """Per source: the number of decisions and the sha256 of their canonical lines."""
    result: dict[str, dict[str, object]] = {}
    for name, source in SOURCES.items():
        digest, count = hashlib.sha256(), 0
        for decision in source():
            digest.update(canonical(decision).encode() + b"\n")
            count += 1
        result[name] = {"decisions": count, "sha256": digest.hexdigest()}
    return result


def main(path: str) -> None:
    if path == "--record":
        RECORD.write_text(json.dumps(digests(), indent=2) + "\n", encoding="utf-8")
        return
    with open(path, "w", encoding="utf-8") as out:
        for name, source in SOURCES.items():
            for decision in source():
                out.write(f"{name} {canonical(decision)}\n")


if __name__ == "__main__":
    main(sys.argv[1])
