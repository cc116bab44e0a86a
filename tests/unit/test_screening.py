"""Unit tests for the milestone screening baseline (modelreasoner.server.screening).

Expected outcomes come from the documented rule applied by hand to realistic caregiver sentences,
not from running the implementation: e.g. a 24-month-old who "doesn't kick a ball" misses one
24-month motor milestone -> moderate; one who "isn't walking" misses 15- and 18-month milestones,
which are from earlier bands -> high.
"""

from __future__ import annotations

import dataclasses

import pytest

from modelreasoner.server.milestones import AGE_BANDS, DOMAINS, MILESTONES
from modelreasoner.server.screening import (
    DISCLAIMER,
    INSUFFICIENT_INFORMATION,
    MODEL_VERSION,
    RISK_LEVELS,
    ScreeningResult,
    age_band,
    screen,
)


def flagged_texts(result: ScreeningResult) -> set[str]:
    return {f.milestone for f in result.milestones_flagged}


# ---------------------------------------------------------------- milestone data


def test_every_band_has_milestones_in_several_domains():
    for band in AGE_BANDS:
        in_band = [m for m in MILESTONES if m.band_months == band]
        assert len(in_band) >= 3, band
        assert len({m.domain for m in in_band}) >= 3, band


def test_milestones_use_known_bands_domains_and_have_keywords():
    for m in MILESTONES:
        assert m.band_months in AGE_BANDS
        assert m.domain in DOMAINS
        assert m.keywords and all(k.strip() == k and k for k in m.keywords)


def test_milestone_texts_are_unique_within_a_band():
    keys = [(m.band_months, m.text) for m in MILESTONES]
    assert len(keys) == len(set(keys))


# ---------------------------------------------------------------- age bands


@pytest.mark.parametrize(
    ("age", "band"),
    [(0, 0), (1, 0), (2, 2), (3, 2), (11, 9), (12, 12), (23, 18), (24, 24), (59, 48), (60, 60), (216, 60)],
)
def test_age_band_is_largest_checklist_age_not_above_the_child(age, band):
    assert age_band(age) == band
    assert screen(age, "").age_band_months == band


def test_later_band_milestones_are_not_expected_yet():
    # Hopping on one foot is a 60-month milestone: not expected of a 24-month-old.
    assert screen(24, "He can't hop on one foot yet.").risk_level == "low"
    assert "hops on one foot" in flagged_texts(screen(60, "He can't hop on one foot yet."))


def test_child_older_than_60_months_is_checked_against_all_bands():
    result = screen(84, "She doesn't count to 10 and cannot hop on one foot. She never learned to kick a ball.")
    assert result.age_band_months == 60
    assert {"counts to 10", "hops on one foot", "kicks a ball"} <= flagged_texts(result)
    assert result.risk_level == "high"


def test_under_two_months_nothing_is_expected():
    result = screen(1, "Doesn't smile yet and doesn't lift his head.")
    assert result.risk_level == "low"
    assert result.milestones_flagged == ()
    assert "2-month" in result.rationale


# ---------------------------------------------------------------- risk levels


def test_low_when_observations_are_positive():
    result = screen(24, "Walks and runs well, kicks a ball, eats with a spoon and puts two words together.")
    assert result.risk_level == "low"
    assert result.flagged_domains == ()
    assert result.rationale == "No age-expected milestones reported as absent or concerning for the 24-month band."


@pytest.mark.parametrize(
    "text",
    ["", "   ", "\n\t ", "x" * 4000, "The weather was nice and we drove to the clinic.", "No concerns at all."],
    ids=["empty", "spaces", "whitespace", "filler", "off-topic", "reassurance-only"],
)
def test_nothing_recognised_is_insufficient_information_not_low(text):
    """Defect 8: the baseline read nothing it knows, so it must not say all is well."""
    result = screen(30, text)
    assert result.risk_level == INSUFFICIENT_INFORMATION and INSUFFICIENT_INFORMATION in RISK_LEVELS
    assert result.flagged_domains == () and result.milestones_flagged == () and not result.regression
    assert "no developmental milestone" in result.rationale and "absent or concerning" not in result.rationale


def test_one_recognised_milestone_reported_as_met_is_low_not_insufficient():
    assert screen(30, "The weather was nice. She kicks a ball.").risk_level == "low"


def test_regression_without_a_named_milestone_is_still_high():
    result = screen(30, "He lost his words.")
    assert result.regression and result.risk_level == "high"


def test_moderate_for_one_current_band_milestone():
    result = screen(24, "Loves books. He doesn't kick a ball.")
    assert result.risk_level == "moderate"
    assert result.flagged_domains == ("motor",)
    assert flagged_texts(result) == {"kicks a ball"}
    assert result.milestones_flagged[0].expected_by_months == 24


def test_moderate_for_several_current_band_milestones_in_one_domain():
    result = screen(24, "He doesn't put two words together and doesn't point to pictures in books.")
    assert result.risk_level == "moderate"
    assert result.flagged_domains == ("communication",)
    assert flagged_texts(result) == {
        "says at least two words together",
        "points to things in a book when asked",
    }


def test_high_for_two_domains_in_the_current_band():
    result = screen(24, "She doesn't kick a ball. She does not use gestures like nodding.")
    assert result.risk_level == "high"
    assert result.flagged_domains == ("communication", "motor")


def test_high_for_a_milestone_from_an_earlier_band():
    # Scribbling is expected by 18 months; at 30 months it is overdue.
    result = screen(30, "He has never scribbled with a crayon.")
    assert flagged_texts(result) == {"scribbles"}
    assert result.risk_level == "high"


def test_same_observation_is_moderate_in_its_own_band_and_high_later():
    text = "Not jumping with both feet yet."
    assert screen(30, text).risk_level == "moderate"
    assert screen(40, text).risk_level == "high"


def test_not_walking_at_18_months_is_high():
    result = screen(18, "He isn't walking yet.")
    assert result.risk_level == "high"
    assert "takes a few steps on their own" in flagged_texts(result)


# ---------------------------------------------------------------- negation and concern cues


@pytest.mark.parametrize(
    "text",
    [
        "He does not kick a ball.",
        "He doesn't kick a ball.",
        "He doesn\u2019t kick a ball.",  # typographic apostrophe
        "Never kicks a ball.",
        "Unable to kick a ball.",
        "He can't kick a ball.",
        "He won't kick a ball.",
        "Hasn't kicked a ball yet.",
        "Not yet kicking a ball.",
        "Struggles to kick a ball.",
        "Kicking a ball is delayed.",
        "KICKING A BALL IS A CONCERN.",
        "I am concerned about kicking.",
    ],
)
def test_negation_and_concern_cues_flag_the_milestone(text):
    assert "kicks a ball" in flagged_texts(screen(24, text))


@pytest.mark.parametrize(
    "text",
    [
        "He kicks a ball well.",
        "Kicks the ball to his dad every evening.",
        "No concerns. Kicks a ball.",
        "Parents have no concerns about kicking or running.",
        "Not worried about kicking a ball.",
        "Never had any trouble kicking a ball.",
        "Kicking a ball has not been a problem.",
        "Does not like peas, but kicks a ball.",
        "No ear infections this year; kicks a ball.",
    ],
)
def test_positive_mentions_and_reassurance_do_not_flag(text):
    result = screen(24, text)
    assert result.milestones_flagged == ()
    assert result.risk_level == "low"


def test_negation_does_not_cross_a_contrast_or_sentence_boundary():
    result = screen(24, "He doesn't like loud noises but runs and kicks a ball. No words yet though.")
    assert "runs" not in flagged_texts(result)
    assert "kicks a ball" not in flagged_texts(result)


def test_negation_does_not_reach_a_separate_clause_after_and():
    result = screen(24, "He can't sit still at dinner and runs everywhere.")
    assert "runs" not in flagged_texts(result)


def test_negation_is_shared_across_an_or_list():
    result = screen(15, "She doesn't point, wave, or clap.")
    assert {
        "points to ask for something or to get help",
        "waves bye-bye",
        "claps when excited",
    } <= flagged_texts(result)


def test_negated_item_next_to_positive_item_in_a_comma_clause():
    result = screen(24, "No pointing or waving, runs well.")
    texts = flagged_texts(result)
    assert "waves bye-bye" in texts
    assert "runs" not in texts


def test_cant_stop_is_not_a_negation():
    assert screen(36, "He can't stop talking and asks why questions all day.").risk_level == "low"


def test_most_specific_phrase_wins():
    # "two words together" is the 24-month milestone; it must not also flag the 15/18-month "words" ones.
    result = screen(24, "Says lots of single words but does not put two words together.")
    assert flagged_texts(result) == {"says at least two words together"}
    assert result.risk_level == "moderate"


# ---------------------------------------------------------------- regression


@pytest.mark.parametrize(
    "text",
    [
        "He lost the words he used to say.",
        "She stopped talking about three months ago.",
        "He no longer waves bye-bye.",
        "She used to say mama but doesn't anymore.",
        "Parents report some regression since the spring.",
    ],
)
def test_regression_is_high_regardless_of_count(text):
    result = screen(30, text)
    assert result.regression is True
    assert result.risk_level == "high"
    assert "regression" in result.rationale


def test_regression_of_a_single_current_band_skill_is_still_high():
    result = screen(24, "He stopped kicking the ball.")
    assert flagged_texts(result) == {"kicks a ball"}
    assert result.risk_level == "high"


@pytest.mark.parametrize(
    ("text", "risk"),
    [
        ("No regression. He hasn't lost any skills.", INSUFFICIENT_INFORMATION),
        ("She never stopped babbling and now talks a lot.", "low"),
        ("He no longer needs a bottle at night.", INSUFFICIENT_INFORMATION),
        ("Lost his balance once while running, laughed it off.", "low"),
        ("He used to be behind in talking but has caught up.", "low"),
    ],
)
def test_no_false_regression(text, risk):
    result = screen(30, text)
    assert result.regression is False
    assert result.risk_level == risk


# ---------------------------------------------------------------- rationale, result shape, determinism


def test_rationale_names_flagged_milestones_with_domain_and_band():
    result = screen(24, "He doesn't put two words together and doesn't point to pictures in books.")
    assert result.rationale.startswith("At 24 months, observations report not yet: ")
    assert "says at least two words together (communication)" in result.rationale
    assert "points to things in a book when asked (communication)" in result.rationale


def test_to_dict_matches_the_inference_contract():
    body = screen(24, "She doesn't kick a ball.").to_dict()
    assert set(body) == {
        "risk_level",
        "flagged_domains",
        "rationale",
        "model_version",
        "milestones_flagged",
        "age_band_months",
        "disclaimer",
    }
    assert body["model_version"] == MODEL_VERSION
    assert body["model_version"].startswith("milestones-baseline-")
    assert body["disclaimer"] == DISCLAIMER == "Reference baseline, not a validated clinical tool."
    assert body["milestones_flagged"] == [{"domain": "motor", "milestone": "kicks a ball", "expected_by_months": 24}]
    assert body["flagged_domains"] == ["motor"]


def test_flagged_domains_are_sorted():
    result = screen(30, "Doesn't jump, never plays pretend, doesn't use pronouns, no interest in playing next to kids.")
    assert list(result.flagged_domains) == sorted(result.flagged_domains)
    assert len(result.flagged_domains) >= 3


def test_result_is_frozen():
    result = screen(24, "")
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.risk_level = "high"  # type: ignore[misc]


def test_screen_is_deterministic():
    text = "She stopped saying mama. Doesn't kick a ball; no pointing to body parts."
    results = [screen(24, text) for _ in range(5)]
    assert all(r == results[0] for r in results)
    assert results[0].to_dict() == screen(24, text).to_dict()


@pytest.mark.parametrize(("age", "exc"), [(-1, ValueError), (217, ValueError), (True, TypeError), (12.0, TypeError)])
def test_out_of_contract_age_is_rejected(age, exc):
    with pytest.raises(exc):
        screen(age, "")


def test_out_of_contract_observations_are_rejected():
    with pytest.raises(ValueError):
        screen(24, "x" * 4001)
    with pytest.raises(TypeError):
        screen(24, None)  # type: ignore[arg-type]
    assert screen(24, "x" * 4000).risk_level == INSUFFICIENT_INFORMATION
