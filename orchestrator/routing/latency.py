"""The latency model: what one more call to a target will take, as a probability distribution.

Service time is log-normal below its median and, above it, as wide as the observed tail
(``TargetStats.tail_z95``, the observed p95 in sigmas) if that is wider than a log-normal's: its ln-ms mean and spreads
blend the target's prior with what was learned (by the weight of the evidence) and with fresh
pushed telemetry. Before it, a queue
wait: calls in flight beyond the target's capacity (the catalogue's, scaled by what its calls have
shown: ``capacity_learning``) drain at capacity / mean service time.
A call that has been running implausibly long, while none has ended since it began, raises
the estimate at once (stall detection). Pure functions; ``policy`` builds on them.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import NamedTuple

from orchestrator.routing.config import DEFAULT_CONFIG, RoutingConfig
from orchestrator.routing.learning import decay_factor, effective_capacity
from orchestrator.routing.types import Target, TargetStats

_SQRT2 = math.sqrt(2.0)


class Model(NamedTuple):
    """Service time in ln-ms: normal(mu, sigma) below the median and normal(mu, sigma_up) above
    it (a split log-normal; ``sigma_up`` = ``sigma`` when the observed tail is no heavier),
    after a queue wait in ms."""

    mu: float
    sigma: float
    wait_ms: float
    sigma_up: float = 0.0

    @property
    def upper(self) -> float:
        """The spread above the median."""
        return max(self.sigma, self.sigma_up)

    def quantile_ms(self, z: float) -> float:
        """The latency (wait included) at standard-normal quantile ``z`` (>= 0)."""
        return self.wait_ms + math.exp(self.mu + z * self.upper)


def model(target: Target, stats: TargetStats, samples: float, now: float, config: RoutingConfig) -> Model:
    """Log-normal service time (ln-ms mean and sigma) and the expected wait for a slot (ms)."""
    prior_mu = math.log(max(target.prior_latency_ms, 0.1))
    weight = samples / (samples + config.prior_weight)
    mu = weight * stats.log_mean + (1.0 - weight) * prior_mu
    var = weight * stats.log_var + (1.0 - weight) * config.prior_sigma**2
    fresh = stats.telemetry_at and now - stats.telemetry_at <= config.telemetry_ttl_s
    if fresh and stats.telemetry_latency_ms:
        tw = config.telemetry_weight
        mu = (1.0 - tw) * mu + tw * math.log(max(stats.telemetry_latency_ms, 0.1))
    sigma = min(max(math.sqrt(var), config.min_sigma), config.max_sigma)
    # The observed tail, weighed like the rest of the evidence against the prior's log-normal one.
    sigma_up = 0.0
    if config.tail_quantile and stats.tail_z95 > 0.0:
        observed = sigma * stats.tail_z95 / config.p95_z
        sigma_up = min(weight * observed + (1.0 - weight) * sigma, config.max_sigma)
    capacity = effective_capacity(target.capacity, stats, config)
    busy = float(stats.in_flight)
    if fresh and stats.telemetry_utilization is not None:
        busy = max(busy, stats.telemetry_utilization * capacity)
    if fresh and stats.telemetry_queue_depth:
        busy += stats.telemetry_queue_depth
    ahead = busy + 1.0 - capacity
    # FIFO with `capacity` slots: each earlier departure frees a slot after mean_service/capacity.
    # Learning the capacity measures the service time of calls that did not queue; the learned
    # latency includes the waits the target's calls have had.
    learned = config.capacity_learning and stats.service_ref_calls >= config.capacity_ref_min_calls
    service = stats.service_ref_ms if learned else math.exp(mu + sigma * sigma / 2.0)
    wait = ahead * service / capacity if ahead > 0 else 0.0
    # A call still running while none has ended since it began: the target may have stalled.
    # (If later calls have come back, the old one is a straggler, and they are the evidence.)
    if config.stall_detection and stats.oldest_in_flight_at and stats.last_call_at <= stats.oldest_in_flight_at:
        age_ms = (now - stats.oldest_in_flight_at) * 1000.0
        mu = _stalled_mu(mu, sigma, wait, age_ms, min(stats.in_flight, round(capacity)), config.stall_false_alarm)
    return Model(mu, sigma, wait, sigma_up)


def _stalled_mu(mu: float, sigma: float, wait: float, age_ms: float, in_service: int, false_alarm: float) -> float:
    """``mu`` raised if the oldest call in flight is older than it should be.

    Of ``n`` healthy calls in service, the oldest outlives the model's
    ((1 - false_alarm) ** (1/n))-quantile only with probability ``false_alarm``, so one slow
    call among many is no alarm. If it has, the service time is scaled up until that quantile
    equals its age (less the queue wait it may have had).
    """
    z = _max_of_n_z(max(in_service, 1), false_alarm)
    if age_ms <= wait + math.exp(mu + z * sigma):
        return mu
    return math.log(age_ms - wait) - z * sigma


_MAX_OF_N_Z: dict[tuple[int, float], float] = {}


def _max_of_n_z(n: int, false_alarm: float) -> float:
    """z such that the largest of ``n`` standard normals exceeds it with probability ``false_alarm``."""
    z = _MAX_OF_N_Z.get((n, false_alarm))
    if z is None:
        z = _MAX_OF_N_Z[(n, false_alarm)] = NormalDist().inv_cdf((1.0 - false_alarm) ** (1.0 / n))
    return z


def predict_latency(
    target: Target, stats: TargetStats, now: float, config: RoutingConfig = DEFAULT_CONFIG
) -> tuple[float, float]:
    """Predicted (p50, p95) latency in ms of one more call to ``target`` right now: the learned
    service time (blended with the prior and fresh telemetry) plus the expected queue wait."""
    samples = stats.samples * decay_factor(stats, now, config)
    m = model(target, stats, samples, now, config)
    return m.wait_ms + math.exp(m.mu), m.quantile_ms(config.p95_z)


def p_latency(m: Model, time_left_ms: float) -> float:
    """P(latency <= time left) under the model."""
    room = time_left_ms - m.wait_ms
    if room <= 0.0:
        return 0.0
    d = math.log(room) - m.mu
    sigma = m.sigma_up if d > 0.0 and m.sigma_up > m.sigma else m.sigma
    return 0.5 * math.erfc(-d / (sigma * _SQRT2))
