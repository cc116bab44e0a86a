"""Unit tests for tier emulation (modelreasoner.server.emulation): profiles, sampling, latency window."""

from __future__ import annotations

import random
import statistics

import pytest

from modelreasoner.server.emulation import (
    FAULTS,
    MAX_DELAY_FACTOR,
    TIER_DEFAULTS,
    TIERS,
    LatencyWindow,
    Profile,
    apply_changes,
    profile_for_tier,
    sample_outcome,
)

# ---------------------------------------------------------------- profiles


def test_documented_tier_defaults():
    assert profile_for_tier("edge") == Profile("edge", 120.0, 0.35, 0.002, 2, 0.0002)
    assert profile_for_tier("cloud") == Profile("cloud", 350.0, 0.5, 0.01, 64, 0.0010)
    assert profile_for_tier("gpu") == Profile("gpu", 60.0, 0.25, 0.002, 8, 0.0040)
    assert profile_for_tier("none") == Profile("none", 0.0, 0.0, 0.0, 1000, 0.0)
    assert profile_for_tier() == Profile()
    assert set(TIER_DEFAULTS) == set(TIERS)


def test_explicit_overrides_win_and_none_means_keep_the_default():
    p = profile_for_tier("edge", latency_ms=5.0, capacity=None, fault="http_500", seed=7)
    assert (p.latency_ms, p.capacity, p.fault, p.seed, p.cost_usd) == (5.0, 2, "http_500", 7, 0.0002)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"fail_rate": 1.5}, "fail_rate"),
        ({"fail_rate": -0.1}, "fail_rate"),
        ({"capacity": 0}, "capacity"),
        ({"capacity": 2.5}, "capacity"),
        ({"latency_ms": -1.0}, "latency_ms"),
        ({"latency_ms": float("nan")}, "latency_ms"),
        ({"jitter": -0.2}, "jitter"),
        ({"cost_usd": -1.0}, "cost_usd"),
        ({"fault": "explode"}, "fault"),
        ({"tier": "mainframe"}, "tier"),
        ({"seed": "abc"}, "seed"),
        ({"latency_ms": None}, "latency_ms"),
    ],
)
def test_invalid_profile_values_name_the_field(changes, field):
    with pytest.raises(ValueError, match=f"^{field}: "):
        Profile().replace(**changes)


def test_every_fault_mode_is_a_valid_profile():
    for fault in FAULTS:
        assert Profile(fault=fault).fault == fault


def test_apply_changes_updates_only_given_fields():
    edge = profile_for_tier("edge", seed=3)
    changed = apply_changes(edge, {"fail_rate": 1.0})
    assert changed == edge.replace(fail_rate=1.0)


def test_apply_changes_with_tier_resets_to_that_tier_then_overrides():
    current = profile_for_tier("edge", latency_ms=1.0, seed=9, fault="timeout")
    changed = apply_changes(current, {"tier": "gpu", "capacity": 3})
    assert changed == Profile("gpu", 60.0, 0.25, 0.002, 3, 0.0040, seed=9, fault="timeout")


def test_to_dict_round_trips():
    p = profile_for_tier("cloud", seed=1)
    assert Profile(**p.to_dict()) == p


# ---------------------------------------------------------------- sampling


def test_no_latency_means_no_delay_and_no_failure_by_default():
    rng = random.Random(0)
    outcomes = [sample_outcome(Profile(), rng) for _ in range(100)]
    assert all(o.delay_ms == 0.0 and not o.fail for o in outcomes)


def test_zero_jitter_gives_the_median_exactly():
    rng = random.Random(0)
    assert {sample_outcome(Profile(latency_ms=80.0), rng).delay_ms for _ in range(20)} == {80.0}


def test_lognormal_delay_has_the_configured_median_and_is_capped():
    rng = random.Random(12345)
    profile = Profile(latency_ms=120.0, jitter=0.35)
    delays = [sample_outcome(profile, rng).delay_ms for _ in range(4000)]
    assert 110.0 < statistics.median(delays) < 130.0
    assert min(delays) > 0.0
    assert max(delays) <= 120.0 * MAX_DELAY_FACTOR
    wild = Profile(latency_ms=10.0, jitter=5.0)
    assert max(sample_outcome(wild, rng).delay_ms for _ in range(2000)) == 10.0 * MAX_DELAY_FACTOR


def test_fail_rate_extremes_and_frequency():
    rng = random.Random(1)
    assert all(sample_outcome(Profile(fail_rate=1.0), rng).fail for _ in range(200))
    assert not any(sample_outcome(Profile(fail_rate=0.0), rng).fail for _ in range(200))
    fails = sum(sample_outcome(Profile(fail_rate=0.25), rng).fail for _ in range(4000))
    assert 850 < fails < 1150


def test_same_seed_same_sequence_and_rate_changes_do_not_shift_delays():
    def run(profile: Profile, seed: int) -> list:
        rng = random.Random(seed)
        return [sample_outcome(profile, rng) for _ in range(50)]

    profile = Profile(latency_ms=50.0, jitter=0.5, fail_rate=0.1)
    assert run(profile, 42) == run(profile, 42)
    assert run(profile, 42) != run(profile, 43)
    more_failures = run(profile.replace(fail_rate=0.9), 42)
    assert [o.delay_ms for o in more_failures] == [o.delay_ms for o in run(profile, 42)]


# ---------------------------------------------------------------- latency window


def test_latency_window_percentiles_use_nearest_rank():
    window = LatencyWindow()
    assert window.percentile(50, now=0.0) == 0.0
    for i, latency in enumerate(range(1, 101)):
        window.record(float(latency), now=float(i) * 0.01)
    assert window.percentile(50, now=1.0) == 50.0
    assert window.percentile(95, now=1.0) == 95.0
    assert window.percentile(100, now=1.0) == 100.0


def test_latency_window_forgets_old_samples_and_caps_size():
    window = LatencyWindow(window_s=10.0, max_samples=3)
    window.record(500.0, now=0.0)
    window.record(5.0, now=20.0)
    assert window.percentile(95, now=20.0) == 5.0
    for t in range(5):
        window.record(float(t), now=21.0)
    assert window.percentile(100, now=21.0) == 4.0
    assert window.percentile(0, now=21.0) == 2.0
    assert window.percentile(50, now=100.0) == 0.0
