"""The cost/attainment frontier: ours at a sweep of SLO objectives, every baseline, the oracle.

    nice -n 19 python -m bench.routing_frontier --seeds 2 --generated 30 --out docs/benchmarks/routing-frontier.svg

Two panels: the six public scenarios and a sample of generated ones (scenarios 1..N). Each
point is a policy's mean over scenarios of SLO attainment (y) against its cost per on-time job
relative to the oracle's in the same scenario (x, log scale); ours is a line through the
objectives. Hand-written SVG (no plotting dependency); the numbers also go to a markdown table
(``--table``).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import click

from bench import machine, routing_generated, routing_sim
from bench.sim_generator import draw_scenario
from bench.sim_scenarios import SCENARIOS
from orchestrator.routing import DEFAULT_CONFIG, RoutingConfig

OBJECTIVES = (1.0, 0.999, 0.99, 0.95, 0.9)
BASELINES = tuple(b for b in routing_sim.BASELINES if b != "always-cheapest")
"""always-cheapest meets ~0% of deadlines in every public scenario: off the chart."""
Point = tuple[float, float]  # (attainment, cost / oracle's)


def _objective(value: float) -> RoutingConfig:
    return dataclasses.replace(DEFAULT_CONFIG, slo_default_objective=value)


def _mean_points(per_scenario: list[dict[str, Point]]) -> dict[str, Point]:
    names = per_scenario[0].keys()
    out = {}
    for n in names:
        ratios = [p[n][1] for p in per_scenario if math.isfinite(p[n][1])]
        out[n] = (statistics.fmean(p[n][0] for p in per_scenario), statistics.fmean(ratios) if ratios else math.inf)
    return out


def public_points(
    seeds: Sequence[int], log: Callable[[str], None], each: dict[str, dict[str, Point]] | None = None
) -> dict[str, Point]:
    """Mean points over the six public scenarios; ``each`` (if given) gets every scenario's."""
    per_scenario = []
    for scenario in SCENARIOS.values():
        runs = {}
        for name in (*BASELINES, routing_sim.ORACLE):
            runs[name] = [routing_sim.run_one(scenario, s, name) for s in seeds]
        for value in OBJECTIVES:
            runs[f"ours@{value}"] = [routing_sim.run_one(scenario, s, "ours", _objective(value)) for s in seeds]
        oracle = statistics.fmean(r.cost_per_on_time for r in runs[routing_sim.ORACLE])
        per_scenario.append(
            {
                n: (statistics.fmean(r.slo for r in rs), statistics.fmean(r.cost_per_on_time for r in rs) / oracle)
                for n, rs in runs.items()
            }
        )
        if each is not None:
            each[scenario.name] = per_scenario[-1]
        log(f"public {scenario.name} done")
    return _mean_points(per_scenario)


def generated_points(count: int, seeds: Sequence[int], log: Callable[[str], None]) -> dict[str, Point]:
    per_scenario = []
    g = routing_generated
    for index in range(1, count + 1):
        scenario = draw_scenario(index)
        runs = {n: [g.run_one(scenario, s, n) for s in seeds] for n in (*BASELINES, routing_sim.ORACLE)}
        for value in OBJECTIVES:
            runs[f"ours@{value}"] = [g.run_one(scenario, s, "ours", _objective(value)) for s in seeds]
        oracle = g.cost_per_on_time(runs[routing_sim.ORACLE])
        per_scenario.append({n: (g.attainment(rs), g.cost_per_on_time(rs) / oracle) for n, rs in runs.items()})
        log(f"generated {index} done")
    return _mean_points(per_scenario)


def _panel(title: str, points: dict[str, Point], x0: float, width: float, height: float) -> list[str]:
    """One chart as SVG elements: log-x cost ratio, linear-y attainment."""
    m = {"l": 60, "r": 20, "t": 30, "b": 45}
    ratios = [p[1] for p in points.values() if math.isfinite(p[1])]
    lo, hi = math.log10(min(ratios) * 0.8), math.log10(max(ratios) * 1.25)
    ys = [p[0] for p in points.values()]
    y_lo, y_hi = max(min(ys) - 0.02, 0.0), min(max(ys) + 0.01, 1.0)

    def px(r: float) -> float:
        return x0 + m["l"] + (math.log10(r) - lo) / (hi - lo) * (width - m["l"] - m["r"])

    def py(a: float) -> float:
        return m["t"] + (y_hi - a) / (y_hi - y_lo) * (height - m["t"] - m["b"])

    out = [
        f'<text x="{x0 + width / 2}" y="18" text-anchor="middle" font-weight="bold">{title}</text>',
        f'<rect x="{x0 + m["l"]}" y="{m["t"]}" width="{width - m["l"] - m["r"]}" '
        f'height="{height - m["t"] - m["b"]}" fill="none" stroke="#999"/>',
        f'<text x="{x0 + width / 2}" y="{height - 8}" text-anchor="middle">'
        "cost per on-time job / oracle's (log)</text>",
        f'<text x="{x0 + 14}" y="{height / 2}" transform="rotate(-90 {x0 + 14} {height / 2})" '
        'text-anchor="middle">SLO attainment</text>',
    ]
    for r in (0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 50):
        if lo <= math.log10(r) <= hi:
            tick_y = height - m["b"] + 15
            out.append(f'<text x="{px(r):.1f}" y="{tick_y}" text-anchor="middle" font-size="10">{r:g}x</text>')
    steps = 5
    for i in range(steps + 1):
        a = y_lo + (y_hi - y_lo) * i / steps
        out.append(f'<text x="{x0 + m["l"] - 4}" y="{py(a) + 3:.1f}" text-anchor="end" font-size="10">{a:.1%}</text>')
    ours = [(k, p) for k, p in points.items() if k.startswith("ours@")]
    path = " ".join(f"{px(p[1]):.1f},{py(p[0]):.1f}" for _, p in ours)
    out.append(f'<polyline points="{path}" fill="none" stroke="#1f6feb" stroke-width="2"/>')
    for k, p in ours:
        label = "ours (default 1.0)" if k == "ours@1.0" else k.split("@")[1]
        out.append(f'<circle cx="{px(p[1]):.1f}" cy="{py(p[0]):.1f}" r="3.5" fill="#1f6feb"/>')
        out.append(f'<text x="{px(p[1]) + 5:.1f}" y="{py(p[0]) - 5:.1f}" font-size="10" fill="#1f6feb">{label}</text>')
    for k, p in points.items():
        if k.startswith("ours@") or not math.isfinite(p[1]):
            continue
        colour = "#2da44e" if k == routing_sim.ORACLE else "#cf222e"
        out.append(f'<rect x="{px(p[1]) - 3.5:.1f}" y="{py(p[0]) - 3.5:.1f}" width="7" height="7" fill="{colour}"/>')
        out.append(f'<text x="{px(p[1]) + 6:.1f}" y="{py(p[0]) + 12:.1f}" font-size="10" fill="{colour}">{k}</text>')
    return out


def svg(panels: list[tuple[str, dict[str, Point]]], caption: str) -> str:
    width, height = 520, 380
    body = []
    for i, (title, points) in enumerate(panels):
        body += _panel(title, points, i * width, width, height)
    total = width * len(panels)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="{height + 24}" '
        f'viewBox="0 0 {total} {height + 24}" font-family="sans-serif" font-size="12">\n'
        f'<rect width="100%" height="100%" fill="white"/>\n' + "\n".join(body) + "\n"
        f'<text x="8" y="{height + 16}" font-size="10" fill="#555">{caption}</text>\n</svg>\n'
    )


def table(panels: list[tuple[str, dict[str, Point]]]) -> str:
    lines = []
    for title, points in panels:
        lines += [f"#### {title}", "", "| policy | SLO attainment % | cost / oracle's |", "|---|---|---|"]
        for k, (a, r) in points.items():
            lines.append(f"| {k} | {a * 100:.2f} | {r:.3f}x |")
        lines.append("")
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--seeds", type=click.IntRange(1, 20), default=2, show_default=True)
@click.option("--generated", type=click.IntRange(0, 1000), default=30, show_default=True, help="Generated scenarios.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="SVG path.")
@click.option("--table", "table_out", type=click.Path(dir_okay=False, path_type=Path), default=None)
def main(seeds: int, generated: int, out: Path, table_out: Path | None) -> None:
    """Sweep our objective, run every baseline and the oracle, draw the frontier."""
    seed_list = list(range(1, seeds + 1))
    began = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - began:.0f} s] {message}", file=sys.stderr, flush=True)

    each: dict[str, dict[str, Point]] = {}
    panels = [(f"Public scenarios (6 x {seeds} seeds)", public_points(seed_list, log, each))]
    if generated:
        panels.append(
            (f"Generated scenarios 1-{generated} (x {seeds} seeds)", generated_points(generated, seed_list, log))
        )
    command = f"python -m bench.routing_frontier {' '.join(sys.argv[1:])}"
    out.write_text(svg(panels, f"{command}; ours swept over slo_default_objective {', '.join(map(str, OBJECTIVES))}"))
    if table_out is not None:
        table_out.write_text(
            f"Made by `{command}` in {time.perf_counter() - began:.0f} s on {machine.describe()}.\n\n"
            + table(panels)
            + "\n"
            + table([(f"Public: {name}", points) for name, points in each.items()])
        )


if __name__ == "__main__":
    main()
