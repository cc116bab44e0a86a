"""The per-class SLO objective: how likely to be on time a target must be to count as meeting
a job's SLA. Pure functions over the config and the class's live record.

The operator names an attainment objective per SLA class (``RoutingConfig.slo_objectives``,
by the largest ``sla_ms`` of the class; jobs above every bound take ``slo_default_objective``).

* **Objective 1.0 (the default): deadline first.** A target meets the SLA when its chance of
  being on time is within ``deadline_first_slack`` of the best target's, so the router picks the
  cheapest of the (nearly) likeliest targets. It trades no deadlines for cost.
* **Objective A < 1: meet A, then save.** The per-job bar starts at A and moves with the
  class's live record (``SloClassStats``: the recent miss rate, an EWMA over about the last
  1 / ``slo_alpha`` jobs of the class, fleet-wide): if the class misses more often than 1 - A
  allows, the bar tightens (down to a quarter of the allowance), if it misses less, it loosens
  (up to ``slo_loosen_max`` times the allowance). Never above the best target's chance less the
  slack: a class that cannot reach its objective gets the likeliest targets.

Either way a target below ``min(on_time_target, objective)`` never counts as meeting the SLA:
if none reaches that floor, the SLA is unmeetable (and a strict job fails fast).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from orchestrator.routing.config import RoutingConfig
from orchestrator.routing.types import SloClassStats

DEFAULT_CLASS = "default"
_TIGHTEN_MIN = 0.25
"""A class missing its objective allows each job at least a quarter of its miss allowance."""


class Bar(NamedTuple):
    """What a target must reach for one job: ``needed`` (probability of being on time),
    ``floor`` (below it, unmeetable), and the rule in words for the explanation."""

    needed: float
    floor: float
    rule: str


def slo_class(config: RoutingConfig, sla_ms: float) -> tuple[str, float]:
    """(label, attainment objective) of the class a job with this SLA belongs to."""
    for bound, objective in sorted(config.slo_objectives):
        if sla_ms <= bound:
            return f"le{bound:g}ms", objective
    return DEFAULT_CLASS, config.slo_default_objective


def allowance_factor(objective: float, record: SloClassStats | None, config: RoutingConfig) -> float:
    """How many times the class's miss allowance (1 - objective) one job may use, from its record."""
    if record is None or record.jobs <= 0.0 or objective >= 1.0:
        return 1.0
    allowed = 1.0 - objective
    ratio = allowed / record.miss_rate if record.miss_rate > 0.0 else math.inf
    ratio = min(max(ratio, _TIGHTEN_MIN), config.slo_loosen_max)
    weight = min(record.jobs / config.slo_min_jobs, 1.0)
    return 1.0 + weight * (ratio - 1.0)


def bar(config: RoutingConfig, sla_ms: float, best_p: float, record: SloClassStats | None = None) -> Bar:
    """The bar for one job whose likeliest target is on time with probability ``best_p``."""
    label, objective = slo_class(config, sla_ms)
    slack = config.deadline_first_slack
    near_best = best_p - slack
    if objective >= 1.0:
        floor = config.on_time_target
        if near_best < floor:
            return Bar(floor, floor, f"floor {floor:.0%}; the likeliest target: {best_p:.2%}")
        return Bar(near_best, floor, f"deadline first: best {best_p:.2%} less {slack:.1%}")
    factor = allowance_factor(objective, record, config)
    target_p = 1.0 - (1.0 - objective) * factor
    floor = min(config.on_time_target, objective)
    needed = max(floor, min(target_p, near_best))
    if near_best < floor:
        return Bar(floor, floor, f"floor {floor:.0%}; the likeliest target: {best_p:.2%}")
    scope = "the rest" if label == DEFAULT_CLASS else f"SLA <= {label[2:]}"
    rule = f"objective {objective:.2%} for {scope}"
    if factor != 1.0 and record is not None:
        rule += f", class missing {record.miss_rate:.2%} recently"
    if target_p > near_best:
        rule += f", capped at best {best_p:.2%} less {slack:.1%}"
    return Bar(needed, floor, rule)
