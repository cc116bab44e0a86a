"""Transparent, deterministic developmental-screening baseline over free-text observations.

REFERENCE BASELINE, NOT A VALIDATED CLINICAL TOOL. It matches caregiver/clinician observations
against age-expected milestones paraphrased from the public CDC "Learn the Signs. Act Early."
checklists (see ``milestones.py``) and reports which ones the text describes as absent or concerning.

How it reads text (all lowercase, word tokens, apostrophes dropped so "doesn't" == "doesnt"):
1. Sentences split at . ! ? ; and line breaks. A cue's scope is its clause: sentences are further split
   at contrastive words (but, however, although, though, whereas, except), at commas and at "and" --
   except a comma list ending in or/nor/and ("doesn't point, wave, or clap") stays one clause.
2. Negated concerns are neutralised first: a negator (no, not, never, without, doesn't, ...) followed,
   through at most 3 filler words, by a concern or loss word ("no concerns", "not worried",
   "never had any trouble", "hasn't lost", "can't stop talking") is not a cue.
3. A milestone keyword is ABSENT/CONCERNING when, in the same clause, an absence cue ("not", "doesn't",
   "never", "unable", "struggles", "concern", "delayed", ...) appears up to 5 words before it, a
   concern cue ("delayed", "behind", "a concern", ...) up to 5 words after it, or a regression cue
   ("lost", "stopped", "no longer", "used to", "anymore") within 3 words on either side.
4. REGRESSION (loss of acquired skills) is reported when a regression cue sits within 3 words of any
   milestone keyword or generic skill word ("skills", "words", "talking", ...), or the text says
   "regression"/"regressed" (and does not negate it).

Risk rule (first that applies):
- high: regression reported; or flagged milestones in 2+ domains; or any flagged milestone from a band
  earlier than the child's band (it should have been met at an earlier checkpoint);
- moderate: one or more flagged milestones, all in one domain and all in the child's current band
  (this is the "single flagged milestone" case unless that milestone is overdue);
- insufficient_information: the text mentions no milestone at all (of any band) and no regression, so
  "nothing flagged" would only mean "nothing read": empty or off-topic text is not low risk;
- low: milestones mentioned, none flagged, and no regression.
The child's band is the largest checklist age <= age_months (60 for older children); milestones of that
band and all earlier bands are checked. Children under 2 months have no age-expected milestones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from modelreasoner.server.milestones import (
    AGE_BANDS,
    CONTRAST_WORDS,
    FILLERS,
    GENERIC_SKILL_KEYWORDS,
    LIST_JOINERS,
    MILESTONES,
    NEGATORS,
    NEUTRAL,
    NEUTRALIZABLE,
    POST_CUES,
    PRE_CUES,
    REGRESSION_CUES,
    REWRITES,
    STANDALONE_REGRESSION,
    Milestone,
)

MODEL_VERSION = "milestones-baseline-1.1.0"
RISK_LEVELS = ("low", "moderate", "high", "insufficient_information")
"""Every risk_level the baseline answers (the inference contract, docs/model-server.md)."""
INSUFFICIENT_INFORMATION = "insufficient_information"
NOTHING_RECOGNISED = (
    "The observations mention no developmental milestone this baseline recognises, so it cannot assess risk: "
    "describe what the child does and does not do yet (for example walking, words, pointing, play)."
)
DISCLAIMER = "Reference baseline, not a validated clinical tool."
MAX_AGE_MONTHS = 216  # 18 years; the contract's upper bound
MAX_OBSERVATION_CHARS = 4000  # contract limit; keeps the per-request cost bounded

PRE_CUE_WINDOW = 5  # words before a keyword in which an absence cue applies ("does not yet really walk")
POST_CUE_WINDOW = 5  # words after a keyword in which a concern cue applies ("kicking a ball is a concern")
REGRESSION_WINDOW = 3  # tighter: "used to be behind in talking" must not read as loss of talking
MAX_PHRASE_GAP = 3  # words allowed between the parts of a keyword ("points to pictures in books")
MAX_NEGATION_FILLERS = 3  # filler words between a negator and the concern it cancels
LIST_ITEM_MAX_TOKENS = 4  # a comma segment this short can be a list item sharing the clause's negation
RATIONALE_MAX_NAMED = 8  # keep the rationale to a readable sentence; the full list is in the result

_SENTENCE_SPLIT = re.compile(r"[.!?;\n]+")
_TOKEN = re.compile(r"[a-z0-9]+(?:['\u2019-][a-z0-9]+)*|,")


@dataclass(frozen=True)
class FlaggedMilestone:
    """A milestone the observations describe as absent or concerning."""

    domain: str
    milestone: str
    expected_by_months: int


@dataclass(frozen=True)
class ScreeningResult:
    """Outcome of ``screen``; ``to_dict()`` is exactly the /infer response body."""

    risk_level: str
    flagged_domains: tuple[str, ...]
    rationale: str
    milestones_flagged: tuple[FlaggedMilestone, ...]
    age_band_months: int
    regression: bool
    model_version: str = MODEL_VERSION
    disclaimer: str = DISCLAIMER

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict in the inference contract's shape (``regression`` is folded into risk)."""
        return {
            "risk_level": self.risk_level,
            "flagged_domains": list(self.flagged_domains),
            "rationale": self.rationale,
            "model_version": self.model_version,
            "milestones_flagged": [
                {"domain": f.domain, "milestone": f.milestone, "expected_by_months": f.expected_by_months}
                for f in self.milestones_flagged
            ],
            "age_band_months": self.age_band_months,
            "disclaimer": self.disclaimer,
        }


# ---------------------------------------------------------------- keyword patterns


@dataclass(frozen=True)
class _Word:
    """One position of a keyword: exact alternatives plus prefix alternatives."""

    exact: frozenset[str]
    prefixes: tuple[str, ...]

    def matches(self, token: str) -> bool:
        return token in self.exact or any(token.startswith(p) for p in self.prefixes)


def _compile(keyword: str) -> tuple[_Word, ...]:
    """Parse the keyword syntax documented in ``milestones.py``."""
    words = []
    for part in keyword.split():
        alts = part.split("|")
        prefixes = tuple(a[:-1] for a in alts if a.endswith("*"))
        if any(len(p) < 3 for p in prefixes):
            raise ValueError(f"prefix shorter than 3 characters in keyword {keyword!r}")
        words.append(_Word(frozenset(a for a in alts if not a.endswith("*")), prefixes))
    return tuple(words)


@dataclass(frozen=True)
class _Keyword:
    owner: int  # index into MILESTONES, or -1 for a generic skill word
    words: tuple[_Word, ...]


@dataclass(frozen=True)
class _Match:
    owner: int
    start: int
    end: int  # index of the last matched token (inclusive)
    size: int  # number of keyword words: longer keywords are more specific


GENERIC = -1
_KEYWORDS: tuple[_Keyword, ...] = tuple(
    [_Keyword(i, _compile(k)) for i, m in enumerate(MILESTONES) for k in m.keywords]
    + [_Keyword(GENERIC, _compile(k)) for k in GENERIC_SKILL_KEYWORDS]
)
_REWRITES = tuple((_compile(pattern), replacement) for pattern, replacement in REWRITES)


def _index_first_words(keywords: tuple[_Keyword, ...]) -> tuple[dict, dict]:
    """Index keywords by exact first token and by 3-letter prefix so matching stays cheap."""
    exact: dict[str, list[_Keyword]] = {}
    by_prefix: dict[str, list[_Keyword]] = {}
    for kw in keywords:
        first = kw.words[0]
        for alt in first.exact:
            exact.setdefault(alt, []).append(kw)
        for p in first.prefixes:
            by_prefix.setdefault(p[:3], []).append(kw)
    return exact, by_prefix


_EXACT_INDEX, _PREFIX_INDEX = _index_first_words(_KEYWORDS)


def _match_at(words: tuple[_Word, ...], tokens: list[str], start: int, max_gap: int) -> int | None:
    """Index of the last token if ``words`` match from ``start`` (gaps <= max_gap), else None."""
    if not words[0].matches(tokens[start]):
        return None
    pos = start
    for word in words[1:]:
        limit = min(len(tokens), pos + 2 + max_gap)
        nxt = next((j for j in range(pos + 1, limit) if word.matches(tokens[j])), None)
        if nxt is None:
            return None
        pos = nxt
    return pos


# ---------------------------------------------------------------- text preparation


def _tokenize(sentence: str) -> list[str]:
    return [t.replace("'", "").replace("\u2019", "") for t in _TOKEN.findall(sentence)]


def _rewrite(tokens: list[str]) -> list[str]:
    """Apply REWRITES left to right (contiguous matches only)."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        for words, replacement in _REWRITES:
            end = _match_at(words, tokens, i, max_gap=0)
            if end is not None:
                out.extend(replacement)
                i = end + 1
                break
        else:
            out.append(tokens[i])
            i += 1
    return out


def _neutralize(tokens: list[str]) -> list[str]:
    """Cancel negated concerns ("no concerns", "never had any trouble") so they are not cues."""
    out = list(tokens)
    for i, tok in enumerate(out):
        if tok not in NEGATORS:
            continue
        for j in range(i + 1, min(len(out), i + 2 + MAX_NEGATION_FILLERS)):
            if out[j] in NEUTRALIZABLE:
                out[i] = out[j] = NEUTRAL
                break
            if out[j] not in FILLERS:
                break
    return out


def _split_on(tokens: list[str], separators: frozenset[str] | set[str]) -> list[list[str]]:
    parts: list[list[str]] = [[]]
    for tok in tokens:
        if tok in separators:
            parts.append([])
        else:
            parts[-1].append(tok)
    return [p for p in parts if p]


def _continues_list(segments: list[list[str]], i: int, previous_joined: bool) -> bool:
    """True if comma segment ``i`` is an item of a list ending in or/nor/and ("walk, talk, or point")."""
    for j in range(i, len(segments)):
        seg = segments[j]
        if len(seg) > LIST_ITEM_MAX_TOKENS:
            return False
        if seg[0] in LIST_JOINERS or LIST_JOINERS.intersection(seg):
            return True
        if seg[0] == "and":
            return j > i or previous_joined
    return False


def _clauses(tokens: list[str]) -> list[list[str]]:
    """Split one sentence into clauses, the scope of a negation or concern cue."""
    clauses: list[list[str]] = []
    for part in _split_on(tokens, CONTRAST_WORDS):
        segments = _split_on(part, {","})
        units: list[tuple[list[str], bool]] = []
        joined = False
        for i, seg in enumerate(segments):
            joined = bool(units) and _continues_list(segments, i, joined)
            if joined:
                units[-1] = (units[-1][0] + seg, True)
            else:
                units.append((seg, False))
        for unit, is_list in units:
            clauses.extend([unit] if is_list else _split_on(unit, {"and"}))
    return clauses


def _prepare(observations: str) -> list[list[str]]:
    """Lowercase, split, tokenise, rewrite and neutralise: the clauses of the text."""
    clauses: list[list[str]] = []
    for sentence in _SENTENCE_SPLIT.split(observations.lower()):
        tokens = _neutralize(_rewrite(_tokenize(sentence)))
        clauses.extend(_clauses(tokens))
    return clauses


# ---------------------------------------------------------------- matching


def _find_matches(clause: list[str]) -> list[_Match]:
    """All keyword matches in a clause, with less specific overlapping ones removed."""
    found: list[_Match] = []
    for start, tok in enumerate(clause):
        candidates = _EXACT_INDEX.get(tok, []) + _PREFIX_INDEX.get(tok[:3], [])
        for kw in candidates:
            end = _match_at(kw.words, clause, start, MAX_PHRASE_GAP)
            if end is not None:
                found.append(_Match(kw.owner, start, end, len(kw.words)))
    return [m for m in found if m.owner == GENERIC or not _is_covered(m, found)]


def _is_covered(m: _Match, found: list[_Match]) -> bool:
    """A match is covered when a longer keyword of another milestone spans it ("words together")."""
    return any(
        o.owner not in (GENERIC, m.owner) and o.size > m.size and o.start <= m.start and m.end <= o.end for o in found
    )


def _cue_near(clause: list[str], cues: frozenset[str], lo: int, hi: int) -> bool:
    return any(tok in cues for tok in clause[max(0, lo) : max(0, hi)])


def _assess_clause(clause: list[str]) -> tuple[set[int], set[int], bool]:
    """Milestone indices a clause mentions at all, those it reports absent/concerning, and whether
    it reports regression."""
    absent: set[int] = set()
    mentioned: set[int] = set()
    regression = bool(STANDALONE_REGRESSION.intersection(clause))
    for m in _find_matches(clause):
        lost = _cue_near(clause, REGRESSION_CUES, m.start - REGRESSION_WINDOW, m.start) or _cue_near(
            clause, REGRESSION_CUES, m.end + 1, m.end + 1 + REGRESSION_WINDOW
        )
        regression = regression or lost
        if m.owner == GENERIC:
            continue
        mentioned.add(m.owner)
        if (
            lost
            or _cue_near(clause, PRE_CUES, m.start - PRE_CUE_WINDOW, m.start)
            or _cue_near(clause, POST_CUES, m.end + 1, m.end + 1 + POST_CUE_WINDOW)
        ):
            absent.add(m.owner)
    return mentioned, absent, regression


# ---------------------------------------------------------------- public API


def age_band(age_months: int) -> int:
    """Checklist band (months) for an age: the largest band <= age, or 0 below the first band."""
    return max((b for b in AGE_BANDS if b <= age_months), default=0)


def _risk(flagged: list[Milestone], band: int, regression: bool, recognised: bool) -> str:
    if regression:
        return "high"
    if not recognised:
        return INSUFFICIENT_INFORMATION
    if not flagged:
        return "low"
    if len({m.domain for m in flagged}) >= 2 or any(m.band_months < band for m in flagged):
        return "high"
    return "moderate"


def _months(n: int) -> str:
    return f"{n} month" if n == 1 else f"{n} months"


def _rationale(flagged: list[Milestone], band: int, regression: bool, recognised: bool) -> str:
    if not recognised and not regression:
        return NOTHING_RECOGNISED
    if not flagged and not regression:
        if band == 0:
            return "No age-expected milestones apply before the 2-month band."
        return f"No age-expected milestones reported as absent or concerning for the {band}-month band."
    sentences = []
    if flagged:
        names = [f"{m.text} ({m.domain})" for m in flagged[:RATIONALE_MAX_NAMED]]
        extra = len(flagged) - len(names)
        listed = "; ".join(names) + (f"; and {extra} more" if extra else "")
        sentences.append(f"At {_months(band)}, observations report not yet: {listed}.")
    if regression:
        when = f"At {_months(band)}" if band else "Before 2 months"
        lead = "Observations also describe" if flagged else f"{when}, observations describe"
        sentences.append(f"{lead} loss of previously acquired skills (regression), a red flag.")
    return " ".join(sentences)


def screen(age_months: int, observations: str) -> ScreeningResult:
    """Screen free-text observations for a child of ``age_months`` (0..216) against CDC milestones.

    Pure and deterministic: no I/O, clock or randomness. Raises TypeError/ValueError on out-of-contract input.
    """
    if isinstance(age_months, bool) or not isinstance(age_months, int):
        raise TypeError("age_months must be an integer")
    if not 0 <= age_months <= MAX_AGE_MONTHS:
        raise ValueError(f"age_months must be between 0 and {MAX_AGE_MONTHS}")
    if not isinstance(observations, str):
        raise TypeError("observations must be a string")
    if len(observations) > MAX_OBSERVATION_CHARS:
        raise ValueError(f"observations must be a string of at most {MAX_OBSERVATION_CHARS} characters")

    band = age_band(age_months)
    absent: set[int] = set()
    mentioned: set[int] = set()
    regression = False
    for clause in _prepare(observations):
        clause_mentioned, clause_absent, clause_regression = _assess_clause(clause)
        mentioned |= clause_mentioned
        absent |= clause_absent
        regression = regression or clause_regression
    recognised = bool(mentioned)

    # Milestone order in MILESTONES is band, then domain: a stable, readable order for the rationale.
    flagged = [MILESTONES[i] for i in sorted(absent) if MILESTONES[i].band_months <= band]
    return ScreeningResult(
        risk_level=_risk(flagged, band, regression, recognised),
        flagged_domains=tuple(sorted({m.domain for m in flagged})),
        rationale=_rationale(flagged, band, regression, recognised),
        milestones_flagged=tuple(FlaggedMilestone(m.domain, m.text, m.band_months) for m in flagged),
        age_band_months=band,
        regression=regression,
    )
