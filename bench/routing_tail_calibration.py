"""How often a call is slower than the p95 the router predicted just before it: the latency
model's calibration, with the observed-tail sketch (``tail_quantile``) and without it.

    python -m bench.routing_tail_calibration

One target, 3,000 calls drawn from each latency shape (seeded), fed one at a time to the learning
step; from the 301st on, each call is compared with the p95 ``predict_latency`` gave before it.
A calibrated p95 is exceeded by 5% of calls.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import replace

from orchestrator.routing import DEFAULT_CONFIG, Outcome, RoutingConfig, Target, TargetStats, observe
from orchestrator.routing.policy import predict_latency

CALLS, SKIP, START = 3000, 300, 1_700_000_000.0
SHAPES: dict[str, Callable[[random.Random], float]] = {
    "Pareto, alpha 1.5, scale 100 ms": lambda r: 100.0 * (1.0 - r.random()) ** (-1.0 / 1.5),
    "Pareto, alpha 2.5, scale 100 ms": lambda r: 100.0 * (1.0 - r.random()) ** (-1.0 / 2.5),
    "log-normal, median 100 ms, sigma 0.4": lambda r: 100.0 * math.exp(r.gauss(0.0, 0.4)),
    "log-normal sigma 0.2, 8% of calls 5x slower": lambda r: (
        100.0 * math.exp(r.gauss(0.0, 0.2)) * (5.0 if r.random() < 0.08 else 1.0)
    ),
}


def exceed_share(draw: Callable[[random.Random], float], config: RoutingConfig, seed: int = 11) -> float:
    target, rng, stats, over = Target("t", "cpu", prior_latency_ms=100.0), random.Random(seed), TargetStats(), 0
    for i in range(CALLS):
        latency, now = draw(rng), START + i * 0.05
        if i >= SKIP:
            over += latency > predict_latency(target, stats, now, config)[1]
        stats = observe(stats, Outcome("t", True, latency, now), config)
    return over / (CALLS - SKIP)


def main() -> None:
    print("| latency shape | p95 exceeded, tail sketch | p95 exceeded, log-normal tail |")
    print("|---|---|---|")
    with_sketch = replace(DEFAULT_CONFIG, tail_quantile=True)
    without = replace(DEFAULT_CONFIG, tail_quantile=False)
    for name, draw in SHAPES.items():
        print(f"| {name} | {exceed_share(draw, with_sketch):.1%} | {exceed_share(draw, without):.1%} |")


if __name__ == "__main__":
    main()
