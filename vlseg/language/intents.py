"""The intent table: every kind of question vlseg answers, declared in one place.

Each :class:`Intent` says what the parser needs to recognise it (``pattern``, checked in table
order, and intent-specific target ``spans``), what must be decoded to answer it (its targets,
plus the sub-regions relations need), and which composer writes its answer. The parser
detects intents and applies the target defaults from here, and each ``Parse`` carries its
:class:`Intent`; the dialogue (``vlseg.segmenter.dialogue``) dispatches through it and holds no
intent-specific branches. Adding an intent is one entry
(plus a composer in ``vlseg.reasoning.answer`` and tests).

    spec = get("ratio")
    spec.decode(("NCR", "TC"))     # ('NCR', 'TC', 'ED', 'ET'): the targets, then relation parts
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable

from vlseg import vocab
from vlseg.language.places import structure_alternation
from vlseg.language.rules import Span, make_span, ratio_spans, split_targets
from vlseg.reasoning.answer import (
    Facts,
    count_lines,
    distance_lines,
    help_lines,
    location_or_reach_lines,
    midline_lines,
    ratio_lines,
    refuse_lines,
    presence_lines,
    segment_lines,
    shift_lines,
    volume_lines,
)
from vlseg.reasoning.case_facts import MIDLINE_SHIFT, CaseFact
from vlseg.reasoning.change import change_answer_lines


def _core_parts() -> frozenset[str]:
    """The tumor core and what it is made of (NCR, ET, TC)."""
    core = vocab.by_role("core")
    return frozenset() if core is None else frozenset({core, *vocab.concept(core).parts})


# Words of a two-time-point question ("did it grow?", "is there a new lesion?", "RANO").
_CHANGE = (r"\b(grow|grows|grew|grown|growing|shrink|shrinks|shrank|shrunk|shrinking|enlarg(ed|ing)|"
           r"progress(ed|ing|ion)|regress(ed|ing|ion)|chang(e|ed|es)|increas(e|ed|es)|decreas(e|ed|es)|"
           r"disappear\w*|respon(se|ded|ding))\b|\brano\b|\bspd\b|"
           r"\bnew (\w+ )?(lesions?|tumou?rs?|foci|focus|spots?|enhancement)\b|"
           r"\bsince (the )?(last|previous|prior|baseline|first|earlier)\b|"
           r"\b(than|from) (before|last time|the last (scan|one|time)|the previous( scan)?|baseline)\b|"
           r"\bcompared? (to|with) (the )?(last|previous|prior|baseline|earlier|first)\b")
_CHANGE_WORDS = re.compile(_CHANGE + r"|\b(scan|scans|mri|time|assessment|what|did|has|have|"
                                      r"how much|there|any|is|a|an|the|of|category|status|assessment)\b")


def _change_spans(text: str) -> list[Span] | None:
    """The regions a change question names, once its change and time words are gone."""
    rest = _CHANGE_WORDS.sub(" ", text).strip(" ?.,!")
    spans = [s for s in split_targets(rest) if s.words or s.is_reference]
    return spans or [make_span(["it"])]  # nothing named: the last region asked, else the default


_UNITS = r"(ml|cc|milliliters?|cm3|cubic|mm|centimeters?|liters?)"


def _never(targets: tuple[str, ...]) -> bool:
    return False


def _always(targets: tuple[str, ...]) -> bool:
    return True


def _several_core_parts(targets: tuple[str, ...]) -> bool:
    """Several regions including a core part: report how they relate (rim, fractions)."""
    return len(set(targets)) > 1 and bool(set(targets) & _core_parts())


@dataclass(frozen=True)
class Intent:
    """One kind of question. ``pattern`` None: never named by the user (``refuse``)."""

    name: str
    pattern: re.Pattern[str] | None
    compose: Callable[[Facts], list[str]]
    summary: str = ""                     # what it answers, for the capabilities text
    measures: bool = True                 # decodes and measures its targets (False: help, refuse)
    relations: Callable[[tuple[str, ...]], bool] = _never  # also decode vocab.relation_concepts()?
    default_target: str | None = None     # target when none is named and no earlier turn
    min_targets: int = 1                  # ratio: a part and a whole
    spans: Callable[[str], list[Span] | None] | None = None  # intent-specific target phrases
    places: bool = False                  # names lobes/sides/structures (not targets)
    case_facts: tuple[CaseFact, ...] = ()  # case-level facts it reports (vlseg.reasoning.case_facts)
    names_targets: bool = True            # False: a question about the case, not a region
    # Other concepts measured to answer about these targets (count: the cores inside a WT).
    companions: Callable[[tuple[str, ...]], tuple[str, ...]] = lambda targets: ()

    def decode(self, targets: Iterable[str]) -> tuple[str, ...]:
        """Concepts whose probabilities the answer needs, targets (and companions) first."""
        if not self.measures:
            return ()
        targets = tuple(targets)
        wanted = tuple(dict.fromkeys(targets + self.companions(targets)))
        if self.relations(wanted):
            wanted += tuple(c for c in vocab.relation_concepts() if c not in wanted)
        return wanted


def _capabilities(f: Facts) -> list[str]:
    return help_lines(f, capabilities_text())


def _refuse(f: Facts) -> list[str]:
    return refuse_lines(f, capabilities_text())


# Order matters for detection: a ratio question also says "how much", a count also "how many".
TABLE: tuple[Intent, ...] = (
    Intent("change", re.compile(_CHANGE),
        change_answer_lines, summary="what changed since an earlier scan (volumes, new lesions, "
        "RANO category) once two scans are compared", default_target="ET", spans=_change_spans),
    Intent("ratio", re.compile(
        r"\b(fraction|ratio|proportion|percent|percentage|share)\b|\bhow much of\b|"
        r"\bwhat (part|portion) of\b|\brelative to\b|\bcompared? (to|with)\b|\bcompare\b"),
        ratio_lines, summary="ratios such as the necrotic fraction of the core",
        relations=_always, min_targets=2, spans=ratio_spans),
    Intent("count", re.compile(
        rf"\bhow many\b(?!\s+{_UNITS}\b)|\bnumber of\b|\bcount\b|\bmultifocal\b|\bmulticentric\b|"
        r"\b(separate|distinct|multiple|several) (lesions|tumors|foci|components|spots|masses)\b|"
        r"\bmore than one\b|\bsatellite\b"),
        count_lines, summary="how many lesions there are", default_target="WT",
        companions=lambda targets: ("TC",) if "WT" in targets else ()),
    Intent("shift", re.compile(
        r"\bmidline shift\w*|\bshift\w* (of )?the midline\b|\bmidline (is |been )?(shifted|displaced|"
        r"deviated|pushed)\b|\bmass effect\b|\bshifted midline\b|\bsubfalcine\b"),
        shift_lines, summary="whether the midline is shifted", default_target="WT",
        case_facts=(MIDLINE_SHIFT,), names_targets=False),
    Intent("distance", re.compile(
        rf"(?=.*\b({structure_alternation()})\b).*\b(how far|distances?|near\w*|close\w*|proximity|"
        r"abut\w*|adjacent|next to|touch\w*|reach\w*|involv\w*|invad\w*|infiltrat\w*|margin|away|"
        r"extend\w* (across|into|to)|across|spread\w*|"
        r"mm from|millimet\w* from|how many (mm|millimet\w*))\b"),
        distance_lines, summary="how far it is from the motor cortex, Broca's area, the ventricles "
        "or other structures", default_target="WT", places=True),
    Intent("midline", re.compile(
        r"\bmidline\b|\bbilateral\w*\b|\bboth (hemispheres|sides)\b|\bother (side|hemisphere)\b|"
        r"\bcross(es|ing|ed)? (over|the|to|into)\b|\bone or both\b|\bspans? (both|the two)\b"),
        midline_lines, summary="whether it crosses the midline", default_target="WT",
        case_facts=(MIDLINE_SHIFT,)),
    Intent("location", re.compile(
        r"\bwhere\b|\bwhich (lobe|lobes|side|hemisphere|part of the brain|region of the brain|area)\b|"
        r"\bwhat (lobe|lobes|side|hemisphere|region of the brain|part of the brain)\b|\blocat\w*|"
        r"\blocaliz\w*|\bleft or right\b|\bright or left\b|\b(in|on) the (left|right)\b|\blobes?\b|"
        r"\bhemispheres?\b|\bposition\b|\bcoordinates?\b|\bcentroid\b|\b(frontal|parietal|temporal|"
        r"occipital|insula|insular|limbic)\b|\bwhich side\b"),
        location_or_reach_lines, summary="where it is (side, lobes) or whether it reaches a lobe",
        default_target="WT", places=True),
    Intent("volume", re.compile(
        rf"\bhow (big|large|small|extensive|much)\b|\bvolumes?\b|\bsizes?\b|\bhow many {_UNITS}\b|"
        r"\bmeasure\w*|\bdiameters?\b|\bdimensions?\b|\b(ml|cc|cm3|milliliters?)\b|\bextent\b|"
        r"\bhow far\b|\bburden\b|\blargest\b|\bhow long\b|\bhow wide\b"),
        volume_lines, summary="its volume and diameters", default_target="WT"),
    Intent("presence", re.compile(
        r"^(is|are) there\b|\b(is|are) there (any|a|an|still)\b|\bany (residual|remaining)\b|"
        r"\bresidual\b|\bremaining\b|\bleft over\b|\bstill (there|present|visible)\b|"
        r"\b(does|do) (it|the scan|this scan|the image|the mri) (show|have|contain)\b"),
        presence_lines, summary="whether there is any (e.g. residual enhancing tumor)", default_target="WT"),
    Intent("segment", re.compile(
        r"\bsegment\w*|\bshow\b|\bdisplay\w*|\bhighlight\w*|\boutline\w*|\bdelineat\w*|\bcontour\w*|"
        r"\bmasks?\b|\bdraw\b|\bmark\b|\bfind\b|\bdetect\w*|\bidentify\b|\bvisuali[sz]e\b|\blabel\b|"
        r"\b(is|are) there\b|\bany\b|\bpresent\b|\bvisible\b|\bsee\b|\bcan you\b|\bplease\b"),
        segment_lines, summary="a mask", relations=_several_core_parts, default_target="WT"),
    Intent("help", re.compile(
        r"^(help|hi|hello|hey|thanks|thank you|good (morning|afternoon|evening))\b|\bwhat can (you|i)\b|"
        r"\bwhat do you (do|support|segment|know)\b|\bwhat are you\b|\bwho are you\b|"
        r"\b(which|what) (structures|regions|concepts|targets|things|labels|classes|parts)\b|"
        r"\bhow (do|does|can) (i|this|it|you) (use|work)\b|\blist\b|\bcapabilit\w*|\busage\b|"
        r"\bwhat (else )?(is|are) (possible|supported|available)\b|\bwhat (are|is) (you|it|this) able\b|"
        r"\bwhat can (this|it)\b|\bwhat do(es)? (it|this) do\b"),
        _capabilities, measures=False),
    Intent("refuse", None, _refuse, measures=False),
)
_BY_NAME: dict[str, Intent] = {i.name: i for i in TABLE}
INTENTS: tuple[str, ...] = tuple(_BY_NAME)
# Intents named by words in the query, in detection order (help is decided after the targets).
_DETECTED: tuple[Intent, ...] = tuple(i for i in TABLE if i.pattern is not None and i.measures)


def get(name: str) -> Intent:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown intent {name!r}; use one of {', '.join(INTENTS)}") from None


def detect(text: str) -> str | None:
    """The question type named explicitly in the normalized text, or None (help is separate)."""
    for spec in _DETECTED:
        assert spec.pattern is not None
        if spec.pattern.search(text):
            return spec.name
    return None


def asks_for_help(text: str) -> bool:
    pattern = get("help").pattern
    return bool(pattern and pattern.search(text))


def capabilities_text(concepts: Iterable[str] | None = None) -> str:
    """One line listing what can be segmented (``concepts``: a model's; None: every registered
    concept) and asked (help and refusal answers)."""
    shown = [c for c in vocab.concepts() if concepts is None or c.code in concepts]
    regions = ", ".join(f"{c.name} ({c.code})" for c in shown)
    asks = [i.summary for i in reversed(TABLE) if i.summary]  # simplest question first
    return (f"I can segment and measure these brain-tumor regions on MRI: {regions}. Ask for "
            f"{', '.join(asks[:-1])}, or {asks[-1]}." if len(asks) > 1 else
            f"I can segment these brain-tumor regions on MRI: {regions}.")
