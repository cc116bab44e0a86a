"""The scenario generator: a deterministic, documented space; common random numbers; the CLI."""

from __future__ import annotations

import json
import math
from dataclasses import replace

from click.testing import CliRunner

from bench import routing_generated
from bench.routing_sim import make_policy
from bench.sim_engine import Harness
from bench.sim_generator import (
    DURATION_S,
    TIERS,
    GenEffect,
    GenWorld,
    draw_scenario,
    make_draws,
    make_jobs,
)


def test_a_scenario_number_always_means_the_same_scenario_and_another_number_another():
    assert draw_scenario(17) == draw_scenario(17)
    assert draw_scenario(17) != draw_scenario(18)


def test_the_space_stays_within_its_documented_bounds():
    kinds: set[str] = set()
    shapes: set[str] = set()
    for index in range(1, 121):
        s = draw_scenario(index)
        assert 2 <= len(s.fleet) <= 8 and 15.0 <= s.rate <= 40.0
        assert math.isclose(sum(c.share for c in s.mix), 1.0) and 2 <= len(s.mix) <= 3
        fastest = min(t.median_ms for t in s.fleet)
        assert all(c.sla_ms >= 3.0 * fastest - 5.0 for c in s.mix)
        for t in s.fleet:
            low, high = TIERS[t.tier][0]
            assert low <= t.median_ms <= high and t.capacity >= 1 and t.told_capacity >= 1
            shapes.add(t.shape)
        assert all(0.0 <= e.start <= DURATION_S for e in s.effects)
        kinds.update(s.events)
    assert kinds == {"shift", "drift", "flap", "cold", "gray", "errors", "correlated", "ramp"}
    assert shapes == {"lognormal", "heavy", "bimodal"}


def test_every_policy_faces_the_same_jobs_and_the_same_target_behaviour():
    scenario = draw_scenario(5)
    seen = {}
    for name in ("random", "oracle"):
        jobs = make_jobs(scenario, 2)
        world = GenWorld(scenario, make_draws(scenario, 2, len(jobs)))
        records = Harness(make_policy(name, world, 2, catalogue=scenario.catalogue()), world, jobs).run()
        seen[name] = [(r.job.arrival, r.job.sla_ms) for r in records]
    assert seen["random"] == seen["oracle"] and len(seen["oracle"]) > 100
    assert make_draws(scenario, 2, 10) == make_draws(scenario, 2, 10) != make_draws(scenario, 3, 10)


def test_effects_change_what_a_target_does_and_when():
    scenario = draw_scenario(5)
    name = scenario.fleet[0].name
    drift = GenEffect(name, 10.0, 20.0, latency_x=3.0, ramp="up")
    cold = GenEffect(name, 10.0, 20.0, latency_x=5.0, ramp="down")
    down = GenEffect(name, 10.0, 12.0, down=True)
    world = GenWorld(replace(scenario, effects=(drift, cold, down)), make_draws(scenario, 1, 5))
    target = scenario.fleet[0]
    assert world.condition(target, 5.0).latency_x == 1.0
    assert world.condition(target, 11.0).down
    assert math.isclose(world.condition(target, 15.0).latency_x, 2.0 * 3.0)  # drift half-way x cold half-way
    assert math.isclose(world.condition(target, 25.0).latency_x, 3.0)  # a drift stays; a cold start fades


def test_the_catalogue_can_be_wrong_or_silent_about_a_target():
    told = [
        (t.told_prior_ms, t.median_ms, t.told_capacity, t.capacity)
        for i in range(1, 60)
        for t in draw_scenario(i).fleet
    ]
    assert any(p is None for p, *_ in told)
    assert any(p is not None and (p / m > 2.0 or p / m < 0.5) for p, m, *_ in told)
    assert any(tc != c for *_, tc, c in told)
    catalogue = draw_scenario(3).catalogue()
    assert [t.cost_per_call_usd for t in catalogue] == [t.cost_usd for t in draw_scenario(3).fleet]


def test_the_command_reruns_one_scenario_and_reports_the_verdict(tmp_path):
    out, raw = tmp_path / "gen.md", tmp_path / "gen.json"
    args = [
        "--only",
        "4",
        "--seeds",
        "1",
        "--policies",
        "ours,least-EWMA,oracle",
        "--out",
        str(out),
        "--json",
        str(raw),
    ]
    result = CliRunner().invoke(routing_generated.main, args)
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "Ours >= best baseline - 0.05 pp:" in text and "| 4 |" in text
    runs = json.loads(raw.read_text())["runs"]["4"]
    assert set(runs) == {"ours", "least-EWMA", "oracle"} and runs["oracle"][0][1] > 0
    described = CliRunner().invoke(routing_generated.main, ["--only", "4", "--describe"])
    assert json.loads(described.output)[0]["index"] == 4


def test_the_held_out_range_is_not_the_development_range():
    result = CliRunner().invoke(routing_generated.main, ["--held-out", "--scenarios", "2", "--describe"])
    indices = [s["index"] for s in json.loads(result.output)]
    assert indices == [routing_generated.HELD_OUT_FIRST_SCENARIO, routing_generated.HELD_OUT_FIRST_SCENARIO + 1]


def test_a_report_renders_again_from_the_saved_runs(tmp_path):
    raw, first, again = tmp_path / "runs.json", tmp_path / "a.md", tmp_path / "b.md"
    args = ["--only", "6", "--seeds", "1", "--policies", "ours,random,oracle", "--json", str(raw), "--out", str(first)]
    assert CliRunner().invoke(routing_generated.main, args).exit_code == 0
    result = CliRunner().invoke(routing_generated.main, ["--from-json", str(raw), "--out", str(again)])
    assert result.exit_code == 0, result.output
    body = lambda path: path.read_text().split("\n", 2)[2]  # noqa: E731 (the first line names the command)
    assert body(first) == body(again) and "| 6 |" in body(again)


def test_ours_alone_reuses_the_baselines_of_an_earlier_run_and_gets_the_same_report(tmp_path, monkeypatch):
    whole, base, reused = tmp_path / "whole.json", tmp_path / "base.json", tmp_path / "reused.json"
    run = lambda *args: CliRunner().invoke(routing_generated.main, ["--only", "6", "--seeds", "1", *args])  # noqa: E731
    assert run("--policies", "ours,random,oracle", "--json", str(whole)).exit_code == 0
    assert run("--policies", "random,oracle", "--json", str(base)).exit_code == 0
    rerun: list[str] = []
    task = routing_generated._task
    monkeypatch.setattr(routing_generated, "_task", lambda args: rerun.append(args[2]) or task(args))
    result = run("--policies", "ours", "--reuse", str(base), "--json", str(reused))
    assert result.exit_code == 0, result.output
    assert rerun == ["ours"]
    assert json.loads(reused.read_text())["runs"] == json.loads(whole.read_text())["runs"]
    other_seeds = CliRunner().invoke(
        routing_generated.main, ["--only", "6", "--seeds", "2", "--policies", "ours", "--reuse", str(base)]
    )
    assert other_seeds.exit_code != 0 and "seeds" in other_seeds.output


def test_regenerating_a_report_keeps_its_hand_written_reading(tmp_path):
    from bench.routing_generated import READING, _write

    out = tmp_path / "report.md"
    _write(out, "first figures\n")
    assert out.read_text() == "first figures\n"
    out.write_text(out.read_text() + f"\n{READING} (hand-written)\n\nWhy scenario 52 loses.\n")
    _write(out, "second figures\n")
    assert out.read_text() == f"second figures\n\n{READING} (hand-written)\n\nWhy scenario 52 loses.\n"
