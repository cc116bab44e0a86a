"""The policy's decisions over a fixed battery (tests/support/decision_battery.py: synthetic
fleets in every state, and every decision of short simulator runs) are exactly the recorded
ones, every field of every candidate included: a speed-up or a refactor of the policy must
change none of them. A change meant to change decisions re-records them with
``python -m tests.support.decision_battery --record`` (and says so in its commit)."""

from __future__ import annotations

import json

import pytest

from orchestrator.routing import CircuitState
from tests.support import decision_battery


@pytest.mark.parametrize("source", sorted(decision_battery.SOURCES))
def test_the_decisions_are_the_recorded_ones(source):
    recorded = json.loads(decision_battery.RECORD.read_text(encoding="utf-8"))[source]
    lines = [decision_battery.canonical(d) for d in decision_battery.SOURCES[source]()]
    assert len(lines) == recorded["decisions"]
    digest = decision_battery.hashlib.sha256("".join(line + "\n" for line in lines).encode()).hexdigest()
    assert digest == recorded["sha256"], f"{source}: decisions differ from the record"


def test_the_canonical_form_tells_decisions_apart():
    first, second = list(decision_battery.synthetic(scenes=1, jobs=2))
    assert decision_battery.canonical(first) != decision_battery.canonical(second)
    assert repr(first.candidates[0].p_on_time) in decision_battery.canonical(first)


def test_every_candidate_field_holds_its_own_kind_of_value():
    """The policy builds Candidates positionally (for speed): a field added to or moved in
    ``Candidate`` without the policy following would put values in the wrong fields."""
    states = {state.value for state in CircuitState}
    for decision in decision_battery.synthetic(scenes=8, jobs=4):
        for rank, c in enumerate(decision.candidates, start=1):
            assert (c.rank, type(c.target), type(c.tier), type(c.reason), type(c.rule)) == (rank, str, str, str, str)
            assert c.reason.startswith(f"{c.target}: ") and c.circuit in states
            assert all(type(flag) is bool for flag in (c.eligible, c.meets_sla, c.within_budget, c.probe))
            assert type(c.failover_counted) is bool and type(c.in_flight) is int
            assert 0.0 <= c.p_on_time <= 1.0 and 0.0 <= c.error_rate <= 1.0 and 0.0 <= c.on_time_needed <= 1.0
            assert c.predicted_p95_ms >= c.predicted_p50_ms >= c.queue_wait_ms >= 0.0
            assert c.cost_usd >= 0.0 and c.time_left_ms == (decision.candidates[0].time_left_ms)
