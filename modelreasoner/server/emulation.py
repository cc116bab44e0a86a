"""Tier emulation for the reference model server: latency, failures, capacity, cost and faults.

A ``Profile`` describes how one server instance behaves (an edge box, a cloud endpoint, a GPU node).
Sampling is pure given an injected ``random.Random``: the same seed and the same request order give
the same delays and failures. ``LatencyWindow`` keeps recent latencies for the /stats endpoint; the
caller passes the time in, so it has no clock of its own.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import deque
from dataclasses import dataclass
from typing import Any

TIERS: tuple[str, ...] = ("edge", "cloud", "gpu", "none")
FAULTS: tuple[str, ...] = (
    "none",
    "timeout",
    "http_500",
    "invalid_json",
    "hang_after_headers",
    "close_connection",
)

MAX_DELAY_FACTOR = 20.0  # cap a lognormal draw at 20x the median so one sample cannot stall a test run
MAX_LATENCY_MS = 600_000.0  # 10 minutes: a sanity bound on configured medians
MAX_CAPACITY = 100_000  # beyond this a semaphore is not a meaningful limit
STATS_WINDOW_S = 60.0  # /stats percentiles cover the last minute: "current conditions" for telemetry
STATS_WINDOW_MAX_SAMPLES = 4096  # and at most this many requests, to bound memory under load

# Defaults per tier, with the reasoning behind them:
TIER_DEFAULTS: dict[str, dict[str, float | int]] = {
    # A small on-premise box: quick for one request, but only two concurrent slots, so load queues fast.
    "edge": {"latency_ms": 120.0, "jitter": 0.35, "capacity": 2, "fail_rate": 0.002, "cost_usd": 0.0002},
    # A shared managed endpoint: network round trips and multi-tenant noise make it slower and spikier,
    # with the highest transient error rate, but it scales wide.
    "cloud": {"latency_ms": 350.0, "jitter": 0.5, "capacity": 64, "fail_rate": 0.01, "cost_usd": 0.0010},
    # A dedicated accelerator node: fastest and steadiest, a handful of batch slots, most expensive per call.
    "gpu": {"latency_ms": 60.0, "jitter": 0.25, "capacity": 8, "fail_rate": 0.002, "cost_usd": 0.0040},
    # No emulation: answer as fast as the handler runs, never fail on purpose, free.
    "none": {"latency_ms": 0.0, "jitter": 0.0, "capacity": 1000, "fail_rate": 0.0, "cost_usd": 0.0},
}


@dataclass(frozen=True)
class Profile:
    """Emulation settings of one server instance.

    latency_ms: median extra delay per request (ms); jitter: lognormal sigma of that delay (0 = fixed);
    fail_rate: probability (0..1) of answering 503; capacity: concurrent request slots (more queue);
    cost_usd: reported cost per call; seed: RNG seed (None = unseeded); fault: deterministic fault mode.
    """

    tier: str = "none"
    latency_ms: float = 0.0
    jitter: float = 0.0
    fail_rate: float = 0.0
    capacity: int = 1000
    cost_usd: float = 0.0
    seed: int | None = None
    fault: str = "none"

    def __post_init__(self) -> None:
        problem = _problem(self)
        if problem:
            raise ValueError(problem)

    def replace(self, **changes: Any) -> Profile:
        """A validated copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _problem(p: Profile) -> str | None:
    """First problem with a profile's values, phrased as ``field: problem``, or None."""
    checks = [
        ("tier", p.tier in TIERS, f"must be one of {', '.join(TIERS)}"),
        ("fault", p.fault in FAULTS, f"must be one of {', '.join(FAULTS)}"),
        (
            "latency_ms",
            _number_in(p.latency_ms, 0.0, MAX_LATENCY_MS),
            f"must be between 0 and {MAX_LATENCY_MS:g}",
        ),
        ("jitter", _number_in(p.jitter, 0.0, 5.0), "must be between 0 and 5"),
        ("fail_rate", _number_in(p.fail_rate, 0.0, 1.0), "must be between 0 and 1"),
        ("cost_usd", _number_in(p.cost_usd, 0.0, 1000.0), "must be between 0 and 1000"),
        (
            "capacity",
            _int_in(p.capacity, 1, MAX_CAPACITY),
            f"must be an integer between 1 and {MAX_CAPACITY}",
        ),
        ("seed", p.seed is None or _int_in(p.seed, -(2**63), 2**63 - 1), "must be an integer or null"),
    ]
    return next((f"{name}: {msg}" for name, ok, msg in checks if not ok), None)


def _number_in(value: Any, lo: float, hi: float) -> bool:
    ok_type = isinstance(value, int | float) and not isinstance(value, bool)
    return ok_type and math.isfinite(value) and lo <= value <= hi


def _int_in(value: Any, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def profile_for_tier(tier: str = "none", **overrides: Any) -> Profile:
    """The tier's default profile with every non-None override applied (explicit flags win)."""
    if tier not in TIER_DEFAULTS:
        raise ValueError(f"tier: must be one of {', '.join(TIERS)}")
    values: dict[str, Any] = {"tier": tier, **TIER_DEFAULTS[tier]}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Profile(**values)


def apply_changes(current: Profile, changes: dict[str, Any]) -> Profile:
    """Runtime update (POST /admin/profile): a new ``tier`` resets to that tier's defaults first,
    keeping the current seed and fault; then the other given fields override."""
    if "tier" in changes:
        base = profile_for_tier(changes["tier"], seed=current.seed, fault=current.fault)
        rest = {k: v for k, v in changes.items() if k != "tier"}
        return base.replace(**rest)
    return current.replace(**changes)


@dataclass(frozen=True)
class Outcome:
    """What the emulator decided for one request: extra delay (ms) and whether to fail with 503."""

    delay_ms: float
    fail: bool


def sample_outcome(profile: Profile, rng: random.Random) -> Outcome:
    """Draw one request's delay (lognormal, median ``latency_ms``) and failure.

    Always consumes exactly two draws, so a seeded sequence does not shift when a rate changes.
    """
    z = rng.gauss(0.0, 1.0)
    u = rng.random()
    delay = profile.latency_ms * math.exp(profile.jitter * z) if profile.latency_ms > 0 else 0.0
    delay = min(delay, profile.latency_ms * MAX_DELAY_FACTOR)
    return Outcome(delay_ms=delay, fail=u < profile.fail_rate)


def make_rng(seed: int | None) -> random.Random:
    """A private RNG: seeded for repeatable runs, otherwise seeded from the OS."""
    return random.Random(seed)


class LatencyWindow:
    """Recent request latencies (ms) for percentile reporting over a sliding time window."""

    def __init__(self, window_s: float = STATS_WINDOW_S, max_samples: int = STATS_WINDOW_MAX_SAMPLES) -> None:
        self._window_s = window_s
        self._samples: deque[tuple[float, float]] = deque(maxlen=max_samples)

    def record(self, latency_ms: float, now: float) -> None:
        """Add one latency observed at monotonic time ``now`` (seconds)."""
        self._samples.append((now, latency_ms))

    def percentile(self, q: float, now: float) -> float:
        """Nearest-rank ``q``-th percentile (0..100) of latencies in the window; 0.0 when empty."""
        self._expire(now)
        values = sorted(latency for _, latency in self._samples)
        if not values:
            return 0.0
        rank = max(1, math.ceil(q / 100.0 * len(values)))
        return values[rank - 1]

    def _expire(self, now: float) -> None:
        while self._samples and now - self._samples[0][0] > self._window_s:
            self._samples.popleft()
