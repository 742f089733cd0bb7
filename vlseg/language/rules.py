"""Text rules of the query parser: normalization, intent, target spans. No model, no torch.

Everything here works on the *normalized* query: lower case, American spelling, misspelled
domain words corrected, punctuation reduced to commas. Only text is ever interpreted; nothing in a
query is opened, run or looked up.
"""
from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass

from vlseg.language import bank

INTENTS: tuple[str, ...] = ("segment", "volume", "location", "midline", "ratio", "count", "help",
                            "refuse")

# -- normalization ---------------------------------------------------------------------------
_UPPER_ABBREV = re.compile(r"\b(" + "|".join(bank.UPPERCASE_ONLY) + r")\b")
_CANONICAL_ABBREV = {"ET": "enhancing tumor", "ED": "edema", "TC": "tumor core",
                     "WT": "whole tumor", "NCR": "necrotic core", "NET": "necrotic core",
                     "SNFH": "snfh"}
_TOKEN = re.compile(r"[a-z0-9][a-z0-9\-]*(?:'[a-z]+)?|,")
_MULTI_CONJ = re.compile(r"\b(as well as|along with|together with|and also|and/or|and or)\b")
# "the tumor without the edema" is the tumor core; said before keywords see "edema".
_REWRITES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(whole )?(tumor|lesion|mass)( \w+)? (without|excluding|except|minus|"
                r"not including|but not) (the )?(edema|swelling)\b"), "tumor core"),
)
_ON_SEQUENCE = {(w,) for w in ("t1", "t1c", "t1n", "t1ce", "t2", "t2w", "t2f", "flair", "contrast",
                                "t2-flair", "post-contrast", "gadolinium")}
_NEGATED = frozenset({"not", "except", "excluding", "without", "minus", "ignoring", "ignore"})


def normalize(query: str) -> str:
    """Lower-case, canonical spelling, corrected typos, commas as the only punctuation."""
    # Capitalised abbreviations are unambiguous ("ET"), lower-case ones are not ("et", "ed").
    text = _UPPER_ABBREV.sub(lambda m: f" {_CANONICAL_ABBREV[m.group(1)]} ", query)
    text = text.lower().replace("’", "'").replace("œ", "oe").replace("æ", "ae")
    text = re.sub(r"[/&+;]", " , ", text)
    text = re.sub(r"[.!?:()\[\]{}\"]", " ", text)
    tokens = []
    for tok in _TOKEN.findall(text):
        if tok.endswith("'s") and tok not in bank.FILLER:
            tok = tok[:-2]
        tokens.append(_correct(bank.SPELLING.get(tok, tok)))
    text = " ".join(tokens).replace(" ,", ",")
    for rule, repl in _REWRITES:
        text = rule.sub(repl, text)
    return text


@functools.lru_cache(maxsize=4096)
def _correct(tok: str) -> str:
    """Fix a misspelled domain word ("necrotc" -> "necrotic"); leave everything else alone."""
    if len(tok) < 4 or not tok.isalpha() or tok in _known_words():
        return tok
    if bank.OFF_TOPIC.fullmatch(tok) or bank.BRAIN_ANATOMY.fullmatch(tok):
        return tok
    cutoff = 0.8 if len(tok) >= 6 else 0.84
    match = difflib.get_close_matches(tok, bank.DOMAIN_VOCAB, n=1, cutoff=cutoff)
    return match[0] if match else tok


@functools.lru_cache(maxsize=1)
def _known_words() -> frozenset[str]:
    words = set(bank.FILLER | bank.PREPOSITIONS | bank.PRONOUNS | bank.GENERIC_NOUNS
                | bank.MODIFIERS) | set(bank.DOMAIN_VOCAB)
    for phrases in bank.EXTRA_PHRASES.values():
        for p in phrases:
            words.update(p.split())
    return frozenset(words)


# -- intent ----------------------------------------------------------------------------------
_UNITS = r"(ml|cc|milliliters?|cm3|cubic|mm|centimeters?|liters?)"
HELP = re.compile(
    r"^(help|hi|hello|hey|thanks|thank you|good (morning|afternoon|evening))\b|\bwhat can (you|i)\b|"
    r"\bwhat do you (do|support|segment|know)\b|\bwhat are you\b|\bwho are you\b|"
    r"\b(which|what) (structures|regions|concepts|targets|things|labels|classes|parts)\b|"
    r"\bhow (do|does|can) (i|this|it|you) (use|work)\b|\blist\b|\bcapabilit\w*|\busage\b|"
    r"\bwhat (else )?(is|are) (possible|supported|available)\b|\bwhat (are|is) (you|it|this) able\b|"
    r"\bwhat can (this|it)\b|\bwhat do(es)? (it|this) do\b"
)
# "segment everything" / "all sub-regions": the three disjoint regions.
ALL_REGIONS = re.compile(r"\b(everything|all (the )?(sub-?regions?|regions|labels|classes|parts|"
                         r"compartments|components|tumor regions|tissue types))\b")
RATIO = re.compile(
    r"\b(fraction|ratio|proportion|percent|percentage|share)\b|\bhow much of\b|"
    r"\bwhat (part|portion) of\b|\brelative to\b|\bcompared? (to|with)\b|\bcompare\b"
)
COUNT = re.compile(
    rf"\bhow many\b(?!\s+{_UNITS}\b)|\bnumber of\b|\bcount\b|\bmultifocal\b|\bmulticentric\b|"
    r"\b(separate|distinct|multiple|several) (lesions|tumors|foci|components|spots|masses)\b|"
    r"\bmore than one\b|\bsatellite\b"
)
MIDLINE = re.compile(
    r"\bmidline\b|\bbilateral\w*\b|\bboth (hemispheres|sides)\b|\bother (side|hemisphere)\b|"
    r"\bcross(es|ing|ed)? (over|the|to|into)\b|\bone or both\b|\bspans? (both|the two)\b"
)
LOCATION = re.compile(
    r"\bwhere\b|\bwhich (lobe|lobes|side|hemisphere|part of the brain|region of the brain|area)\b|"
    r"\bwhat (lobe|lobes|side|hemisphere|region of the brain|part of the brain)\b|\blocat\w*|"
    r"\blocaliz\w*|\bleft or right\b|\bright or left\b|\b(in|on) the (left|right)\b|\blobes?\b|"
    r"\bhemispheres?\b|\bposition\b|\bcoordinates?\b|\bcentroid\b|\b(frontal|parietal|temporal|"
    r"occipital|insula|insular|limbic)\b|\bwhich side\b"
)
VOLUME = re.compile(
    rf"\bhow (big|large|small|extensive|much)\b|\bvolumes?\b|\bsizes?\b|\bhow many {_UNITS}\b|"
    r"\bmeasure\w*|\bdiameters?\b|\bdimensions?\b|\b(ml|cc|cm3|milliliters?)\b|\bextent\b|"
    r"\bhow far\b|\bburden\b|\blargest\b|\bhow long\b|\bhow wide\b"
)
SEGMENT = re.compile(
    r"\bsegment\w*|\bshow\b|\bdisplay\w*|\bhighlight\w*|\boutline\w*|\bdelineat\w*|\bcontour\w*|"
    r"\bmasks?\b|\bdraw\b|\bmark\b|\bfind\b|\bdetect\w*|\bidentify\b|\bvisuali[sz]e\b|\blabel\b|"
    r"\b(is|are) there\b|\bany\b|\bpresent\b|\bvisible\b|\bsee\b|\bcan you\b|\bplease\b"
)
# Order matters: a ratio question also says "how much", a count also "how many".
_INTENT_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("ratio", RATIO), ("count", COUNT), ("midline", MIDLINE), ("location", LOCATION),
    ("volume", VOLUME), ("segment", SEGMENT),
)
FOLLOW_UP = re.compile(r"^(and|also|what about|how about|same for)\b")


def detect_intent(text: str) -> str | None:
    """The question type named explicitly in the normalized text, or None (help is separate)."""
    for name, rule in _INTENT_RULES:
        if rule.search(text):
            return name
    return None


# -- target spans ----------------------------------------------------------------------------
_RATIO_SPANS: tuple[tuple[re.Pattern[str], tuple[str, str]], ...] = (
    # "what fraction of the core is necrotic" -> (part, whole)
    (re.compile(r"\b(?:fraction|proportion|percent|percentage|share|part|portion|amount|how much)"
                r" of (?P<whole>.+?) (?:is|are|consists? of|is made up of|made up of|is composed of)"
                r" (?P<part>.+)"), ("part", "whole")),
    (re.compile(r"\bratio (?:of|between) (?P<a>.+?) (?:to|and|vs|versus|over|with|,) (?P<b>.+)"),
     ("a", "b")),
    (re.compile(r"\b(?P<a>[a-z\- ]+?) (?:to|vs|versus|,) (?P<b>[a-z\- ]+?) ratio\b"), ("a", "b")),
    (re.compile(r"\b(?P<part>[a-z\- ]+?) (?:fraction|proportion|percentage|share) of (?P<whole>.+)"),
     ("part", "whole")),
    (re.compile(r"\bcompare (?P<a>.+?) (?:with|to|and|against|,) (?P<b>.+)"), ("a", "b")),
    (re.compile(r"\b(?P<a>.+?) (?:relative to|compared to|compared with|as a fraction of|"
                r"as a percentage of|versus|vs) (?P<b>.+)"), ("a", "b")),
)


# Relations between two regions, named in the user's order.
_RELATION_SPANS: tuple[re.Pattern[str], ...] = (
    re.compile(r"\bhow far (?:does|do|did) (?P<a>.+?) (?:extend|extends|spread|spreads|reach|reaches|go|"
               r"goes) (?:beyond|past|outside|out of|from|around) (?P<b>.+)"),
    re.compile(r"\b(?:is|are) (?P<a>.+?) (?:surrounded|encircled|enclosed|rimmed) by (?P<b>.+)"),
    re.compile(r"\b(?:does|do) (?P<a>.+?) (?:surround|encircle|enclose) (?P<b>.+)"),
)


@dataclass(frozen=True)
class Span:
    """One target phrase as the user named it. ``head`` is the part before a place qualifier."""

    words: tuple[str, ...]
    head: tuple[str, ...]
    had_pronoun: bool

    @property
    def text(self) -> str:
        return " ".join(self.words)

    @property
    def is_reference(self) -> bool:
        """Names nothing itself ("it", "that region", or nothing at all)."""
        return all(w in bank.PRONOUNS or w in bank.GENERIC_NOUNS for w in self.words)


def ratio_spans(text: str) -> list[Span] | None:
    """(part, whole) or (a, b) spans of a ratio question, in that order, or None if no pattern fits."""
    for rule, order in _RATIO_SPANS:
        m = rule.search(text)
        if m:
            spans = [make_span(m.group(k).replace(",", " ").split()) for k in order]
            if all(s.words for s in spans):
                return spans
    return None


def relation_spans(text: str) -> list[Span] | None:
    """The two regions of "is the necrosis surrounded by enhancing rim?" and the like, or None."""
    for rule in _RELATION_SPANS:
        m = rule.search(text)
        if m:
            spans = [make_span(m.group(k).replace(",", " ").split()) for k in ("a", "b")]
            if all(s.words for s in spans):
                return spans
    return None


def split_targets(text: str) -> list[Span]:
    """Split on conjunctions/commas, strip filler, share a head noun ("enhancing and necrotic parts")."""
    text = _MULTI_CONJ.sub(",", text)
    text = re.sub(r"\b(and|plus|or|but|then)\b", ",", text)
    spans = [make_span(chunk.split()) for chunk in text.split(",")]
    # Keep what names something (or refers back); drop what the user excluded ("but not X").
    spans = [s for s in spans if (s.words or s.had_pronoun)
             and not (s.words and s.words[0] in _NEGATED)]
    # Distribute the last span's head noun over modifier-only spans before it.
    if len(spans) > 1:
        last = spans[-1].words
        k = 0
        while k < len(last) and last[k] in bank.MODIFIERS:
            k += 1
        head_noun = last[k:]
        if k > 0 and head_noun:
            spans = [make_span(list(s.words) + list(head_noun))
                     if s.words and all(w in bank.MODIFIERS for w in s.words) else s
                     for s in spans[:-1]] + [spans[-1]]
    return spans


def make_span(words: list[str]) -> Span:
    had_pronoun = any(w in bank.PRONOUNS for w in words)
    edge = bank.FILLER | bank.PREPOSITIONS | bank.PRONOUNS
    lo, hi = 0, len(words)
    while lo < hi and words[lo] in edge:
        lo += 1
    while hi > lo and words[hi - 1] in edge:
        hi -= 1
    kept = tuple(w for w in words[lo:hi] if w not in ("the", "a", "an"))
    # "the core region without the swelling": what follows the negation is excluded.
    neg = next((i for i, w in enumerate(kept) if i > 0 and w in _NEGATED), None)
    if neg is not None:
        return make_span(list(kept[:neg]))
    # The head ends at a place qualifier ("tumor | in the cerebellum"); "of" and "on flair" stay.
    cut = next((i for i, w in enumerate(kept) if w in bank.PREPOSITIONS and w != "of"
                and kept[i + 1:i + 2] not in _ON_SEQUENCE), len(kept))
    head = tuple(w for w in kept[:cut] if w not in bank.FILLER)
    return Span(words=kept, head=head or kept, had_pronoun=had_pronoun)


# -- keyword concepts ------------------------------------------------------------------------
_KEYWORD_RES = {c: [re.compile(p) for p in pats] for c, pats in bank.KEYWORDS.items()}


def keyword_concept(text: str) -> str | None:
    """The concept settled by keywords (tiered: NCR/ED/ET, then TC, then WT), or None."""
    for tier in bank.TIERS:
        best: tuple[int, str] | None = None
        for concept in tier:
            for rule in _KEYWORD_RES[concept]:
                m = rule.search(text)
                if m and (best is None or m.start() < best[0]):
                    best = (m.start(), concept)
        if best is not None:
            return best[1]
    return None
