"""Routing on generated scenarios: our router, every baseline and the oracle, on a sample of the
space in ``bench/sim_generator.py``.

    nice -n 19 python -m bench.routing_generated --scenarios 200 --seeds 3 --out docs/benchmarks/routing-generated.md
    python -m bench.routing_generated --only 137 --seeds 3           # rerun one scenario
    python -m bench.routing_generated --held-out --scenarios 100     # the held-out range, once

Scenarios 1..N are the development range; ``--held-out`` draws scenarios 1,000,001.. and runs
seeds 1001.. instead: they were not looked at while the router was changed, and are reported
separately. Common random numbers: for one (scenario, seed) every policy sees the same jobs and
the same draws. ``--json`` keeps every run's numbers (the frontier picture reads them).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import click

from bench import machine
from bench.routing_sim import BASELINES, ORACLE, OURS, make_policy, parse_overrides
from bench.sim_engine import Harness, JobRecord
from bench.sim_generator import GenScenario, GenWorld, draw_scenario, make_draws, make_jobs
from orchestrator.routing import DEFAULT_CONFIG, RoutingConfig

HELD_OUT_FIRST_SCENARIO = 1_000_001
HELD_OUT_FIRST_SEED = 1001
TOLERANCE = 0.0005
"""Ours "keeps up" with the best baseline when its attainment is at least the baseline's less
0.05 percentage points (the issue's target)."""
POLICIES = (OURS, *BASELINES, ORACLE)
CLASSES = (("tight (<= 500 ms)", 0.0, 500.0), ("medium (1-3 s)", 500.0, 3000.0), ("loose (5-15 s)", 3000.0, math.inf))


@dataclass(frozen=True)
class Run:
    """One policy on one (scenario, seed): on-time and total jobs overall and per class, and cost."""

    on_time: int
    jobs: int
    cost_usd: float
    by_class: dict[str, tuple[int, int]]


def _class_of(sla_ms: float) -> str:
    return next(label for label, lo, hi in CLASSES if lo < sla_ms <= hi)


def measure(records: list[JobRecord], warmup_s: float) -> Run:
    counted = [r for r in records if r.job.arrival >= warmup_s]
    by_class: dict[str, list[int]] = {}
    for r in counted:
        cell = by_class.setdefault(_class_of(r.job.sla_ms), [0, 0])
        cell[0] += r.on_time
        cell[1] += 1
    return Run(
        on_time=sum(r.on_time for r in counted),
        jobs=len(counted),
        cost_usd=sum(r.cost_usd for r in counted),
        by_class={k: (v[0], v[1]) for k, v in by_class.items()},
    )


def run_one(scenario: GenScenario, seed: int, policy: str, config: RoutingConfig = DEFAULT_CONFIG) -> Run:
    jobs = make_jobs(scenario, seed)
    world = GenWorld(scenario, make_draws(scenario, seed, len(jobs)))
    harness = Harness(make_policy(policy, world, seed, config, scenario.catalogue()), world, jobs)
    return measure(harness.run(), scenario.warmup_s)


def _task(args: tuple[int, int, str, RoutingConfig]) -> tuple[int, int, str, Run]:
    index, seed, policy, config = args
    return index, seed, policy, run_one(draw_scenario(index), seed, policy, config)


def _complete(
    raw: dict[tuple[int, str, int], Run], indices: Sequence[int], seeds: Sequence[int], policies: Sequence[str]
) -> dict[int, dict[str, list[Run]]]:
    """The scenarios whose every (policy, seed) has run."""
    done = [i for i in indices if all((i, p, s) in raw for p in policies for s in seeds)]
    return {i: {p: [raw[(i, p, s)] for s in seeds] for p in policies} for i in done}


def run_all(
    indices: Sequence[int],
    seeds: Sequence[int],
    policies: Sequence[str],
    processes: int,
    config: RoutingConfig,
    checkpoint: Callable[[dict[int, dict[str, list[Run]]]], None] | None = None,
    known: dict[tuple[int, str, int], Run] | None = None,
) -> dict[int, dict[str, list[Run]]]:
    """Runs by scenario index, then policy (one Run per seed, in seed order). ``checkpoint``
    gets the scenarios completed so far every 100 runs (a run cut short keeps them). Runs in
    ``known`` (baselines of an earlier run: they do not depend on the router) are not rerun."""
    raw: dict[tuple[int, str, int], Run] = dict(known or {})
    tasks = [(i, s, p, config) for i in indices for s in seeds for p in policies if (i, p, s) not in raw]
    pool = multiprocessing.get_context("fork").Pool(processes) if processes > 1 else None
    try:
        stream = pool.imap_unordered(_task, tasks, chunksize=4) if pool else map(_task, tasks)
        for done, (index, seed, policy, run) in enumerate(stream, start=1):
            raw[(index, policy, seed)] = run
            if done % 50 == 0 or done == len(tasks):
                print(f"[{done}/{len(tasks)}] runs done", file=sys.stderr, flush=True)
            if checkpoint is not None and done % 100 == 0:
                checkpoint(_complete(raw, indices, seeds, policies))
    finally:
        if pool:
            pool.close()
            pool.join()
    return _complete(raw, indices, seeds, policies)


def attainment(runs: list[Run]) -> float:
    """Mean over seeds of the share of jobs on time."""
    return statistics.fmean(r.on_time / max(r.jobs, 1) for r in runs)


def cost_per_on_time(runs: list[Run]) -> float:
    on_time = sum(r.on_time for r in runs)
    return sum(r.cost_usd for r in runs) / on_time if on_time else math.inf


def class_attainment(runs: list[Run], label: str) -> float | None:
    cells = [r.by_class[label] for r in runs if label in r.by_class]
    jobs = sum(c[1] for c in cells)
    return sum(c[0] for c in cells) / jobs if jobs else None


@dataclass(frozen=True)
class Verdict:
    index: int
    ours: float
    best: str
    best_slo: float
    oracle: float
    cost_ratio: float

    @property
    def margin_pp(self) -> float:
        return (self.ours - self.best_slo) * 100

    @property
    def keeps_up(self) -> bool:
        return self.ours >= self.best_slo - TOLERANCE


def verdicts(results: dict[int, dict[str, list[Run]]]) -> list[Verdict]:
    out = []
    for index, by_policy in results.items():
        ours = attainment(by_policy[OURS])
        baselines = {p: attainment(by_policy[p]) for p in BASELINES if p in by_policy}
        best = max(baselines, key=lambda p: baselines[p]) if baselines else "–"
        oracle = attainment(by_policy[ORACLE]) if ORACLE in by_policy else math.nan
        ratio = (
            cost_per_on_time(by_policy[OURS]) / cost_per_on_time(by_policy[ORACLE]) if ORACLE in by_policy else math.nan
        )
        out.append(Verdict(index, ours, best, baselines.get(best, math.nan), oracle, ratio))
    return out


def _quantiles(values: list[float]) -> str:
    finite = sorted(v for v in values if math.isfinite(v))
    if not finite:
        return "–"
    pick = lambda q: finite[min(int(q * len(finite)), len(finite) - 1)]  # noqa: E731
    return (
        f"mean {statistics.fmean(finite):.3f}x, median {pick(0.5):.3f}x, p10 {pick(0.1):.3f}x, "
        f"p90 {pick(0.9):.3f}x, max {finite[-1]:.3f}x (n={len(finite)})"
    )


def render(results: dict[int, dict[str, list[Run]]], seeds: Sequence[int], worst: int = 10) -> str:
    vs = verdicts(results)
    kept = sum(v.keeps_up for v in vs)
    policies = [p for p in POLICIES if all(p in r for r in results.values())]
    equal = [v.cost_ratio for v in vs if v.ours >= v.oracle - 0.005]
    lines = [
        f"Scenarios: {len(vs)} ({min(results)}..{max(results)}); seeds {', '.join(map(str, seeds))}; means over seeds.",
        "",
        f"* **Ours >= best baseline - 0.05 pp: {kept} of {len(vs)} scenarios ({kept / max(len(vs), 1):.1%}).**",
        f"* Ours' cost per on-time job / the oracle's, all scenarios: {_quantiles([v.cost_ratio for v in vs])}",
        f"* The same where ours is within 0.5 pp of the oracle's attainment: {_quantiles(equal)}",
        f"* Mean attainment: ours {statistics.fmean(v.ours for v in vs):.3%}, best baseline per scenario "
        f"{statistics.fmean(v.best_slo for v in vs):.3%}, oracle {statistics.fmean(v.oracle for v in vs):.3%}.",
        "",
        "### Per policy and SLA class (jobs pooled over scenarios and seeds)",
        "",
        "| policy | all % | "
        + " | ".join(f"{c[0]} %" for c in CLASSES)
        + " | $ per 1k on-time | scenarios it is the best baseline |",
        "|---|---|" + "---|" * len(CLASSES) + "---|---|",
    ]
    for p in policies:
        runs = [r for by in results.values() for r in by[p]]
        cells = [class_attainment(runs, c[0]) for c in CLASSES]
        best_count = sum(v.best == p for v in vs) if p in BASELINES else "–"
        lines.append(
            f"| {p} | {sum(r.on_time for r in runs) / max(sum(r.jobs for r in runs), 1) * 100:.2f} | "
            + " | ".join("–" if c is None else f"{c * 100:.2f}" for c in cells)
            + f" | {cost_per_on_time(runs) * 1000:.3f} | {best_count} |"
        )
    lines += [
        "",
        f"### The {worst} scenarios where ours does worst against the best baseline",
        "",
        "Rerun one: `python -m bench.routing_generated --only INDEX --seeds "
        f"{len(seeds)}{' --held-out' if min(seeds) >= HELD_OUT_FIRST_SEED else ''}`; its parameters: "
        "add `--describe`.",
        "",
        "| scenario | ours % | best baseline | its % | margin pp | oracle % | cost / oracle | targets | events "
        "| mix (SLA ms, share) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in sorted(vs, key=lambda v: v.margin_pp)[:worst]:
        s = draw_scenario(v.index)
        fleet = ", ".join(f"{t.name} {t.median_ms:.0f}ms/{t.shape}/{t.capacity}sl" for t in s.fleet)
        mix = ", ".join(f"{c.sla_ms:.0f}:{c.share:.2f}" for c in s.mix)
        lines.append(
            f"| {v.index} | {v.ours * 100:.2f} | {v.best} | {v.best_slo * 100:.2f} | {v.margin_pp:+.2f} | "
            f"{v.oracle * 100:.2f} | {v.cost_ratio:.2f}x | {fleet} | {', '.join(s.events) or '–'} | {mix} |"
        )
    return "\n".join(lines) + "\n"


def load(path: Path) -> tuple[dict[int, dict[str, list[Run]]], list[int]]:
    """The results and seeds of a ``--json`` file (complete or a checkpoint)."""
    data = json.loads(path.read_text())
    results = {
        int(i): {
            p: [Run(a, b, c, {k: tuple(v) for k, v in d.items()}) for a, b, c, d in runs] for p, runs in by.items()
        }
        for i, by in data["runs"].items()
    }
    return results, data["seeds"]


def reusable(path: Path, seeds: Sequence[int]) -> dict[tuple[int, str, int], Run]:
    """The baselines' and the oracle's runs of a ``--json`` file, keyed like ``run_all``'s: what
    a run of ours alone can reuse (common random numbers: they are the same runs). Ours' runs
    are never reused."""
    results, file_seeds = load(path)
    if list(file_seeds) != list(seeds):
        raise click.BadParameter(f"{path} has seeds {file_seeds}, not {list(seeds)}")
    return {
        (i, p, s): run
        for i, by in results.items()
        for p, runs in by.items()
        if p != OURS
        for s, run in zip(file_seeds, runs, strict=True)
    }


def dump(results: dict[int, dict[str, list[Run]]]) -> dict:
    return {
        str(i): {p: [[r.on_time, r.jobs, r.cost_usd, r.by_class] for r in runs] for p, runs in by.items()}
        for i, by in results.items()
    }


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--scenarios", type=click.IntRange(1, 100_000), default=200, show_default=True, help="How many.")
@click.option(
    "--first", type=click.IntRange(1), default=None, help="First scenario index (default 1, or the held-out start)."
)
@click.option("--only", default="", help="Comma-separated scenario indices (instead of --scenarios/--first).")
@click.option("--seeds", type=click.IntRange(1, 100), default=3, show_default=True, help="Seeds per scenario.")
@click.option("--held-out", is_flag=True, help="Draw from the held-out scenario and seed ranges.")
@click.option("--policies", default=",".join(POLICIES), show_default=True, help="Comma-separated policy names.")
@click.option("--processes", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="KNOB=VALUE", help="A RoutingConfig knob for ours.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Markdown report.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Raw runs.")
@click.option(
    "--reuse",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Take the baselines' and the oracle's runs from this --json file (same seeds) instead of rerunning them.",
)
@click.option("--describe", is_flag=True, help="Print the scenarios' parameters as JSON and exit.")
@click.option(
    "--from-json",
    "from_json",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Render the report from a --json file (e.g. the checkpoint of a run cut short) instead of running.",
)
def main(
    scenarios: int,
    first: int | None,
    only: str,
    seeds: int,
    held_out: bool,
    policies: str,
    processes: int,
    overrides: tuple[str, ...],
    out: Path | None,
    json_out: Path | None,
    reuse: Path | None,
    describe: bool,
    from_json: Path | None,
) -> None:
    """Run every policy on generated scenarios and report how ours compares."""
    config = parse_overrides(overrides)
    start = first or (HELD_OUT_FIRST_SCENARIO if held_out else 1)
    indices = [int(i) for i in only.split(",") if i] or list(range(start, start + scenarios))
    seed_list = list(range(HELD_OUT_FIRST_SEED if held_out else 1, (HELD_OUT_FIRST_SEED if held_out else 1) + seeds))
    if describe:
        click.echo(json.dumps([draw_scenario(i).describe() for i in indices], indent=1))
        return
    names = [p for p in policies.split(",") if p]
    unknown = [p for p in names if p not in POLICIES]
    if unknown or (OURS not in names and json_out is None):
        raise click.BadParameter(f"policies come from {', '.join(POLICIES)} and include {OURS!r} unless --json")
    argv = " ".join(sys.argv[1:])
    if from_json is not None:
        results, seed_list = load(from_json)
        report = f"Rendered by `python -m bench.routing_generated {argv}`.\n\n" + render(results, seed_list)
        _write(out, report)
        return

    def save(done: dict[int, dict[str, list[Run]]]) -> None:
        if json_out is not None:
            json_out.write_text(json.dumps({"seeds": seed_list, "overrides": list(overrides), "runs": dump(done)}))

    began = time.perf_counter()
    known = reusable(reuse, seed_list) if reuse is not None else {}
    names += [p for p in POLICIES if p not in names and any(k[1] == p for k in known)]
    results = run_all(indices, seed_list, names, processes, config, checkpoint=save, known=known)
    elapsed = time.perf_counter() - began
    save(results)
    if OURS not in names:
        return
    report = (
        f"Made by `python -m bench.routing_generated {argv}` in {elapsed:.0f} s on {machine.describe()}.\n\n"
        + render(results, seed_list)
    )
    _write(out, report)


READING = "## Reading it"
"""The hand-written analysis of a committed report starts at this heading; regenerating the
report keeps it (and everything after it) as is."""


def _write(out: Path | None, report: str) -> None:
    if out is None:
        sys.stdout.write(report)
        return
    old = out.read_text() if out.exists() else ""
    at = old.find(READING)
    out.write_text(report.rstrip("\n") + "\n\n" + old[at:] if at >= 0 else report)


if __name__ == "__main__":
    main()
