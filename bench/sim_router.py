"""Our production router in the simulator, driven only through the documented interface of
``orchestrator.routing``: ``Router`` over an ``InMemoryStatsStore`` in simulated time, fed
back every call's ``Outcome``, with hedging planned and budgeted by ``orchestrator.routing``'s
``hedge_plan`` and ``HedgeBudget`` exactly as the worker does."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from bench.sim_engine import CallOutcome, Plan
from bench.sim_scenarios import FLEET, Job, SimTarget
from orchestrator.routing import (
    DEFAULT_CONFIG,
    HedgeBudget,
    InMemoryStatsStore,
    Outcome,
    Router,
    RouteRequest,
    RoutingConfig,
    Target,
    hedge_plan,
)

EPOCH = 1_700_000_000.0
"""Simulated t=0 as an epoch second, so the router sees realistic timestamps."""


def fleet_targets(fleet: Sequence[SimTarget] = FLEET) -> list[Target]:
    """The catalogue entries the router is given (tier defaults: cost, capacity, prior)."""
    return [
        Target(
            t.name,
            t.name,
            url=f"sim://{t.name}",
            cost_per_call_usd=t.cost_usd,
            capacity=t.capacity,
            prior_latency_ms=t.prior_latency_ms,
        )
        for t in fleet
    ]


class OurRouterPolicy:
    """The production ``Router``; with ``hedging`` it also sends hedged backup calls under the
    shared hedge budget, as ``modelreasoner.dispatch`` does."""

    def __init__(
        self,
        rng: random.Random,
        config: RoutingConfig = DEFAULT_CONFIG,
        hedging: bool = True,
        name: str = "ours",
        targets: Sequence[Target] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.router = Router(InMemoryStatsStore(), config, rng)
        self.targets = list(targets) if targets is not None else fleet_targets()
        self.hedging = hedging
        self.budget = HedgeBudget()
        self.capacity = {t.name: t.capacity for t in self.targets}
        self.in_flight: dict[str, int] = {}
        self.first_call = False

    def plan(self, job: Job, now: float) -> Plan:
        request = RouteRequest(
            job_id=str(job.index), sla_ms=job.sla_ms, submitted_at=EPOCH + job.arrival, budget_usd=job.budget_usd
        )
        decision = self.router.decide(request, self.targets, EPOCH + now)
        order = tuple(c.target for c in decision.call_order)
        hedge = None
        if self.hedging and order:
            spec = hedge_plan(decision, request, self.config)
            hedge = (spec.delay_s, spec.backup) if spec else None
        # As in the worker, the decision's count of calls in flight goes with the job's first
        # call (the harness starts it right away), not with a failover or a hedge made later.
        self.first_call = decision.run and bool(order)
        return Plan(order, run=decision.run, hedge=hedge)

    def call_started(self, target: str, now: float) -> Any:
        self.budget.note_call(EPOCH + now)
        busy = self.in_flight.get(target, 0)
        self.in_flight[target] = busy + 1
        reported = busy if self.first_call else None
        self.first_call = False
        return self.router.call_started(target, EPOCH + now), reported

    def call_ended(self, target: str, token: Any, outcome: CallOutcome) -> None:
        call_id, busy = token
        self.in_flight[target] -= 1
        self.router.call_ended(target, call_id)
        self.router.record(
            Outcome(
                target,
                outcome.ok,
                outcome.latency_ms,
                EPOCH + outcome.at,
                outcome.error_kind,
                outcome.cost_usd,
                in_flight=busy,
                capacity=self.capacity.get(target) if busy is not None else None,
            )
        )

    def job_ended(self, job: Job, on_time: bool, at: float | None) -> None:
        self.router.record_job(job.sla_ms, on_time, EPOCH + (at if at is not None else job.arrival))

    def hedge_allowed(self, job: Job, now: float) -> bool:
        return self.budget.try_acquire(EPOCH + now)
