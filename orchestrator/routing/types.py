"""Public value types of the routing package. All are frozen: the policy never mutates input."""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any


class CircuitState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class Target:
    """A model server the router may send a job to.

    ``cost_per_call_usd`` is what one call costs; ``capacity`` is how many calls it serves at
    once before requests queue; ``prior_latency_ms`` is the latency assumed before any is
    observed; ``timeout_seconds`` overrides the global per-call timeout when set.
    """

    name: str
    tier: str
    url: str = ""
    contract: str = "infer"
    cost_per_call_usd: float = 0.0
    capacity: int = 8
    prior_latency_ms: float = 200.0
    timeout_seconds: float | None = None
    enabled: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """What the router needs to know about one job. ``submitted_at`` is epoch seconds."""

    job_id: str
    sla_ms: float
    submitted_at: float
    preferred_target: str = "auto"
    strict_sla: bool = False
    budget_usd: float | None = None

    @property
    def deadline(self) -> float:
        """Epoch seconds by which the job should be answered."""
        return self.submitted_at + self.sla_ms / 1000.0


@dataclass(frozen=True, slots=True)
class TargetStats:
    """What the workers have learned about one target, shared through the stats store.

    Latency is modelled as log-normal: ``log_mean``/``log_var`` are exponentially weighted
    moments of ln(latency in ms) over observed calls. ``samples`` is a decayed count of those
    observations (the weight of the evidence against the target's prior). ``last_call_at`` is
    when the last call to it ended (epoch s; 0: never). ``in_flight`` and ``oldest_in_flight_at``
    (start of the oldest call still running, epoch s; 0: none) are filled in by the store when a
    snapshot is taken; they are not persisted with the rest.
    """

    samples: float = 0.0
    log_mean: float = 0.0
    log_var: float = 0.0
    error_rate: float = 0.0
    calls: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    circuit: CircuitState = CircuitState.CLOSED
    circuit_until: float = 0.0
    open_count: int = 0
    updated_at: float = 0.0
    telemetry_latency_ms: float | None = None
    telemetry_utilization: float | None = None
    telemetry_queue_depth: int | None = None
    telemetry_up: bool | None = None
    telemetry_at: float = 0.0
    in_flight: int = 0
    last_call_at: float = 0.0
    oldest_in_flight_at: float = 0.0
    fast_log_mean: float = 0.0
    """EWMA of ln(latency) on the fast time scale (``shift_fast_alpha``): where the level has
    moved to, taken up when the change-point test fires."""
    shift_up: float = 0.0
    shift_down: float = 0.0
    """The two one-sided CUSUM statistics of the standardized latency residuals (sigmas)."""
    tail_z95: float = 0.0
    """The 95th percentile of the residuals (ln(latency) - log_mean) / sigma over recent calls
    (0: not enough yet; a log-normal's is about 1.645): the tail as observed, not as a
    log-normal would have it. ``tail_counts`` is the sketch it is read from (``tail.py``)."""
    tail_counts: tuple[float, ...] = ()
    circuit_opened_at: float = 0.0
    """When the circuit last opened (epoch s; 0: never): a call started after it that succeeds
    closes the circuit even before its open period has passed (a probe made while it was open)."""
    service_ref_ms: float = 0.0
    """Mean latency (ms, an EWMA) of successful calls that started with no other call in flight
    on the target: its service time with no queue (0: none seen yet). ``capacity_learning``."""
    service_ref_calls: float = 0.0
    """How many queue-free calls ``service_ref_ms`` rests on (capped at 1 / ``capacity_ref_alpha``)."""
    capacity_log_ratio: float = 0.0
    """ln(effective capacity / catalogue capacity), learned from how latency grows with the
    calls in flight at each call's start (``learning.fold_capacity``); 0: the catalogue's. May
    go down to half a slot (``learning.MIN_LEARNED_SLOTS``); the latency model counts at least one."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["circuit"] = self.circuit.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TargetStats:
        """Inverse of ``to_dict``; unknown keys (from a newer version) are ignored."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "circuit" in values:
            values["circuit"] = CircuitState(values["circuit"])
        if "tail_counts" in values:
            values["tail_counts"] = tuple(values["tail_counts"])
        return cls(**values)

    @property
    def latency_p50_ms(self) -> float | None:
        return math.exp(self.log_mean) if self.samples > 0 else None


@dataclass(frozen=True, slots=True)
class SloClassStats:
    """How one SLA class is doing, fleet-wide: ``jobs`` (a count, capped) and ``miss_rate`` (an
    EWMA over about the last 1 / ``slo_alpha`` finished jobs of the class)."""

    jobs: float = 0.0
    miss_rate: float = 0.0
    updated_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SloClassStats:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened on one model-server call. ``at`` is the epoch second the call ended.

    ``error_kind`` is None on success, else one of: timeout, connect_error, http_5xx, http_4xx,
    invalid_response, cancelled. A cancelled hedge loser teaches nothing about errors.
    """

    target: str
    ok: bool
    latency_ms: float
    at: float
    error_kind: str | None = None
    cost_usd: float = 0.0
    in_flight: int | None = None
    """Other calls in flight on the target, as the router counted them, when this call started
    (None: not known). With ``capacity`` it lets the router learn the target's real capacity."""
    capacity: int | None = None
    """The catalogue's capacity of the target when the call started (None: not known)."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """One target as the policy saw it for one job, with the components of its score.

    ``meets_sla``: eligible, ``p_on_time`` at least ``on_time_needed`` (the bar of the job's SLA
    class objective) and the error rate within bounds. ``probe``:
    sent first to learn about it (new, stale or half-open), not because it ranked first."""

    target: str
    tier: str
    rank: int
    eligible: bool
    meets_sla: bool
    within_budget: bool
    predicted_p50_ms: float
    predicted_p95_ms: float
    time_left_ms: float
    cost_usd: float
    error_rate: float
    circuit: str
    in_flight: int
    probe: bool
    reason: str
    p_on_time: float = 1.0
    """Predicted probability that a call started now succeeds by the deadline:
    P(latency <= time left) x (1 - error rate), plus a failover's chance after an error."""
    queue_wait_ms: float = 0.0
    """Predicted wait for a free slot (ms), from the calls in flight against the capacity."""
    on_time_needed: float = 0.0
    """The bar ``p_on_time`` had to reach for this job (the class objective's rule)."""
    rule: str = ""
    """That rule in words, e.g. "objective 99.00% for SLA <= 500ms"."""
    failover_counted: bool = False
    """``p_on_time`` includes the chance of a failover rescuing an error in time."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("predicted_p50_ms", "predicted_p95_ms", "time_left_ms", "queue_wait_ms"):
            data[key] = round(data[key], 1)
        data["error_rate"] = round(data["error_rate"], 4)
        data["p_on_time"] = round(data["p_on_time"], 4)
        data["on_time_needed"] = round(data["on_time_needed"], 4)
        return data


@dataclass(frozen=True, slots=True)
class Decision:
    """The ranked answer for one job. ``candidates[0]`` is the first choice; the worker fails
    over down the list of eligible candidates. ``sla_unmeetable`` says no eligible target is
    likely enough to answer in the time left (none ``meets_sla``); ``run`` is False when the job asked for a strict SLA
    and it is unmeetable (or nothing is eligible), so the job must fail fast with ``reason``."""

    job_id: str
    decided_at: float
    candidates: tuple[Candidate, ...]
    sla_unmeetable: bool
    run: bool
    reason: str
    hints: dict[str, Any] = field(default_factory=dict)

    @property
    def chosen(self) -> Candidate | None:
        return self.candidates[0] if self.run and self.candidates else None

    @property
    def call_order(self) -> list[Candidate]:
        """The eligible candidates in the order the worker should try them."""
        return [c for c in self.candidates if c.eligible] if self.run else []

    def to_dict(self) -> dict[str, Any]:
        chosen = self.chosen
        return {
            "chosen": chosen.target if chosen else None,
            "sla_unmeetable": self.sla_unmeetable,
            "run": self.run,
            "reason": self.reason,
            "decided_at": self.decided_at,
            "candidates": [c.to_dict() for c in self.candidates],
        }
