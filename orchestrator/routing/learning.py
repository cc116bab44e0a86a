"""Pure functions that turn observed outcomes and elapsed time into new TargetStats.

``observe`` folds one call's outcome in (latency model, error rate, circuit breaker);
``at_time`` applies what time alone changes (evidence decay, open -> half-open). Both return new
values; stores apply them atomically.
"""

from __future__ import annotations

import math
from dataclasses import replace
from statistics import NormalDist

from orchestrator.error_kinds import ErrorKind
from orchestrator.routing import tail as tail_sketch
from orchestrator.routing.config import DEFAULT_CONFIG, RoutingConfig
from orchestrator.routing.types import CircuitState, Outcome, SloClassStats, TargetStats

LATENCY_BEARING_ERRORS = frozenset({ErrorKind.TIMEOUT})
"""Failures whose elapsed time is a (censored) latency observation: a timeout means 'at least
this slow', which must raise the estimate of a target that has become slow."""
NEUTRAL_ERRORS = frozenset({ErrorKind.CANCELLED})
"""Outcomes that say nothing about the target's health (a hedge loser we abandoned)."""
SPREAD_CAP_SIGMAS = 2.5
"""A residual counts towards the latency spread up to 2.5 current sigmas (2.5 sigma keeps 99%
of a steady target's residuals whole, so its spread is not underestimated)."""


def decay_factor(stats: TargetStats, now: float, config: RoutingConfig = DEFAULT_CONFIG) -> float:
    """How much of ``stats``' evidence (and error rate) is left at ``now``: 0.5 per half-life
    since its last update."""
    if not stats.updated_at or now <= stats.updated_at:
        return 1.0
    return 0.5 ** ((now - stats.updated_at) / config.decay_half_life_s)


def at_time(stats: TargetStats, now: float, config: RoutingConfig = DEFAULT_CONFIG) -> TargetStats:
    """``stats`` as of ``now``: evidence decayed by the time since the last update, and an open
    circuit whose period has passed turned half-open."""
    result = stats
    factor = decay_factor(stats, now, config)
    if factor < 0.999:
        result = replace(
            result,
            samples=result.samples * factor,
            error_rate=result.error_rate * factor,
            updated_at=now,
        )
    if result.circuit is CircuitState.OPEN and now >= result.circuit_until:
        result = replace(result, circuit=CircuitState.HALF_OPEN)
    return result


def observe(stats: TargetStats, outcome: Outcome, config: RoutingConfig = DEFAULT_CONFIG) -> TargetStats:
    """Fold one call's outcome into the target's stats."""
    if outcome.error_kind in NEUTRAL_ERRORS:
        return stats
    current = at_time(stats, outcome.at, config)
    slow_only = outcome.error_kind in LATENCY_BEARING_ERRORS and not _implausibly_slow(current, outcome, config)
    if outcome.ok or outcome.error_kind in LATENCY_BEARING_ERRORS:
        current = fold_latency(current, outcome.latency_ms, config, censored=not outcome.ok)
    if config.capacity_learning and outcome.ok and outcome.in_flight is not None and outcome.capacity:
        current = fold_capacity(current, outcome.latency_ms, outcome.in_flight, outcome.capacity, config)
    if slow_only:
        # A call cut short by its job's deadline, or one no slower than the target has been
        # answering, says the target is slow (the latency model learns it), not that it is
        # broken: no error, no step towards the breaker.
        return replace(
            current,
            calls=current.calls + 1,
            updated_at=max(current.updated_at, outcome.at),
            last_call_at=max(current.last_call_at, outcome.at),
        )
    failed = 0.0 if outcome.ok else 1.0
    error_rate = current.error_rate + config.error_alpha * (failed - current.error_rate)
    consecutive = 0 if outcome.ok else current.consecutive_failures + 1
    successes = current.consecutive_successes + 1 if outcome.ok else 0
    updated = replace(
        current,
        error_rate=error_rate,
        calls=current.calls + 1,
        failures=current.failures + (0 if outcome.ok else 1),
        consecutive_failures=consecutive,
        consecutive_successes=successes,
        updated_at=max(current.updated_at, outcome.at),
        last_call_at=max(current.last_call_at, outcome.at),
    )
    return _next_circuit(updated, outcome, config)


def _implausibly_slow(stats: TargetStats, outcome: Outcome, config: RoutingConfig) -> bool:
    """Whether a timeout is evidence of a broken target: it came after ``circuit_min_timeout_s``
    and (``circuit_timeout_plausible``) after the (1 - ``stall_false_alarm``) quantile of the
    latency learned so far (the stall check's level, with the observed tail), so a target that
    is merely slow or queueing (its answers already take that long) does not trip the breaker;
    a hung one, or one that was answering far faster, does."""
    if outcome.latency_ms < config.circuit_min_timeout_s * 1000.0:
        return False
    if not config.circuit_timeout_plausible or stats.samples < config.min_samples:
        return True
    sigma = max(math.sqrt(stats.log_var), config.min_sigma)
    upper = max(sigma, sigma * stats.tail_z95 / config.p95_z) if config.tail_quantile else sigma
    z = NormalDist().inv_cdf(1.0 - config.stall_false_alarm)
    return math.log(max(outcome.latency_ms, 0.1)) > stats.log_mean + z * upper


def fold_latency(
    stats: TargetStats, latency_ms: float, config: RoutingConfig = DEFAULT_CONFIG, censored: bool = False
) -> TargetStats:
    """Fold one latency observation into ``stats``' latency model (``censored``: a timeout, "at
    least this slow", which moves the mean and spread but not the change-point test or the tail
    sketch: those describe answered calls).

    * EWMA of ln(latency) and of its spread. The spread is measured around the updated mean
      and each residual is capped at ``SPREAD_CAP_SIGMAS`` of the current spread, so a change
      of level (a slowdown, a recovery) moves the mean within a few calls without leaving the
      spread inflated for the next forty.
    * A change-point test (``shift_detection``): two one-sided CUSUMs of the residual in
      sigmas (capped as above), less the allowance ``shift_k``; when one passes ``shift_h``
      the level has moved, and the mean jumps to the fast-scale EWMA (``fast_log_mean``).
    * The tail as observed (``tail_quantile``): a sketch of the residuals in sigmas over about
      the last ``tail_memory_calls`` calls (``tail``), and its 95th percentile for ``latency.model``.
    """
    x = math.log(max(latency_ms, 0.1))
    if stats.samples <= 1e-9:
        return replace(
            stats, samples=1.0, log_mean=x, log_var=config.prior_sigma**2, fast_log_mean=x, shift_up=0.0, shift_down=0.0
        )
    sigma = max(math.sqrt(stats.log_var), config.min_sigma)
    z = max(min((x - stats.log_mean) / sigma, SPREAD_CAP_SIGMAS), -SPREAD_CAP_SIGMAS)
    # Evidence decayed by silence weighs less against a new call: a mean over what is left.
    alpha = max(config.latency_alpha, 1.0 / (stats.samples + 1.0)) if config.evidence_weighted else config.latency_alpha
    mean = stats.log_mean + alpha * (x - stats.log_mean)
    residual = min(abs(x - mean), SPREAD_CAP_SIGMAS * sigma)
    beta = config.latency_var_alpha
    var = (1 - beta) * stats.log_var + beta * residual * residual
    fast = stats.fast_log_mean + config.shift_fast_alpha * (x - stats.fast_log_mean) if stats.fast_log_mean else x
    up, down = stats.shift_up, stats.shift_down
    if config.shift_detection and not censored:
        up, down, moved = _cusum(up, down, z, config)
        if moved:
            # The new level rests on the few calls since the change (as much evidence as a new
            # target's), and the residuals that fired the test measured the move, not the tail.
            samples = min(stats.samples + 1.0, config.min_samples)
            return replace(
                stats,
                samples=samples,
                log_mean=fast,
                log_var=var,
                fast_log_mean=fast,
                shift_up=0.0,
                shift_down=0.0,
                tail_z95=0.0,
                tail_counts=(),
            )
    counts, tail = stats.tail_counts, stats.tail_z95
    if config.tail_quantile and not censored:
        counts = tail_sketch.add(counts, (x - stats.log_mean) / sigma, 1.0 - 1.0 / config.tail_memory_calls)
        tail = tail_sketch.quantile(counts)
    return replace(
        stats,
        samples=min(stats.samples + 1.0, config.sample_cap),
        log_mean=mean,
        log_var=var,
        fast_log_mean=fast,
        shift_up=up,
        shift_down=down,
        tail_z95=tail,
        tail_counts=counts,
    )


def effective_capacity(capacity: int, stats: TargetStats, config: RoutingConfig = DEFAULT_CONFIG) -> float:
    """The slots the latency model counts: the catalogue's ``capacity`` scaled by what was
    learned (``capacity_learning``), never under one."""
    if not config.capacity_learning or not stats.capacity_log_ratio:
        return float(max(capacity, 1))
    return max(capacity * math.exp(stats.capacity_log_ratio), 1.0)


MIN_LEARNED_SLOTS = 0.5
"""The learned capacity may go down to half a slot; the latency model counts at least one."""
CAPACITY_ERROR_CLIP = (-1.0, 2.0)
"""A call's relative latency error counts between -1 and +2: one very slow call (a heavy tail)
moves the capacity no more than two queued calls do."""


def fold_capacity(
    stats: TargetStats, latency_ms: float, in_flight: int, capacity: int, config: RoutingConfig = DEFAULT_CONFIG
) -> TargetStats:
    """Fold one answered call that started with ``in_flight`` other calls on a target whose
    catalogue says ``capacity`` slots into the learned effective capacity.

    A call that found nothing else in flight cannot have queued: its latency updates the
    queue-free service time ``service_ref_ms``. Any other call near or past the capacity ``c``
    (``in_flight + 1 > c / 2``) is compared with what a FIFO queue with ``c`` slots predicts,
    ``service_ref_ms x max(1, (in_flight + 1) / c)`` (the wait of ``latency.model`` plus the
    service time): ln(c) moves by ``capacity_step`` times the relative error, down when the call
    was slower than predicted (fewer slots than believed), up when faster. A lightly loaded
    target (every call well under its capacity) teaches nothing about the capacity and keeps
    it. O(1), two floats of state."""
    if in_flight <= 0:
        # A mean of the first calls, then an EWMA over about the last 1 / alpha.
        calls = min(stats.service_ref_calls + 1.0, 1.0 / config.capacity_ref_alpha)
        ref = stats.service_ref_ms + (latency_ms - stats.service_ref_ms) / calls
        return replace(stats, service_ref_ms=ref, service_ref_calls=calls)
    if stats.service_ref_calls < config.capacity_ref_min_calls or capacity < 1:
        return stats
    slots = effective_capacity(capacity, stats, config)
    calls = in_flight + 1.0
    if calls <= slots / 2.0:
        return stats
    predicted = stats.service_ref_ms * max(1.0, calls / slots)
    low, high = CAPACITY_ERROR_CLIP
    error = min(max(latency_ms / predicted - 1.0, low), high)
    bound = math.log(config.capacity_max_ratio)
    ratio = stats.capacity_log_ratio - config.capacity_step * error
    # Down to half a slot, so that on a one-slot target noise does not only push the estimate up
    # (the model counts at least one slot, and a half-slot estimate climbs back in a few calls).
    ratio = min(max(ratio, -bound, math.log(MIN_LEARNED_SLOTS / capacity)), bound)
    return replace(stats, capacity_log_ratio=ratio)


def _cusum(up: float, down: float, z: float, config: RoutingConfig) -> tuple[float, float, bool]:
    """The two one-sided CUSUMs after one more residual ``z`` (in sigmas), and whether one
    passed ``shift_h`` (the level has moved)."""
    up, down = max(0.0, up + z - config.shift_k), max(0.0, down - z - config.shift_k)
    return up, down, up > config.shift_h or down > config.shift_h


def _next_circuit(stats: TargetStats, outcome: Outcome, config: RoutingConfig) -> TargetStats:
    if stats.circuit is CircuitState.HALF_OPEN:
        if not outcome.ok:
            return _open(stats, outcome.at, config)
        if stats.consecutive_successes >= config.circuit_close_successes:
            return _close(stats, outcome, config)
        return stats
    if stats.circuit is CircuitState.OPEN:
        # A call made while open (``policy._open_probe``) that answered: the target is back.
        # A failure leaves the period as it is (the probe was not the breaker's to time).
        started = outcome.at - outcome.latency_ms / 1000.0
        if outcome.ok and stats.circuit_opened_at and started >= stats.circuit_opened_at:
            return _close(stats, outcome, config)
        return stats
    if not outcome.ok and _should_open(stats, config):
        return _open(stats, outcome.at, config)
    if stats.open_count and stats.consecutive_successes >= config.circuit_reset_successes:
        return replace(stats, open_count=0)
    return stats


def _should_open(stats: TargetStats, config: RoutingConfig) -> bool:
    if stats.consecutive_failures >= config.circuit_consecutive_failures:
        return True
    return stats.calls >= config.circuit_min_calls and stats.error_rate >= config.circuit_error_rate


def _open(stats: TargetStats, now: float, config: RoutingConfig) -> TargetStats:
    period = min(config.circuit_base_open_s * 2**stats.open_count, config.circuit_max_open_s)
    return replace(
        stats,
        circuit=CircuitState.OPEN,
        circuit_until=now + period,
        circuit_opened_at=now,
        open_count=stats.open_count + 1,
        consecutive_failures=0,
        consecutive_successes=0,
    )


def _close(stats: TargetStats, outcome: Outcome, config: RoutingConfig) -> TargetStats:
    """Close a half-open circuit. What was learned before and during the failure says nothing
    about the recovered target: start again from the probe's answer (worth one call against the
    prior) with a clean error rate, so it wins traffic back as fast as its new answers allow."""
    return replace(
        stats,
        circuit=CircuitState.CLOSED,
        circuit_until=0.0,
        samples=1.0,
        log_mean=math.log(max(outcome.latency_ms, 0.1)),
        log_var=config.prior_sigma**2,
        fast_log_mean=math.log(max(outcome.latency_ms, 0.1)),
        shift_up=0.0,
        shift_down=0.0,
        tail_z95=0.0,
        tail_counts=(),
        error_rate=0.0,
    )


def with_telemetry(
    stats: TargetStats,
    *,
    at: float,
    latency_ms: float | None = None,
    utilization: float | None = None,
    queue_depth: int | None = None,
    up: bool | None = None,
) -> TargetStats:
    """Blend a pushed telemetry sample (already normalized to ms and 0-1) into ``stats``."""
    if at < stats.telemetry_at:
        return stats
    return replace(
        stats,
        telemetry_latency_ms=latency_ms if latency_ms is not None else stats.telemetry_latency_ms,
        telemetry_utilization=utilization if utilization is not None else stats.telemetry_utilization,
        telemetry_queue_depth=queue_depth if queue_depth is not None else stats.telemetry_queue_depth,
        telemetry_up=up if up is not None else stats.telemetry_up,
        telemetry_at=at,
    )


def observe_job(
    record: SloClassStats, on_time: bool, at: float, config: RoutingConfig = DEFAULT_CONFIG
) -> SloClassStats:
    """Fold one finished job into its SLA class's record: the miss-rate EWMA (``slo_alpha``)."""
    missed = 0.0 if on_time else 1.0
    return SloClassStats(
        jobs=min(record.jobs + 1.0, 1.0 / config.slo_alpha),
        miss_rate=record.miss_rate + config.slo_alpha * (missed - record.miss_rate),
        updated_at=max(record.updated_at, at),
    )
