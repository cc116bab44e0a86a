"""The policy's decisions over a fixed battery (tests/support/decision_battery.py: synthetic
fleets in every state, and every decision of short simulator runs) are exactly the recorded
ones, every field of every candidate included: a speed-up or a refactor of the policy must
change none of them. A change meant to change decisions re-records them with
``python -m tests.support.decision_battery --record`` (and says so in its commit)."""

from __future__ import annotations

import json

import pytest

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
