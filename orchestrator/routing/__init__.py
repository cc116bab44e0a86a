"""SLA-aware routing: pick the model server most likely to meet a job's deadline at least cost.

Stable public interface (an outside harness may rely on exactly these names; new fields only
ever get defaults):

Types (frozen dataclasses, ``orchestrator.routing.types``)
    ``Target``        a model server: name, tier, url, contract, cost_per_call_usd, capacity,
                      prior_latency_ms, timeout_seconds, enabled
    ``RouteRequest``  one job: job_id, sla_ms, submitted_at (epoch s), preferred_target,
                      strict_sla, budget_usd; ``.deadline`` in epoch s
    ``Decision``      ranked ``candidates`` (each a ``Candidate`` with its score components:
                      predicted p50/p95 ms, ``p_on_time``, ``queue_wait_ms``, cost, error
                      rate, circuit, and a one-line ``reason``), ``sla_unmeetable``, ``run``,
                      ``reason``; ``.chosen``, ``.call_order``, ``.to_dict()``
    ``Outcome``       one call: target, ok, latency_ms, at (epoch s), error_kind, cost_usd
    ``TargetStats``   what was learned about a target; ``RoutingConfig`` the tunables
                      (docs/routing.md explains every one); ``HedgeSpec`` a hedge to send;
                      ``SloClassStats`` how one SLA class is doing (for its objective)

Calls
    ``decide(request, targets, stats, now, config=DEFAULT_CONFIG, u=1.0) -> Decision``
        the pure policy: no I/O, no clock; ``u`` is the exploration draw in [0, 1)
    ``predict_latency(target, stats, now, config) -> (p50_ms, p95_ms)``
    ``observe(stats, outcome, config) -> TargetStats`` and ``at_time(stats, now, config)``
        the pure learning step and time decay; ``with_telemetry(stats, at=..., ...)``
    ``hedge_plan(decision, request, config) -> HedgeSpec | None``
        when (``delay_s`` after the decision) and where (``backup``) to send a backup call
    ``Router(store, config, rng)`` with ``.decide(request, targets, now)``,
        ``.record(outcome)``, ``.record_job(sla_ms, on_time, at)`` (a finished job, for the
        SLO objective of its class; optional), ``.call_started(target, now) -> call_id``, ``.call_ended(...)``,
        ``.record_telemetry(target, at=..., latency_ms=..., utilization=..., queue_depth=...,
        up=...)``, ``.stats(targets, now)``
    ``InMemoryStatsStore()`` / ``RedisStatsStore(redis_connection)``: the ``StatsStore``s
    ``HedgeBudget(max_share, window_s)`` / ``RedisHedgeBudget(redis_connection, ...)``:
        ``.note_call(now)`` for every call, ``.try_acquire(now)`` before every hedge

Example: the production router in simulated time against two synthetic targets. The operator
asks for 99% of the jobs up to 500 ms on time and lets the router save cost beyond that (the
default objective, "deadline first", would keep them on the GPU until the edge box has proved
nearly as likely to be on time). The cheap edge box is fine until it turns slow at t=60 s;
within a few calls the router moves the 300 ms jobs to the GPU, and the edge box wins them back
after it recovers at t=120 s.

>>> import random
>>> from orchestrator.routing import InMemoryStatsStore, Outcome, RouteRequest, Router, RoutingConfig, Target
>>> targets = [Target("edge", "edge", cost_per_call_usd=0.0002, prior_latency_ms=80),
...            Target("gpu", "gpu", cost_per_call_usd=0.004, prior_latency_ms=60)]
>>> config = RoutingConfig(slo_objectives=((500, 0.99),))
>>> router = Router(InMemoryStatsStore(), config, rng=random.Random(7))
>>> def edge_latency(t):  # synthetic behaviour: slow between 60 s and 120 s
...     return 900.0 if 60 <= t < 120 else 70.0
>>> chosen = []
>>> for step in range(360):                     # one job every 0.5 s for 180 s
...     now = step * 0.5
...     job = RouteRequest(job_id=str(step), sla_ms=300, submitted_at=now)
...     target = router.decide(job, targets, now).chosen.target
...     latency = edge_latency(now) if target == "edge" else 50.0
...     _ = router.record(Outcome(target, ok=True, latency_ms=latency, at=now + latency / 1000))
...     chosen.append((now, target))
>>> share = lambda lo, hi: sum(t == "edge" for at, t in chosen if lo <= at < hi) / (2 * (hi - lo))
>>> share(0, 60) > 0.9, share(70, 120) < 0.2, share(150, 180) > 0.8
(True, True, True)

Hedging: a 300 ms job on the edge box gets a backup call to the GPU if the edge has not
answered by its predicted p95; the shared budget admits a hedge only while hedges stay within
10% of all calls.

>>> from orchestrator.routing import HedgeBudget, hedge_plan
>>> job = RouteRequest(job_id="h", sla_ms=300, submitted_at=180.0)
>>> decision = router.decide(job, targets, 180.0)
>>> plan = hedge_plan(decision, job, config)
>>> decision.chosen.target, plan.backup, plan.delay_s < 0.3
('edge', 'gpu', True)
>>> budget = HedgeBudget(max_share=0.1)
>>> for _ in range(9):
...     budget.note_call(180.0)
>>> budget.try_acquire(180.0), budget.try_acquire(180.0)   # 1 hedge in 10 calls; not 2
(True, False)
"""

from orchestrator.routing.config import DEFAULT_CONFIG, RoutingConfig
from orchestrator.routing.hedge_budget import HedgeBudget, RedisHedgeBudget
from orchestrator.routing.hedging import HedgeSpec, hedge_plan
from orchestrator.routing.learning import at_time, observe, with_telemetry
from orchestrator.routing.policy import decide, predict_latency
from orchestrator.routing.router import Router
from orchestrator.routing.stats import InMemoryStatsStore, RedisStatsStore, StatsStore
from orchestrator.routing.types import (
    Candidate,
    CircuitState,
    Decision,
    Outcome,
    RouteRequest,
    SloClassStats,
    Target,
    TargetStats,
)

__all__ = [
    "DEFAULT_CONFIG",
    "Candidate",
    "CircuitState",
    "Decision",
    "HedgeBudget",
    "HedgeSpec",
    "InMemoryStatsStore",
    "Outcome",
    "RedisHedgeBudget",
    "RedisStatsStore",
    "RouteRequest",
    "Router",
    "RoutingConfig",
    "SloClassStats",
    "StatsStore",
    "Target",
    "TargetStats",
    "at_time",
    "decide",
    "hedge_plan",
    "observe",
    "predict_latency",
    "with_telemetry",
]
