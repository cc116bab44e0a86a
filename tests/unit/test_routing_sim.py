"""The routing simulator: deterministic, common random numbers, worker-like mechanics."""

from __future__ import annotations

from dataclasses import replace

import click
import pytest
from click.testing import CliRunner

from bench import routing_sim, sim_engine
from bench.sim_engine import Harness, Plan, World
from bench.sim_scenarios import SCENARIOS, Effect, Job, make_draws, make_jobs
from orchestrator.error_kinds import ErrorKind

TINY = replace(SCENARIOS["brownout"], name="tiny", duration_s=24.0, warmup_s=4.0, rate=25.0)
TINY = replace(TINY, effects=(Effect("cloud", 10.0, 16.0, latency_x=5.0, error_rate=0.3),))
POLICIES = ("ours", "random", "least-EWMA", "oracle")


def test_the_same_seeds_give_the_same_table():
    first = routing_sim.render(routing_sim.run_all([TINY], [1, 2], POLICIES), [1, 2])
    second = routing_sim.render(routing_sim.run_all([TINY], [1, 2], POLICIES), [1, 2])
    assert first == second
    assert "| ours |" in first and "| oracle |" in first


def test_other_seeds_give_other_jobs_and_draws():
    assert make_jobs(TINY, 1) == make_jobs(TINY, 1)
    assert make_jobs(TINY, 1) != make_jobs(TINY, 2)
    draws_a, draws_b = make_draws(TINY, 1, 50), make_draws(TINY, 1, 50)
    assert draws_a["edge"].z == draws_b["edge"].z and draws_a["edge"].z != draws_a["gpu"].z


def test_every_policy_sees_the_same_jobs():
    seen: dict[str, list[tuple[float, float]]] = {}
    for name in ("random", "oracle"):
        jobs = make_jobs(TINY, 3)
        world = World(make_draws(TINY, 3, len(jobs)), TINY.effects)
        records = Harness(routing_sim.make_policy(name, world, 3), world, jobs).run()
        seen[name] = [(r.job.arrival, r.job.sla_ms) for r in records]
    assert seen["random"] == seen["oracle"] and len(seen["oracle"]) > 300


def test_the_oracle_is_at_least_as_good_as_any_policy():
    results = routing_sim.run_all([TINY], [1], POLICIES)["tiny"]
    oracle = results["oracle"].slo.mean
    assert all(oracle >= s.slo.mean for s in results.values())
    assert results["ours"].slo.mean > results["random"].slo.mean


def test_our_hedges_stay_within_the_budget():
    metrics = routing_sim.run_one(TINY, 1, "ours")
    assert metrics.hedge_share <= 0.1


class _Fixed:
    """A policy that always calls the given order."""

    name = "fixed"

    def __init__(self, order: tuple[str, ...]) -> None:
        self.order = order
        self.ended: list = []

    def plan(self, job: Job, now: float) -> Plan:
        return Plan(self.order)

    def call_started(self, target: str, now: float):
        return None

    def call_ended(self, target: str, token, outcome) -> None:
        self.ended.append(outcome)

    def hedge_allowed(self, job: Job, now: float) -> bool:
        return False


def test_the_simulator_bills_the_failures_the_worker_bills():
    from modelreasoner import calls

    WORKER_BILLS = calls.COST_BEARING  # the set the worker's calls bill (modelreasoner/calls.py)
    assert sim_engine.COST_BEARING_ERRORS is WORKER_BILLS, "one definition, shared by the worker and the simulator"
    target = World(make_draws(TINY, 1, 1), ()).targets["gpu"]
    for kind in ErrorKind:
        assert sim_engine.billed(target, kind) == (target.cost_usd if kind in WORKER_BILLS else 0.0)
    assert sim_engine.billed(target, None) == target.cost_usd


def test_an_unreachable_target_costs_its_connect_timeout_and_the_job_fails_over():
    down = replace(TINY, name="down", effects=(Effect("edge", 0.0, 100.0, down=True),))
    jobs = [Job(0, 1.0, 10_000.0, None)]
    world = World(make_draws(down, 1, 1), down.effects)
    policy = _Fixed(("edge", "gpu"))
    (record,) = Harness(policy, world, jobs).run()
    first, second = policy.ended
    assert (first.target, first.error_kind, first.cost_usd) == ("edge", ErrorKind.CONNECT_ERROR, 0.0)
    assert first.latency_ms == pytest.approx(2000.0)
    assert second.ok and record.winner == "gpu" and record.calls == 2 and record.on_time
    assert record.cost_usd == pytest.approx(0.004)


def test_calls_queue_for_a_free_slot():
    jobs = [Job(i, 0.0, 10_000.0, None) for i in range(6)]
    world = World(make_draws(TINY, 1, 6), ())
    policy = _Fixed(("edge",))
    records = Harness(policy, world, jobs).run()
    finish = sorted(r.success_at for r in records)
    # two slots: the fifth and sixth calls finish after at least two others each
    assert finish[4] > finish[1] and finish[5] > finish[2]


def test_the_command_writes_a_report(tmp_path):
    out = tmp_path / "routing.md"
    result = CliRunner().invoke(
        routing_sim.main,
        ["--seeds", "1", "--scenarios", "steady", "--policies", "random,oracle", "--processes", "1", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert text.startswith("# Routing benchmark") and "python -m bench.routing_sim --seeds 1" in text
    assert "### Steady mixed load (`steady`)" in text


def test_an_unknown_policy_is_refused_with_the_choices():
    result = CliRunner().invoke(routing_sim.main, ["--policies", "magic"])
    assert result.exit_code != 0 and "unknown policy 'magic'" in result.output and "oracle" in result.output


def test_hand_written_notes_survive_a_regenerated_report(tmp_path):
    out = tmp_path / "routing.md"
    out.write_text(f"old table\n{routing_sim.NOTES_MARKER}\n## Why\nBecause.\n")
    args = ["--seeds", "1", "--scenarios", "steady", "--policies", "oracle", "--processes", "1", "--out", str(out)]
    assert CliRunner().invoke(routing_sim.main, args).exit_code == 0
    text = out.read_text()
    assert "old table" not in text and text.rstrip().endswith("## Why\nBecause.")


def test_knobs_can_be_changed_from_the_command_line():
    assert routing_sim.parse_overrides(["on_time_target=0.8", "stall_detection=false"]).on_time_target == 0.8
    assert routing_sim.parse_overrides(["stall_detection=false"]).stall_detection is False
    for bad in ("nope=1", "on_time_target", "probe_max_in_flight=many"):
        with pytest.raises(click.BadParameter):
            routing_sim.parse_overrides([bad])
