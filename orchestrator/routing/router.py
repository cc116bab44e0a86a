"""Router: the thin stateful shell around the pure policy. It reads a stats snapshot, calls
``policy.decide``, and folds outcomes back into the store."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from functools import partial

from orchestrator.routing import learning, policy
from orchestrator.routing.config import DEFAULT_CONFIG, RoutingConfig
from orchestrator.routing.objective import slo_class
from orchestrator.routing.stats import StatsStore
from orchestrator.routing.types import Decision, Outcome, RouteRequest, Target, TargetStats


class Router:
    """Decides where jobs go and learns from what happened.

    ``rng`` supplies the exploration draws; pass a seeded ``random.Random`` for repeatable runs.
    """

    def __init__(
        self,
        store: StatsStore,
        config: RoutingConfig = DEFAULT_CONFIG,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self._rng = rng or random.Random()

    def decide(self, request: RouteRequest, targets: Sequence[Target], now: float) -> Decision:
        """The ranked decision for ``request`` at ``now`` (epoch s), from live shared stats."""
        stats = self.store.snapshot([t.name for t in targets], now)
        label, goal = slo_class(self.config, request.sla_ms)
        record = self.store.slo_record(label) if goal < 1.0 and hasattr(self.store, "slo_record") else None
        return policy.decide(request, targets, stats, now, self.config, self._rng.random(), slo=record)

    def record_job(self, sla_ms: float, on_time: bool, at: float) -> None:
        """Count one finished job (``on_time``: answered successfully by its deadline) in its SLA
        class's live record, which moves that class's bar towards its objective. Only classes
        with an objective below 1 keep a record; a store without records ignores it."""
        label, goal = slo_class(self.config, sla_ms)
        if goal < 1.0 and hasattr(self.store, "update_slo"):
            self.store.update_slo(label, partial(learning.observe_job, on_time=on_time, at=at, config=self.config))

    def record(self, outcome: Outcome) -> TargetStats:
        """Fold one call's outcome into the shared stats (latency, errors, circuit)."""
        return self.store.update(outcome.target, partial(learning.observe, outcome=outcome, config=self.config))

    def record_telemetry(
        self,
        target: str,
        *,
        at: float,
        latency_ms: float | None = None,
        utilization: float | None = None,
        queue_depth: int | None = None,
        up: bool | None = None,
    ) -> TargetStats:
        """Blend one normalized telemetry sample into ``target``'s stats: latency in ms,
        utilization 0-1, queue depth (requests waiting), up/down; ``at`` is epoch s. Fields
        left None keep their last value. Fresh telemetry (``telemetry_ttl_s``) moves the
        predicted median (``telemetry_weight``), counts busy slots and queued requests into the
        queue wait, and a target reported down is not called."""
        sample = {"latency_ms": latency_ms, "utilization": utilization, "queue_depth": queue_depth, "up": up}
        return self.store.update(target, partial(learning.with_telemetry, at=at, **sample))

    def call_started(self, target: str, now: float) -> str:
        """Count a call in flight; returns the id to pass to ``call_ended``."""
        call_id = uuid.uuid4().hex
        self.store.call_started(target, call_id, now)
        return call_id

    def call_ended(self, target: str, call_id: str) -> None:
        self.store.call_ended(target, call_id)

    def stats(self, targets: Sequence[Target], now: float) -> dict[str, TargetStats]:
        """Live stats of ``targets`` as of ``now`` (decay and circuit timers applied)."""
        raw = self.store.snapshot([t.name for t in targets], now)
        return {name: learning.at_time(s, now, self.config) for name, s in raw.items()}
