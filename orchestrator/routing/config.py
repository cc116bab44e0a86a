"""Tunable constants of the routing policy, each with its unit and the reason for its default.

docs/routing.md explains how they interact; the defaults are what the benchmark table was
measured with.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    # --- latency model -------------------------------------------------------------------
    latency_alpha: float = 0.2
    """Weight of the newest latency sample in the EWMA of ln(latency): roughly the last ten
    calls dominate, so a slowdown shows within a few calls."""
    latency_var_alpha: float = 0.05
    """Weight of the newest sample in the EWMA of the spread of ln(latency) (about the last 40
    calls): the spread sets the p95, and a 10-call estimate of it wobbles by +-25%."""
    error_alpha: float = 0.02
    """Weight of the newest outcome in the error-rate EWMA (about the last 50 calls). Slower
    than the latency EWMA on purpose: one failure of a target that fails 1% of its calls moves
    the estimate by 2 points, not 10, so a healthy target does not drop out of 'meets' for a
    stray error; a 30% brownout still shows within 10-20 calls, and a dead target trips the
    consecutive-failure breaker after five."""
    prior_sigma: float = 0.5
    """Log-space spread assumed before any observation: p95 is about 2.3x the median."""
    prior_weight: float = 3.0
    """Pseudo-observations the prior is worth; real data outweighs it after a few calls."""
    sample_cap: float = 20.0
    """Evidence never counts for more than 20 calls, so decay brings a target back to its
    prior (and to probing) within about a minute of its last call."""
    evidence_weighted: bool = False
    """A new latency counts at least 1 / (evidence + 1) in the mean, so evidence decayed by
    silence weighs less against a fresh call (``latency_alpha`` is the floor). Off: it cost
    attainment on the generated scenarios (docs/routing.md, "Learning from actuals"); the
    change-point test needs it (a slow level learned in full is otherwise unlearned only by
    decay)."""
    shift_detection: bool = False
    """A change-point test (two one-sided CUSUMs of the latency residuals, in sigmas) watches
    for a level shift or a drift; when one fires, the latency mean jumps to the fast-scale
    EWMA instead of creeping there at ``latency_alpha``. Off: measured on the generated
    scenarios it did not raise attainment (docs/routing.md)."""
    shift_k: float = 0.5
    """CUSUM allowance, in sigmas: the test looks for shifts of about 2 x 0.5 = 1 sigma or more
    (the textbook choice: half the smallest shift worth finding)."""
    shift_h: float = 5.0
    """CUSUM threshold, in sigmas. With residuals capped at ``SPREAD_CAP_SIGMAS`` (2.5) it takes
    three calls in a row far out in the tail to fire, so a heavy tail rarely passes for a shift;
    a steady log-normal target sees a false alarm about once in 470 calls (both sides together;
    Siegmund's approximation of the CUSUM's run length, 938 per side), and a false alarm moves
    the mean to the fast EWMA, still near it, and cuts the evidence to ``min_samples``. A 4x slowdown at sigma 0.3 fires
    on its third call."""
    shift_fast_alpha: float = 0.5
    """Weight of the newest sample on the fast time scale (about the last two calls)."""
    tail_quantile: bool = False
    """Estimate the upper tail from the residuals themselves (a sketch of the residuals in
    sigmas, ``tail.py``, and its 95th percentile ``TargetStats.tail_z95``) rather than assume a
    log-normal's 1.645: above the median the model is then a log-normal whose spread puts its
    p95 where the observed one is, if that is wider. Off: it calibrates the p95 (``python -m
    bench.routing_tail_calibration``) but did not raise attainment on the generated scenarios,
    at more cost (docs/routing.md)."""
    tail_memory_calls: float = 200.0
    """The sketch's memory, in calls: 200 calls hold about ten of the 5% above the p95, enough
    to place it within a bin or two; a level shift clears it (its residuals measured the move)."""
    min_sigma: float = 0.05
    max_sigma: float = 2.0
    p95_z: float = 1.645
    """Standard-normal quantile of 0.95: the predicted p95 is exp(mu + z*sigma)."""

    # --- decay ------------------------------------------------------------------------------
    decay_half_life_s: float = 20.0
    """Evidence about a target halves every 20 s without new calls, and its error rate with
    it. Full evidence (20 calls) falls below ``min_samples`` in under a minute, so an idle
    target drifts back to its prior and to probing (measured: docs/routing.md)."""

    # --- feasibility ------------------------------------------------------------------------
    on_time_target: float = 0.90
    """The floor: a target less likely than this (or than the class's objective, if lower) to
    answer by the deadline (failover included) never counts as meeting the SLA; when no target
    reaches it the SLA is unmeetable and a strict job fails fast. Above the floor, the class's
    objective sets the bar (``slo_objectives``)."""
    slo_objectives: tuple[tuple[float, float], ...] = ()
    """Per SLA class, (largest ``sla_ms`` of the class, attainment objective), e.g.
    ``((500, 0.999), (3000, 0.99))``: 99.9% of jobs with an SLA up to 500 ms on time, 99% up to
    3 s. Empty (the default): every class takes ``slo_default_objective``. ``objective.py``
    explains how the router meets an objective first and then saves cost."""
    slo_default_objective: float = 1.0
    """The objective of jobs above every bound in ``slo_objectives``. 1.0 (the default) is
    "deadline first": the cheapest of the targets nearly as likely to be on time as the best,
    so the default trades no deadlines for cost; lower values let the router save cost."""
    deadline_first_slack: float = 0.002
    """'Nearly as likely': a target within 0.2 points of the best target's chance of being on
    time counts as meeting the SLA. A 300 ms job then goes to an idle edge box that is on
    time 99.6% of the time rather than to a GPU at 20x the price that is on time 99.99%."""
    slo_alpha: float = 0.02
    """Weight of one finished job in its class's miss-rate EWMA (about the last 50 jobs)."""
    slo_min_jobs: float = 20.0
    """A class's record counts fully once it holds 20 jobs; before, the bar stays near the
    objective."""
    slo_loosen_max: float = 4.0
    """A class that misses less than its objective allows may let one job use up to 4x its
    miss allowance (an objective of 99% lets a job go to a target 96% likely to be on time)."""
    queue_price_ratio: float = 5.0
    """Queueing costs everyone behind: a job does not wait for a slot on a busy target when
    another target that meets its SLA has a free slot at no more than 5x the price. A cheap
    target with few slots then keeps its slots for the jobs whose only other option costs far
    more (a 300 ms job's alternative is the GPU at 20x the edge box), instead of filling its
    queue with jobs that could run on the cloud at 5x."""
    max_error_rate: float = 0.5
    """A target failing more than half its calls is never counted as able to meet the SLA."""

    # --- exploration ------------------------------------------------------------------------
    min_samples: float = 3.0
    """Below this much evidence a target is under-sampled and may be probed."""
    probe_share: float = 0.05
    """At most 5% of decisions send a job to a new, stale or half-open target first: enough
    to learn a target in seconds at modest load, never a flood."""
    probe_max_in_flight: int = 1
    """At most one probe call in flight per new or stale target."""
    probe_stale_s: float = 10.0
    """A target nobody called for 10 s may be probed, so one that recovered is noticed within
    seconds of its recovery rather than when its stale estimate has decayed."""

    # --- circuit breaker ----------------------------------------------------------------------
    circuit_consecutive_failures: int = 5
    """Open after 5 consecutive failures (Envoy outlier detection's consecutive_5xx default)."""
    circuit_error_rate: float = 0.5
    circuit_min_calls: int = 20
    """Or open when the error-rate EWMA (about the last 50 calls) passes 50% once 20 calls
    were seen (resilience4j's 50% failure-rate threshold, with a smaller minimum than its 100
    so a fleet of a few workers reacts within seconds, not minutes)."""
    circuit_min_timeout_s: float = 1.0
    """A timeout after less than 1 s (a call cut short by its job's deadline) is latency
    evidence only: it neither counts as an error nor moves the breaker. Found by the scenario
    generator: with tight SLAs and a queue, deadline-bound timeouts opened every circuit in the
    fleet. A hung or unreachable target still trips it (connects give up after 2 s)."""
    circuit_probe_all_open: bool = True
    """With every circuit open (nothing admitted), a non-strict job probes one open target
    anyway, as ``circuit_open_probe`` does (at most ``circuit_half_open_calls`` in flight, the
    target whose open period ends soonest), instead of failing with ``no_eligible_target``; every
    other job is still shed. Found by the scenario generator: in a two-target fleet, one
    target's errors open its breaker, the other, alone with the whole load, times out until its
    breaker opens too, and the fleet then ran nothing until an open period ended. Measured on
    the development range: 189 of 200 scenarios keep up with the best baseline against 184,
    mean attainment 78.06% against 77.22%, the same cost (docs/routing.md)."""
    circuit_timeout_plausible: bool = False
    """A timeout (past ``circuit_min_timeout_s``) moves the breaker only if the call outlived the
    99.9% quantile (``stall_false_alarm``) of the latency learned so far: a target that is slow
    or queueing, whose answers already take that long, is the latency model's business, not the
    breaker's. Off: on the generated scenarios it kept up with the best baseline in two more
    scenarios but lost 0.4 points of mean attainment at 7% more cost (docs/routing.md)."""
    circuit_base_open_s: float = 10.0
    circuit_max_open_s: float = 300.0
    """Stay open 10 s, doubling with each re-opening up to 300 s (Envoy's max_ejection_time):
    a flapping target costs little, a dead one is asked about every five minutes."""
    circuit_half_open_calls: int = 3
    """A half-open circuit admits up to 3 probe calls at a time (resilience4j admits 10; our
    targets serve a handful of calls at once, so 3 is already a real test)."""
    circuit_close_successes: int = 1
    """Successes in a row that close a half-open circuit; any failure while half-open re-opens
    it for twice as long. One, as in Envoy (an ejected host simply returns): closing restarts
    the target's learning from the probe anyway, so a still-sick target is caught again by its
    next calls; in the simulator two made no measurable difference."""
    circuit_reset_successes: int = 20
    """After 20 consecutive successes the re-opening count resets to zero."""
    circuit_open_probe: bool = True
    """When every target that admits a call is below the on-time floor, a non-strict job probes
    a target whose circuit is open (at most ``circuit_half_open_calls`` at a time), and a
    success closes that circuit before its open period ends. Found by the scenario generator:
    in a fleet of two, one target's error burst opened its breaker for 10 s while the other,
    alone with the whole load, went down or queued; measured in docs/routing.md."""

    # --- learning from calls still in flight -----------------------------------------------------
    stall_detection: bool = True
    """A call that has been running far longer than the model allows, while no call to the
    target has ended since it started, is evidence that the target has hung or slowed down:
    the prediction is raised until that call's age is no longer an outlier, without waiting
    for it to time out. (If later calls have ended, the old call is a straggler and the
    outcomes of the later ones are the evidence.)"""
    stall_false_alarm: float = 0.001
    """How rarely healthy calls may look stalled: the oldest of the n calls in service must
    have outlived the model's (0.999 ** (1/n))-quantile. The check runs on every decision, so
    a 5% level would flag a healthy, busy target a twentieth of the time; at 0.1% a hung edge
    box (median 120 ms) is still noticed within ~0.4 s."""

    # --- queue wait -----------------------------------------------------------------------------
    capacity_learning: bool = True
    """Learn each target's effective capacity rather than trust the catalogue's: every answered
    call that reports the calls in flight when it started (``Outcome.in_flight``) compares its
    latency with the queue-free service time (``TargetStats.service_ref_ms``) times the
    inflation the current capacity predicts, max(1, (in flight + 1) / capacity); a call slower
    than that lowers the capacity, a faster one raises it (``learning.fold_capacity``). Only
    calls near or past the capacity (in flight + 1 > capacity / 2) move it, so a lightly loaded
    target keeps its catalogue entry. On: on the generated scenarios 1-200 it kept up with the
    best baseline in 184 against 181, mean attainment 77.216% against 77.212% (docs/routing.md)."""
    capacity_step: float = 0.03
    """How far one call moves ln(capacity) per unit of relative error (clipped to [-1, 2]): a
    catalogue that says 8 slots for 2 is corrected within about 30 calls that queued."""
    capacity_max_ratio: float = 8.0
    """The learned capacity stays within 1/8x-8x the catalogue's (and at least 1 slot)."""
    capacity_ref_alpha: float = 0.05
    """Weight of a new queue-free call in ``service_ref_ms`` (about the last 40 such calls):
    every capacity update is measured against it, so it must not wobble with one slow call."""
    capacity_ref_min_calls: float = 10.0
    """The queue-free service time counts (for capacity updates and, in place of the learned
    latency, in the queue wait) once it rests on 10 calls: a mean of three calls of a bimodal
    target misses its slow mode, and a queue wait that low fills the target's queue."""

    # --- hedging --------------------------------------------------------------------------------
    hedge_backup_margin: float = 1.5
    """A deadline-bound hedge leaves its backup 1.5x the backup's predicted p95 before the
    deadline: room for the backup's own tail and a little queueing."""

    # --- telemetry ------------------------------------------------------------------------------
    telemetry_ttl_s: float = 30.0
    """Telemetry older than this is ignored."""
    telemetry_weight: float = 0.3
    """Weight of pushed telemetry latency in the predicted median, against observed actuals."""


DEFAULT_CONFIG = RoutingConfig()


def parse_objectives(text: str) -> tuple[tuple[float, float], ...]:
    """``"500:0.999,3000:0.99"`` -> ((500.0, 0.999), (3000.0, 0.99)): the ROUTING_SLO_OBJECTIVES format."""
    pairs = (item.split(":") for item in text.split(",") if item.strip())
    return tuple(sorted((float(bound), float(goal)) for bound, goal in pairs))


def config_with_objectives(objectives: str, default_objective: float = 1.0) -> RoutingConfig:
    """The default config with the operator's SLO objectives (ROUTING_SLO_OBJECTIVES,
    ROUTING_SLO_DEFAULT_OBJECTIVE)."""
    return replace(DEFAULT_CONFIG, slo_objectives=parse_objectives(objectives), slo_default_objective=default_objective)
