"""Tunable constants of the routing policy, each with its unit and the reason for its default.

docs/routing.md explains how they interact; the defaults are what the benchmark table was
measured with.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    # --- latency model -------------------------------------------------------------------
    latency_alpha: float = 0.2
    """Weight of the newest latency sample in the EWMA of ln(latency): roughly the last ten
    calls dominate, so a slowdown shows within a few calls."""
    error_alpha: float = 0.1
    """Weight of the newest outcome in the error-rate EWMA (about the last twenty calls)."""
    prior_sigma: float = 0.5
    """Log-space spread assumed before any observation: p95 is about 2.3x the median."""
    prior_weight: float = 3.0
    """Pseudo-observations the prior is worth; real data outweighs it after a few calls."""
    sample_cap: float = 20.0
    """Evidence never counts for more than 20 calls, so decay brings a target back to its
    prior (and to probing) about a minute after its last call."""
    min_sigma: float = 0.05
    max_sigma: float = 2.0
    p95_z: float = 1.645
    """Standard-normal quantile of 0.95: the predicted p95 is exp(mu + z*sigma)."""

    # --- decay ------------------------------------------------------------------------------
    decay_half_life_s: float = 20.0
    """Evidence about a target halves every 20 s without new calls, and its error rate with
    it. Full evidence (20 calls) falls below ``min_samples`` in under a minute; from then on
    the target is probed, so one that recovered wins its traffic back within about a minute
    of its last call even if nobody chose it meanwhile (measured: docs/routing.md)."""

    # --- feasibility ------------------------------------------------------------------------
    max_error_rate: float = 0.5
    """A target failing more than half its calls is not counted as able to meet the SLA."""

    # --- exploration ------------------------------------------------------------------------
    min_samples: float = 3.0
    """Below this much evidence a target is under-sampled and may be probed."""
    probe_share: float = 0.05
    """At most 5% of decisions send a job to an under-sampled target first: enough to learn
    a new target in seconds at modest load, never a flood."""
    probe_max_in_flight: int = 1
    """At most one probe call in flight per under-sampled or half-open target."""

    # --- circuit breaker ----------------------------------------------------------------------
    circuit_consecutive_failures: int = 5
    """Open after 5 consecutive failures (Envoy outlier detection's consecutive_5xx default)."""
    circuit_error_rate: float = 0.5
    circuit_min_calls: int = 20
    """Or open when the error-rate EWMA passes 50% once 20 calls were seen (resilience4j's
    50% failure-rate threshold, with a smaller minimum so small deployments react too)."""
    circuit_base_open_s: float = 10.0
    circuit_max_open_s: float = 300.0
    """Stay open 10 s, doubling with each re-opening up to 300 s (Envoy's max_ejection_time):
    a flapping target costs little, a dead one is asked about every five minutes."""
    circuit_reset_successes: int = 20
    """After 20 consecutive successes the re-opening count resets to zero."""

    # --- telemetry ------------------------------------------------------------------------------
    telemetry_ttl_s: float = 30.0
    """Telemetry older than this is ignored."""
    telemetry_weight: float = 0.3
    """Weight of pushed telemetry latency in the predicted median, against observed actuals."""


DEFAULT_CONFIG = RoutingConfig()
