"""Routing-quality benchmark: our production router against baselines and a clairvoyant oracle.

    python -m bench.routing_sim --seeds 10 --out docs/benchmarks/routing.md

A deterministic discrete-event simulation (bench/sim_engine.py) of the fleet and scenarios in
bench/sim_scenarios.py. Every policy sees the same jobs and the same target behaviour (common
random numbers); the same seeds always give the same table. Progress goes to stderr; the
markdown report to ``--out`` (or stdout). docs/routing.md explains how to read it.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import click

from bench import machine
from bench.sim_baselines import (
    CheapestPolicy,
    LeastEwmaPolicy,
    LiteLLMLatencyPolicy,
    OraclePolicy,
    PeakEwmaP2CPolicy,
    RandomPolicy,
    RoundRobinPolicy,
)
from bench.sim_engine import Harness, World
from bench.sim_metrics import RunMetrics, Summary, run_metrics, summarize
from bench.sim_router import OurRouterPolicy
from bench.sim_scenarios import SCENARIOS, Scenario, make_draws, make_jobs
from orchestrator.routing import DEFAULT_CONFIG, RoutingConfig, Target

OURS = "ours"
ORACLE = "oracle"
BASELINES = ("random", "round-robin", "always-cheapest", "least-EWMA", "P2C peak-EWMA", "LiteLLM latency")
ABLATIONS = ("ours-no-hedge",)
POLICIES = (OURS, *ABLATIONS, *BASELINES, ORACLE)
ORACLE_GAP_PP = 2.0
"""Target: our attainment within 2 percentage points of the oracle's, averaged over seeds."""
ORACLE_COST_RATIO = 1.10
"""Target: at no more than 1.10x the oracle's cost per on-time job."""


def make_policy(
    name: str,
    world: World,
    seed: int,
    config: RoutingConfig = DEFAULT_CONFIG,
    catalogue: Sequence[Target] | None = None,
):
    """A fresh policy for one run over ``world``'s targets; ``config`` is what our router runs
    with, ``catalogue`` what it is told about the targets (default: the public fleet's)."""
    rng = random.Random(f"{seed}:{name}:policy")
    fleet = tuple(world.targets.values())
    factories = {
        OURS: lambda: OurRouterPolicy(rng, config, name=OURS, targets=catalogue),
        "ours-no-hedge": lambda: OurRouterPolicy(rng, config, hedging=False, name="ours-no-hedge", targets=catalogue),
        "random": lambda: RandomPolicy(rng, fleet),
        "round-robin": lambda: RoundRobinPolicy(fleet),
        "always-cheapest": lambda: CheapestPolicy(fleet),
        "least-EWMA": lambda: LeastEwmaPolicy(fleet),
        "P2C peak-EWMA": lambda: PeakEwmaP2CPolicy(rng, fleet),
        "LiteLLM latency": lambda: LiteLLMLatencyPolicy(fleet),
        ORACLE: lambda: OraclePolicy(world),
    }
    return factories[name]()


def run_one(scenario: Scenario, seed: int, policy_name: str, config: RoutingConfig = DEFAULT_CONFIG) -> RunMetrics:
    """One policy over one (scenario, seed): a fresh world with the shared draws."""
    jobs = make_jobs(scenario, seed)
    effects = scenario.effects_for(seed)
    world = World(make_draws(scenario, seed, len(jobs)), effects)
    harness = Harness(make_policy(policy_name, world, seed, config), world, jobs)
    records = harness.run()
    return run_metrics(records, scenario, effects, harness.hedges)


@dataclass(frozen=True)
class Task:
    scenario: Scenario
    seed: int
    policy: str
    config: RoutingConfig = DEFAULT_CONFIG


def _run_task(task: Task) -> tuple[Task, RunMetrics, float]:
    started = time.perf_counter()
    metrics = run_one(task.scenario, task.seed, task.policy, task.config)
    return task, metrics, time.perf_counter() - started


def run_all(
    scenarios: Sequence[Scenario],
    seeds: Sequence[int],
    policies: Sequence[str],
    processes: int = 1,
    config: RoutingConfig = DEFAULT_CONFIG,
) -> dict[str, dict[str, Summary]]:
    """Run every (scenario, seed, policy); summaries by scenario name, then policy name."""
    tasks = [Task(s, seed, p, config) for s in scenarios for seed in seeds for p in policies]
    results: dict[tuple[str, str], dict[int, RunMetrics]] = {}
    pool = multiprocessing.get_context("fork").Pool(processes) if processes > 1 else None
    try:
        stream = pool.imap_unordered(_run_task, tasks) if pool else map(_run_task, tasks)
        for done, (task, metrics, seconds) in enumerate(stream, start=1):
            results.setdefault((task.scenario.name, task.policy), {})[task.seed] = metrics
            print(
                f"[{done}/{len(tasks)}] {task.scenario.name} seed {task.seed} {task.policy}: "
                f"SLO {metrics.slo:.1%}, ${metrics.cost_per_on_time * 1000:.2f}/1k on-time ({seconds:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
    finally:
        if pool:
            pool.close()
            pool.join()
    return {
        s.name: {p: summarize(p, [results[(s.name, p)][seed] for seed in seeds]) for p in policies} for s in scenarios
    }


def _pct(spread, digits: int = 1) -> str:
    return f"{spread.mean * 100:.{digits}f} ± {spread.sd * 100:.{digits}f}"


def _row(summary: Summary, classes: list[float]) -> str:
    cells = [
        summary.policy,
        _pct(summary.slo),
        *[f"{summary.by_class[c].mean * 100:.1f}" if c in summary.by_class else "" for c in classes],
        _cost(summary),
        f"{summary.p99_ms.mean:.0f}",
        f"{summary.hedge_share.mean * 100:.1f}",
        f"{summary.calls_per_job.mean:.2f}",
        f"{summary.recover_s.mean:.1f}" if summary.recover_s else "–",
        f"{summary.win_back_s.mean:.1f}" if summary.win_back_s else "–",
    ]
    if summary.within_budget is not None:
        cells.append(f"{summary.within_budget.mean * 100:.1f}")
    return "| " + " | ".join(cells) + " |"


NOTES_MARKER = "<!-- notes: kept when the report is regenerated -->"
"""Everything from this line on in an existing report is hand-written analysis: kept as is."""


def _kept_notes(out: Path) -> str:
    if not out.exists():
        return ""
    text = out.read_text()
    at = text.find(NOTES_MARKER)
    return "\n" + text[at:] if at >= 0 else ""


def _cost(summary: Summary) -> str:
    cost = summary.cost_per_on_time
    if not math.isfinite(cost.mean):
        return "– (a run with no job on time)"
    return f"{cost.mean * 1000:.3f} ± {cost.sd * 1000:.3f}"


def _class_label(sla_ms: float) -> str:
    return f"{sla_ms / 1000:g} s" if sla_ms >= 1000 else f"{sla_ms:.0f} ms"


def scenario_table(scenario: Scenario, summaries: dict[str, Summary]) -> str:
    classes = sorted({c for s in summaries.values() for c in s.by_class})
    budget = any(s.within_budget is not None for s in summaries.values())
    head = [
        "policy",
        "SLO attained % (mean ± sd)",
        *[f"{_class_label(c)} %" for c in classes],
        "$ per 1k on-time jobs",
        "p99 ms",
        "hedges % of calls",
        "calls/job",
        "recover s",
        "win back s",
    ]
    if budget:
        head.append("within budget %")
    lines = [
        f"### {scenario.title} (`{scenario.name}`)",
        "",
        scenario.notes,
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += [_row(summaries[p], classes) for p in POLICIES if p in summaries]
    return "\n".join(lines)


def verdicts(results: dict[str, dict[str, Summary]]) -> str:
    """The summary table: each scenario against the three targets (baseline columns empty
    when no baseline was run)."""
    lines = [
        "| scenario | ours SLO % | best baseline | its SLO % | oracle SLO % | gap to oracle (pp) | "
        "cost vs oracle | beats every baseline | within 2 pp | cost ≤ 1.10x |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, summaries in results.items():
        ours, oracle = summaries.get(OURS), summaries.get(ORACLE)
        if not (ours and oracle):
            continue
        baselines = [summaries[b] for b in BASELINES if b in summaries]
        best = max(baselines, key=lambda s: s.slo.mean) if baselines else None
        gap = (oracle.slo.mean - ours.slo.mean) * 100
        ratio = ours.cost_per_on_time.mean / oracle.cost_per_on_time.mean
        best_cells = f"{best.policy} | {best.slo.mean * 100:.2f}" if best else "– | –"
        beats = _mark(ours.slo.mean > best.slo.mean) if best else "–"
        lines.append(
            f"| {name} | {ours.slo.mean * 100:.2f} | {best_cells} | {oracle.slo.mean * 100:.2f} | {gap:.2f} | "
            f"{ratio:.3f}x | {beats} | {_mark(gap <= ORACLE_GAP_PP)} | {_mark(ratio <= ORACLE_COST_RATIO)} |"
        )
    return "\n".join(lines)


def parse_overrides(overrides: Sequence[str]) -> RoutingConfig:
    """A RoutingConfig with ``knob=value`` changes; unknown knobs and bad values are refused."""
    fields = {f.name: f for f in dataclasses.fields(RoutingConfig)}
    changes: dict[str, object] = {}
    for item in overrides:
        name, sep, raw = item.partition("=")
        if not sep or name not in fields:
            raise click.BadParameter(f"{item!r}: expected KNOB=VALUE with a RoutingConfig knob", param_hint="--set")
        kind = type(getattr(DEFAULT_CONFIG, name))
        try:
            if kind is tuple:  # slo_objectives: "500:0.999,3000:0.99"
                pairs = (p.split(":") for p in raw.split(",") if p)
                changes[name] = tuple((float(a), float(b)) for a, b in pairs)
            else:
                changes[name] = raw.lower() in ("1", "true", "yes") if kind is bool else kind(raw)
        except ValueError:
            raise click.BadParameter(f"{item!r}: not a valid {kind.__name__}", param_hint="--set") from None
    return dataclasses.replace(DEFAULT_CONFIG, **changes)


def _command(seeds: int, scenarios: str, policies: str, processes: int, out: Path | None) -> str:
    """The command line that reproduces this report (options at their default left out)."""
    parts = ["python -m bench.routing_sim", f"--seeds {seeds}"]
    if scenarios != ",".join(SCENARIOS):
        parts.append(f"--scenarios {scenarios}")
    if policies != ",".join(POLICIES):
        parts.append(f"--policies '{policies}'")
    parts.append(f"--processes {processes}")
    if out is not None:
        parts.append(f"--out {out}")
    return " ".join(parts)


def _mark(ok: bool) -> str:
    return "yes" if ok else "**no**"


def render(results: dict[str, dict[str, Summary]], seeds: Sequence[int]) -> str:
    """The deterministic part of the report: same seeds, same text."""
    parts = [
        f"Seeds: {', '.join(map(str, seeds))}. Means over seeds; ± is the standard deviation across seeds.",
        "",
        "## Targets",
        "",
        verdicts(results),
        "",
        "## Scenarios",
    ]
    for name, summaries in results.items():
        parts += ["", scenario_table(SCENARIOS.get(name) or _adhoc(name), summaries)]
    return "\n".join(parts) + "\n"


def _adhoc(name: str) -> Scenario:
    return Scenario(name, name, rate=0.0)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--seeds", type=click.IntRange(1, 1000), default=10, show_default=True, help="Seeds 1..N.")
@click.option("--scenarios", default=",".join(SCENARIOS), show_default=True, help="Comma-separated scenario names.")
@click.option("--policies", default=",".join(POLICIES), show_default=True, help="Comma-separated policy names.")
@click.option("--processes", type=click.IntRange(1, 64), default=2, show_default=True, help="Worker processes.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Markdown report path.")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KNOB=VALUE",
    help="Run our router with a RoutingConfig knob changed, e.g. --set on_time_target=0.95 (repeatable).",
)
def main(
    seeds: int, scenarios: str, policies: str, processes: int, out: Path | None, overrides: tuple[str, ...]
) -> None:
    """Simulate every policy in every scenario and write the markdown report."""
    config = parse_overrides(overrides)
    chosen = [SCENARIOS[n] for n in scenarios.split(",") if n]
    names = [p for p in policies.split(",") if p]
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise click.BadParameter(f"unknown policy {unknown[0]!r}; choose from {', '.join(POLICIES)}")
    seed_list = list(range(1, seeds + 1))
    started = time.perf_counter()
    results = run_all(chosen, seed_list, names, processes, config)
    elapsed = time.perf_counter() - started
    command = _command(seeds, scenarios, policies, processes, out) + "".join(f" --set {o}" for o in overrides)
    report = render(results, seed_list)
    print(f"done in {elapsed:.0f} s on {machine.describe()}", file=sys.stderr)
    if out is None:
        sys.stdout.write(report)
        return
    header = (
        "# Routing benchmark (simulator)\n\n"
        f"Made by `{command}` in {elapsed:.0f} s on {machine.describe()} with {processes} processes.\n"
        "How the simulator works and how to read this table: docs/routing.md, section "
        '"Benchmark".\n\n'
    )
    out.write_text(header + report + _kept_notes(out))


if __name__ == "__main__":
    main()
