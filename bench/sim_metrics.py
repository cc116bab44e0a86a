"""What one simulated run achieved, and the mean and spread over seeds.

Jobs that arrive during the warm-up are run but not counted. A job is on time when it got a
successful answer by its deadline. Cost counts every call that reached a server: failed ones,
failovers and hedge losers included.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field

from bench.sim_engine import JobRecord
from bench.sim_scenarios import Effect, Scenario

RECOVERY_WINDOW_S = 5.0
"""Attainment is judged over the jobs that arrive in a sliding 5 s window."""
RECOVERY_STEP_S = 0.5
RECOVERY_TOLERANCE = 0.02
"""Recovered: the window's attainment is back within 2 points of the policy's normal level."""
RECOVERY_SETTLE_S = 10.0
"""Jobs arriving up to 10 s after an event ends do not count towards the normal level."""
RECOVERY_CAP_AFTER_END_S = 30.0
"""A policy not recovered 30 s after the event ended is reported at that cap."""
WIN_BACK_SHARE = 0.8
"""Won back: the target again gets 80% of the share of first calls it had before the event."""


@dataclass
class RunMetrics:
    slo: float
    by_class: dict[float, float]
    cost_per_on_time: float
    p99_ms: float
    hedge_share: float
    calls_per_job: float
    recover_s: float | None
    win_back_s: float | None
    within_budget: float | None
    jobs: int


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    index = min(int(q * len(ordered)), len(ordered) - 1)
    return ordered[index]


def _events(scenario: Scenario, effects: tuple[Effect, ...]) -> list[tuple[float, float]]:
    windows = sorted({(e.start, e.end) for e in effects})
    if scenario.surge:
        windows.append((scenario.surge[0], scenario.surge[2]))
    return windows


def _attainment(records: Iterable[JobRecord]) -> tuple[float, int]:
    records = list(records)
    if not records:
        return 1.0, 0
    return sum(r.on_time for r in records) / len(records), len(records)


def recovery_seconds(records: list[JobRecord], events: list[tuple[float, float]]) -> float | None:
    """Mean over events of the time from an event's start until the policy's attainment (5 s
    windows) is back within 2 points of its level outside events."""
    if not events:
        return None

    def in_event(t: float) -> bool:
        return any(s <= t < e + RECOVERY_SETTLE_S for s, e in events)

    normal, _ = _attainment(r for r in records if not in_event(r.job.arrival))
    by_second: dict[int, list[JobRecord]] = {}
    for r in records:
        by_second.setdefault(int(r.job.arrival / RECOVERY_STEP_S), []).append(r)
    times = []
    for start, end in events:
        cap = end + RECOVERY_CAP_AFTER_END_S - start
        recovered = cap
        tau = start
        while tau - start < cap:
            first = int(tau / RECOVERY_STEP_S)
            window = [
                r for k in range(first, first + int(RECOVERY_WINDOW_S / RECOVERY_STEP_S)) for r in by_second.get(k, [])
            ]
            level, count = _attainment(window)
            if count >= 5 and level >= normal - RECOVERY_TOLERANCE:
                recovered = tau - start
                break
            tau += RECOVERY_STEP_S
        times.append(recovered)
    return statistics.fmean(times)


def _first_share(records: list[JobRecord], target: str, start: float, end: float) -> tuple[float, int]:
    window = [r for r in records if start <= r.job.arrival < end]
    return (sum(r.first == target for r in window) / len(window) if window else 0.0), len(window)


def win_back_seconds(records: list[JobRecord], effects: tuple[Effect, ...]) -> float | None:
    """Mean over events that hit a target of the time from the event's end until that target
    again gets ``WIN_BACK_SHARE`` of the first calls it got in the 20 s before the event."""
    windows = sorted({(e.target, e.start, e.end) for e in effects})
    times = []
    for target, start, end in windows:
        before, _ = _first_share(records, target, start - 20.0, start)
        if before <= 0.0:
            continue
        tau = end
        while tau < end + RECOVERY_CAP_AFTER_END_S:
            share, count = _first_share(records, target, tau, tau + RECOVERY_WINDOW_S)
            if count >= 5 and share >= WIN_BACK_SHARE * before:
                break
            tau += RECOVERY_STEP_S
        times.append(tau - end)
    return statistics.fmean(times) if times else None


def run_metrics(records: list[JobRecord], scenario: Scenario, effects: tuple[Effect, ...], hedges: int) -> RunMetrics:
    measured = [r for r in records if r.job.arrival >= scenario.warmup_s]
    on_time = [r for r in measured if r.on_time]
    by_class = {}
    for sla in sorted({r.job.sla_ms for r in measured}):
        members = [r for r in measured if r.job.sla_ms == sla]
        by_class[sla] = sum(r.on_time for r in members) / len(members)
    cost = sum(r.cost_usd for r in measured)
    calls = sum(r.calls for r in measured)
    budgeted = [r for r in measured if r.job.budget_usd is not None]
    hedged = sum(r.hedged for r in measured)
    return RunMetrics(
        slo=len(on_time) / len(measured),
        by_class=by_class,
        cost_per_on_time=cost / len(on_time) if on_time else math.inf,
        p99_ms=_percentile([((r.end_at or r.job.arrival) - r.job.arrival) * 1000.0 for r in measured], 0.99),
        hedge_share=hedged / max(calls, 1),
        calls_per_job=calls / len(measured),
        recover_s=recovery_seconds(measured, _events(scenario, effects)),
        win_back_s=win_back_seconds(measured, effects),
        within_budget=(sum(r.cost_usd <= r.job.budget_usd + 1e-12 for r in budgeted) / len(budgeted))
        if budgeted
        else None,
        jobs=len(measured),
    )


@dataclass
class Spread:
    mean: float
    sd: float
    low: float
    high: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        if not all(math.isfinite(v) for v in values):
            return cls(math.inf, 0.0, min(values), math.inf)
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(statistics.fmean(values), sd, min(values), max(values))


@dataclass
class Summary:
    """One policy in one scenario over all seeds."""

    policy: str
    slo: Spread
    by_class: dict[float, Spread]
    cost_per_on_time: Spread
    p99_ms: Spread
    hedge_share: Spread
    calls_per_job: Spread
    recover_s: Spread | None
    win_back_s: Spread | None
    within_budget: Spread | None
    seeds: int
    per_seed_slo: list[float] = field(default_factory=list)


def summarize(policy: str, runs: list[RunMetrics]) -> Summary:
    classes = sorted({c for r in runs for c in r.by_class})
    recover = [r.recover_s for r in runs if r.recover_s is not None]
    win_back = [r.win_back_s for r in runs if r.win_back_s is not None]
    budget = [r.within_budget for r in runs if r.within_budget is not None]
    return Summary(
        policy=policy,
        slo=Spread.of([r.slo for r in runs]),
        by_class={c: Spread.of([r.by_class[c] for r in runs if c in r.by_class]) for c in classes},
        cost_per_on_time=Spread.of([r.cost_per_on_time for r in runs]),
        p99_ms=Spread.of([r.p99_ms for r in runs]),
        hedge_share=Spread.of([r.hedge_share for r in runs]),
        calls_per_job=Spread.of([r.calls_per_job for r in runs]),
        recover_s=Spread.of(recover) if recover else None,
        win_back_s=Spread.of(win_back) if win_back else None,
        within_budget=Spread.of(budget) if budget else None,
        seeds=len(runs),
        per_seed_slo=[r.slo for r in runs],
    )
