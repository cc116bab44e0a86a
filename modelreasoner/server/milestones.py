"""Developmental milestones by age band, with the vocabulary that identifies them in free text.

Source: paraphrased from the public CDC "Learn the Signs. Act Early." milestone checklists
(https://www.cdc.gov/ncbddd/actearly/milestones/, revised 2022; Zubler et al., "Evidence-Informed
Milestones for Developmental Surveillance Tools", Pediatrics 2022;149(3):e2021052138). Each band lists
skills that most children (75% or more) show by that age. This is a representative subset written
for a reference baseline, not the full checklist, and not a validated clinical tool.

Keyword syntax (matched against lowercased, apostrophe-free word tokens by ``screening.py``):
- a milestone's keywords are separated by "; ";
- a keyword is one or more space-separated token patterns that must appear in order;
- ``a|b|c`` accepts any of the alternatives;
- a trailing ``*`` is a prefix match (the prefix must be at least 3 characters).
Prefer specific phrases: when a longer keyword of one milestone covers a shorter keyword of another
(``words together`` vs ``words``), only the longer one counts.

The end of this module holds the cue vocabulary (negation, concern and regression words) that
``screening.py`` looks for near milestone keywords; the rules that use it are documented there.
"""

from __future__ import annotations

from dataclasses import dataclass

# Checklist ages in months (CDC bands). A child is screened against the largest band <= their age.
AGE_BANDS: tuple[int, ...] = (2, 4, 6, 9, 12, 15, 18, 24, 30, 36, 48, 60)
DOMAINS: tuple[str, ...] = ("communication", "motor", "social", "cognitive")

# Words that name a skill in general; a regression cue next to one ("lost skills", "stopped
# talking") reports loss even when no specific milestone keyword is present.
GENERIC_SKILL_KEYWORDS: tuple[str, ...] = (
    "skill|skills",
    "word|words",
    "talk|talks|talking|talked",
    "speech",
    "speak|speaks|speaking",
    "babbl*",
    "eye contact",
    "language",
    "gesture*",
)

WALK = "walk|walks|walking|walked"
WORDS = "word|words"
TALK = "talk|talks|talking|speak|speaks|speaking|speech|verbal"
COLOR = "color|colors|colour|colours"


@dataclass(frozen=True)
class Milestone:
    """One age-expected skill: the band (months) by which most children show it."""

    band_months: int
    domain: str
    text: str
    keywords: tuple[str, ...]


def _m(band: int, domain: str, text: str, keywords: str) -> Milestone:
    """Build a milestone; ``keywords`` is a "; "-separated list so each entry fits on one line."""
    return Milestone(band_months=band, domain=domain, text=text, keywords=tuple(keywords.split("; ")))


C, M, S, G = "communication", "motor", "social", "cognitive"

MILESTONES: tuple[Milestone, ...] = (
    # 2 months
    _m(2, S, "smiles when you talk to or smile at them", "smil*"),
    _m(2, C, "makes sounds other than crying", "make|makes|making sounds|noises; vocaliz*; gurgl*"),
    _m(
        2,
        G,
        "watches you as you move",
        "watch*|follow*|track* you|me|faces|people|objects|toys; follow*|track* eyes",
    ),
    _m(2, M, "holds head up when on tummy", "head up; lift* head; tummy time"),
    # 4 months
    _m(4, S, "chuckles when you try to make them laugh", "chuckl*"),
    _m(4, C, "makes cooing sounds", "coo|coos|cooing|cooed"),
    _m(4, C, "turns head toward the sound of your voice", "turn*|respond*|react* voice|sound|sounds"),
    _m(4, M, "holds head steady without support when held", "head steady|control; hold* head"),
    _m(4, M, "brings hands to mouth", "hand|hands mouth"),
    _m(4, G, "looks at own hands with interest", "look*|stare* hands"),
    # 6 months
    _m(6, S, "laughs", "laugh*"),
    _m(6, S, "knows familiar people", "familiar people|faces; recogni* family|parents|me|us"),
    _m(6, C, "blows raspberries and makes squealing sounds", "raspberr*; squeal*"),
    _m(6, G, "reaches to grab a toy they want", "reach|reaches|reaching for|toward|out|toys; grab*; grasp*"),
    _m(6, M, "rolls from tummy to back", "roll|rolls|rolling|rolled"),
    _m(6, M, "pushes up with straight arms when on tummy", "push* up"),
    # 9 months
    _m(9, S, "looks when you call their name", "respond*|react*|look*|turn*|answer* name; call* name"),
    _m(9, S, "shows several facial expressions", "facial expression*; expressions"),
    _m(9, C, "babbles sounds like mamamama and babababa", "babbl*; mamama*; bababa*; dadada*"),
    _m(9, C, "lifts arms up to be picked up", "arms up; lift*|raise* arms; reach* up"),
    _m(9, G, "looks for objects dropped out of sight", "look*|search* drop*"),
    _m(9, G, "bangs two things together", "bang*"),
    _m(9, M, "sits without support", "sit|sits|sitting|sat"),
    _m(9, M, "moves things from one hand to the other", "transfer*; hand to hand; one hand other"),
    # 12 months
    _m(
        12,
        S,
        "plays games like pat-a-cake or peek-a-boo",
        "pat a cake; pat-a-cake; peek a boo; peek-a-boo; peekaboo; patty-cake|pattycake",
    ),
    _m(12, C, "waves bye-bye", "wav*; bye-bye|byebye; bye bye"),
    _m(12, C, "calls a parent mama, dada or another special name", "mama|dada|mamma|dadda"),
    _m(12, G, "looks for things they see you hide", "look*|search*|find* hid*"),
    _m(12, G, "puts something in a container", "container*; in|into box|bucket|cup"),
    _m(12, M, "pulls up to stand", "pull* up; pull* stand; stand|stands|standing|stood"),
    _m(12, M, "walks holding on to furniture", "cruis*; walk*|walks furniture"),
    _m(12, M, "picks things up between thumb and pointer finger", "pincer"),
    # 15 months
    _m(15, S, "shows affection such as hugs or cuddles", "hug|hugs|hugging|hugged; cuddl*; kiss*; affection*"),
    _m(15, S, "claps when excited", "clap*"),
    _m(15, C, "tries to say one or two words besides mama or dada", f"{WORDS}; {TALK}; first words"),
    _m(15, C, "points to ask for something or to get help", "point|points|pointing|pointed"),
    _m(15, G, "stacks at least two small objects", "stack*; tower*"),
    _m(15, M, "takes a few steps on their own", f"{WALK}; step|steps; first steps"),
    # 18 months
    _m(
        18,
        S,
        "points to show you something interesting",
        "point* show; point* interest*; show|shows|showing you|me|things",
    ),
    _m(18, C, "tries to say three or more words besides mama or dada", f"{WORDS}; {TALK}"),
    _m(18, C, "follows one-step directions without gestures", "direction*; instruction*; command*; one-step"),
    _m(18, G, "copies you doing chores", "imitat*; copy|copies|copying|copied; mimic*; cop* chore*"),
    _m(
        18,
        M,
        "walks without holding on to anyone or anything",
        f"{WALK}; walk* alone|independently|unassisted",
    ),
    _m(18, M, "scribbles", "scribbl*"),
    _m(18, M, "climbs on and off a couch or chair without help", "climb*"),
    # 24 months
    _m(24, S, "notices when others are hurt or upset", "notic* hurt|upset|sad|crying; empath*"),
    _m(
        24,
        C,
        "says at least two words together",
        "words together; two-word|2-word; phrase|phrases; combin* words; two words",
    ),
    _m(24, C, "points to things in a book when asked", "point* book|books|pictures"),
    _m(24, C, "points to at least two body parts when asked", "body part*; body-part*"),
    _m(
        24,
        C,
        "uses gestures beyond waving and pointing, like blowing a kiss or nodding",
        "gesture*; blow* kiss*; nod|nods|nodding",
    ),
    _m(24, G, "tries to use switches, knobs or buttons on a toy", "switch*; knob|knobs; press*|push* button*"),
    _m(24, M, "kicks a ball", "kick*"),
    _m(24, M, "runs", "run|runs|running|ran"),
    _m(24, M, "walks up a few stairs", "stair*; walk*|climb* stair*|steps"),
    _m(24, M, "eats with a spoon", "spoon*"),
    # 30 months
    _m(
        30,
        S,
        "plays next to other children and sometimes with them",
        "play* next to; parallel play*; play* alongside",
    ),
    _m(30, S, 'shows what they can do by saying "look at me"', "look at me"),
    _m(30, C, "says about 50 words", "50 words; fifty words; vocabulary"),
    _m(30, C, "says words like I, me or we", "pronoun*"),
    _m(30, C, "names things in a book when you point and ask", "name*|label* pictures|things|objects"),
    _m(30, G, "uses things to pretend, like feeding a block to a doll", "pretend*; imaginative play*"),
    _m(
        30,
        G,
        "follows two-step instructions",
        "two-step|multi-step; two step; two-step direction*; two-step instruction*",
    ),
    _m(30, G, "shows they know at least one color", COLOR),
    _m(30, M, "jumps off the ground with both feet", "jump*"),
    _m(30, M, "turns book pages one at a time", "page|pages"),
    _m(30, M, "uses hands to twist things, like doorknobs or lids", "twist*; unscrew*; doorknob*; door knob*"),
    # 36 months
    _m(36, S, "calms down within 10 minutes after you leave", "separat*; calm* leave|leaves|leaving"),
    _m(
        36,
        S,
        "notices other children and joins them to play",
        "join* play*; play* with other|others; play* with children|kids|peers; interest* in children|kids|peers",
    ),
    _m(
        36,
        C,
        "holds a conversation with at least two back-and-forth exchanges",
        "conversation*; back-and-forth",
    ),
    _m(36, C, "asks who, what, where or why questions", "question|questions; ask* why|what|where|who"),
    _m(36, C, "says first name when asked", "first name; say*|tell* name"),
    _m(36, C, "talks well enough for others to understand most of the time", "understood; intelligib*"),
    _m(36, G, "draws a circle when shown how", "circle*; draw|draws|drawing"),
    _m(36, M, "strings items together, like large beads", "bead*; string|strings|stringing"),
    _m(36, M, "puts on some clothes by themself", "dress|dresses|dressing; put* on clothes|shoes; clothes"),
    _m(36, M, "uses a fork", "fork|forks"),
    # 48 months
    _m(
        48,
        S,
        "pretends to be something else during play",
        "pretend* to be; role play*; role-play*; dress* up; make-believe; make believe",
    ),
    _m(48, S, "comforts others who are hurt or sad", "comfort|comforts|comforting|comforted"),
    _m(
        48,
        C,
        "says sentences with four or more words",
        "sentence*; talk*|speak* sentence*; four words; 4 words; four-word; 4-word",
    ),
    _m(48, C, "talks about at least one thing that happened during their day", "about day; what happened"),
    _m(48, C, 'answers simple questions like "what is a coat for?"', "answer* question|questions"),
    _m(48, G, "names a few colors", f"name*|know* {COLOR}"),
    _m(48, G, "tells what comes next in a well-known story", "comes next; happens next"),
    _m(48, G, "draws a person with three or more body parts", "draw* person|people|figure*"),
    _m(48, M, "catches a large ball most of the time", "catch|catches|catching|caught ball|balls"),
    _m(48, M, "unbuttons some buttons", "unbutton*"),
    _m(48, M, "holds a crayon or pencil between fingers and thumb", "crayon*; pencil*; grip*"),
    # 60 months
    _m(
        60,
        S,
        "follows rules or takes turns when playing games",
        "take* turns; turn-taking; turn taking; follow* rules",
    ),
    _m(60, S, "sings, dances or acts for you", "sing|sings|singing|sang; danc*"),
    _m(60, S, "does simple chores at home", "chore*"),
    _m(60, C, "tells a story with at least two events", "tell*|retell* story|stories; retell*"),
    _m(
        60,
        C,
        "keeps a conversation going with more than three back-and-forth exchanges",
        "keep* conversation*",
    ),
    _m(60, C, "uses or recognizes simple rhymes", "rhym*"),
    _m(60, G, "counts to 10", "count|counts|counting"),
    _m(60, G, "names some numbers between 1 and 5", "name*|know*|recogni* number|numbers"),
    _m(60, G, "uses words about time, like yesterday or tomorrow", "yesterday; tomorrow; time words"),
    _m(60, G, "pays attention for 5 to 10 minutes during activities", "attention; focus*; concentrat*"),
    _m(60, G, "names some letters when you point to them", "letter|letters; alphabet; abc|abcs"),
    _m(60, G, "writes some letters in their name", "writ*; writ* letter*"),
    _m(60, M, "hops on one foot", "hop|hops|hopping|hopped"),
    _m(60, M, "buttons some buttons", "button|buttons|buttoning|buttoned"),
)


# ---------------------------------------------------------------- cue vocabulary (screening.py)
# Words are lowercase with apostrophes removed ("doesn't" -> "doesnt"), as screening.py tokenises.

NEUTRAL = "_ok_"  # replaces cancelled negator/concern pairs so neither acts as a cue

# Multi-word expressions rewritten to single tokens (or plainer wording) before matching.
REWRITES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("no longer", ("nolonger",)),
    ("not yet", ("notyet",)),
    ("yet to", ("yetto",)),
    ("any more", ("anymore",)),
    ("used to be able to", ("usedto",)),
    ("used to be", ("formerly",)),  # a past state ("used to be behind"), not a lost skill
    ("used to", ("usedto",)),
    ("back and forth", ("back-and-forth",)),
    ("thumb and finger|pointer|index|forefinger", ("pincer",)),
    ("hard|difficult to understand", ("not", "understood")),
    ("nonverbal|non-verbal", ("not", "verbal")),
    ("unintelligible", ("not", "intelligible")),
    # Losing one's balance is a stumble, not a lost skill; "unsteady" stays a cue when said outright.
    ("lost|loses|losing|lose balance", ("stumbled",)),
    ("lost|loses|losing|lose his|her|their|its balance", ("stumbled",)),
)


def _words(text: str) -> frozenset[str]:
    """A vocabulary written as one space-separated string (easier to read than a long set literal)."""
    return frozenset(text.split())


PRE_CUES = _words(
    "not no never neither nor doesnt dont didnt isnt arent wasnt werent hasnt havent hadnt cant cannot "
    "couldnt wont wouldnt unable notyet yetto rarely seldom barely hardly struggles struggle struggling "
    "trouble difficulty difficulties refuses refuse refused fails failed avoids delayed delay concern "
    "concerns concerned concerning worried worry worries behind unsteady limited lacks lacking poor "
    "absent"
)
POST_CUES = _words(
    "delayed delay behind concern concerns concerning worried worrying worries absent missing limited "
    "notyet unsteady poor lacking problem problems issue issues"
)
REGRESSION_CUES = _words("lost losing stopped nolonger usedto anymore regressed regressing")
STANDALONE_REGRESSION = frozenset({"regression", "regressed", "regressing"})
NEGATORS = _words(
    "no not never nothing none without neither nor doesnt dont didnt isnt arent wasnt werent hasnt "
    "havent hadnt cant cannot wont formerly"
)
NEUTRALIZABLE = _words(
    "concern concerns concerned concerning worry worried worries worrying problem problems issue issues "
    "trouble difficulty difficulties delay delays delayed behind regression regressed lost lose loss "
    "stopped stop stops only"
)
FILLERS = _words(
    "a an any the real major big much particular serious significant been be being have has had is are "
    "was were of with at all so too really very seem seems appear appears"
)
CONTRAST_WORDS = frozenset({"but", "however", "although", "though", "whereas", "except"})
LIST_JOINERS = frozenset({"or", "nor"})
