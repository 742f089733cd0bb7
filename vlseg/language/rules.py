"""Text rules of the query parser: normalization, target spans, keywords. No model, no torch.
(What each kind of question looks like is declared in the intent table, ``vlseg.language.intents``.)

Everything here works on the *normalized* query: lower case, American spelling, misspelled
domain words corrected, punctuation reduced to commas. Only text is ever interpreted; nothing in a
query is opened, run or looked up.
"""
from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass
from typing import Callable

from vlseg import vocab
from vlseg.language import bank

# -- normalization ---------------------------------------------------------------------------
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
# Words that open an excluded phrase ("no edema, just the core", "skip the necrosis").
_EXCLUDING_START = re.compile(r"^(no|not|never|don't|dont|do not|without|except|excluding|minus|"
                              r"ignoring|ignore|skip|leave out|other than|apart from|but not)\b")
# "all but the edema", "every region except the necrosis": everything minus X.
ALL_BUT = re.compile(r"\b(all|everything|every (region|part|sub-?region)|all (the )?(sub-?regions?|"
                     r"regions|parts|labels|classes|components|compartments))( \w+)? (but|except|"
                     r"other than|apart from|excluding|without|minus|besides) (?P<rest>.+)")
# A new question starts after a comma, or after "and" when a question word follows.
_CLAUSE_BREAK = re.compile(r"\s*,\s*(?:and\s+|also\s+)?|\s+and\s+(?=(?:also\s+)?(?:where|what|which|"
                           r"how|is|are|does|do|did|can|could|show|segment|give|tell|measure|count|"
                           r"outline|highlight)\b)")


def normalize(query: str) -> str:
    """Lower-case, canonical spelling, corrected typos, commas as the only punctuation."""
    # Capitalised abbreviations are unambiguous ("ET"), lower-case ones are not ("et", "ed").
    expand = bank.abbreviations()
    if expand:
        upper = re.compile(r"\b(" + "|".join(map(re.escape, expand)) + r")\b")
        query = upper.sub(lambda m: f" {expand[m.group(1)]} ", query)
    text = query
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


def _correct(tok: str) -> str:
    return _correct_cached(tok, vocab.version())


@functools.lru_cache(maxsize=4096)
def _correct_cached(tok: str, _version: int) -> str:
    """Fix a misspelled domain word ("necrotc" -> "necrotic"); leave everything else alone."""
    if len(tok) < 4 or not tok.isalpha() or tok in _known_words(_version):
        return tok
    if bank.OFF_TOPIC.fullmatch(tok) or bank.BRAIN_ANATOMY.fullmatch(tok):
        return tok
    cutoff = 0.8 if len(tok) >= 6 else 0.84
    match = difflib.get_close_matches(tok, bank.DOMAIN_VOCAB, n=1, cutoff=cutoff)
    return match[0] if match else tok


@functools.lru_cache(maxsize=4)
def _known_words(_version: int) -> frozenset[str]:
    words = set(bank.FILLER | bank.PREPOSITIONS | bank.PRONOUNS | bank.GENERIC_NOUNS
                | bank.MODIFIERS) | set(bank.DOMAIN_VOCAB)
    for c in vocab.concepts():
        for p in (c.name,) + c.phrases:
            words.update(p.lower().split())
    return frozenset(words)


# -- targets named without a phrase ------------------------------------------------------
# "segment everything" / "all sub-regions": the three disjoint regions.
ALL_REGIONS = re.compile(r"\b(everything|all (the )?(sub-?regions?|regions|labels|classes|parts|"
                         r"compartments|components|tumor regions|tissue types))\b")
# A follow-up that names only a new concept ("and the edema?", "what about the core?", "the same
# for the necrosis"): the previous question, asked of it.
FOLLOW_UP = re.compile(r"^(and|also|what about|how about|what of|same for|and for|now)\b|"
                       r"\b(the )?same (for|with|about|question|thing|again)\b|\bthe same\b")
# A correction ("no, I meant the edema", "show me the enhancing part instead"): the previous
# question, asked of the concept named now (a display verb here does not change the question).
CORRECTION = re.compile(r"^(no|nope|sorry|actually)\b|\b(i meant|i mean|instead|rather)\b")
# Relations a question asks about by name; otherwise answers leave them out.
_RELATION_WORDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("rim", re.compile(r"\b(rimmed|ringed|surround\w*|encircl\w*|enclos\w*)\b|"
                       r"\b(a|an|any) (enhancing )?(rim|ring)\b")),
    ("edema_extent", re.compile(r"\b(beyond|extend\w*|spread\w*|margin|how far (does|do|is|are) "
                                r"the (edema|swelling))\b")),
)


def relations_asked(text: str) -> tuple[str, ...]:
    """Which relations the normalized question names: "rim" (necrosis inside an enhancing rim),
    "edema_extent" (how far the edema reaches beyond the core)."""
    return tuple(name for name, rule in _RELATION_WORDS if rule.search(text))


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
    minus: tuple[str, ...] = ()  # "the core without the necrosis": ("necrosis",)

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
            # "compare it to the whole tumor": "it" holds a place (the previous turn's region)
            if all(s.words for s in spans) or (any(s.words for s in spans)
                                               and all(s.words or s.had_pronoun for s in spans)):
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


def split_questions(text: str, detect: Callable[[str], str | None]) -> list[str]:
    """A compound question split into its questions, in the order asked ("where is the tumor,
    how big is it, and what fraction of the core is necrotic?" -> three). Pieces that ask nothing
    of their own stay with the question before them ("the core, the edema"); a query whose
    pieces all ask the same kind of question stays whole."""
    pieces = [p.strip() for p in _CLAUSE_BREAK.split(text) if p and p.strip()]
    merged: list[str] = []
    for piece in pieces:
        if merged and detect(piece) is None:
            merged[-1] += ", " + piece
        else:
            merged.append(piece)
    kinds = [detect(m) for m in merged]
    if len(merged) < 2 or len(set(kinds)) < 2:
        return [text]
    return merged


def split_targets(text: str) -> list[Span]:
    """Split on conjunctions/commas, strip filler, share a head noun ("enhancing and necrotic parts")."""
    text = _MULTI_CONJ.sub(",", text)
    text = re.sub(r"\b(and|plus|or|but|then)\b", ",", text)
    chunks = [c.strip() for c in text.split(",")]
    # Keep what names something (or refers back); drop what the user excluded ("but not X",
    # "no edema, just the core").
    spans = [make_span(c.split()) for c in chunks if not _EXCLUDING_START.match(c)]
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
    # "the core without the necrosis": what follows the negation is taken out of the head.
    neg = next((i for i, w in enumerate(kept) if i > 0 and w in _NEGATED), None)
    if neg is not None:
        head = make_span(list(kept[:neg]))
        minus = make_span(list(kept[neg + 1:]))
        return Span(words=head.words, head=head.head, had_pronoun=head.had_pronoun,
                    minus=minus.words)
    # The head ends at a place qualifier ("tumor | in the cerebellum"); "of" and "on flair" stay.
    cut = next((i for i, w in enumerate(kept) if w in bank.PREPOSITIONS and w != "of"
                and kept[i + 1:i + 2] not in _ON_SEQUENCE), len(kept))
    head = tuple(w for w in kept[:cut] if w not in bank.FILLER)
    return Span(words=kept, head=head or kept, had_pronoun=had_pronoun)


# -- keyword concepts ------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _keyword_rules(_version: int) -> dict[str, list[re.Pattern[str]]]:
    return {c: [re.compile(p) for p in pats] for c, pats in bank.keywords().items()}


def is_diagnostic(text: str) -> bool:
    """A diagnosis/grading/treatment question. A match that lies wholly inside the words of a
    concept ("resection" in "resection cavity") does not count."""
    covered = [m.span() for pats in _keyword_rules(vocab.version()).values() for rule in pats
               for m in rule.finditer(text)]
    return any(not any(a <= m.start() and m.end() <= b for a, b in covered)
               for m in bank.DIAGNOSTIC.finditer(text))


def keyword_concept(text: str) -> str | None:
    """The concept settled by keywords (tiered: NCR/ED/ET, then TC, then WT), or None."""
    rules = _keyword_rules(vocab.version())
    for tier in bank.tiers():
        best: tuple[int, str] | None = None
        for concept in tier:
            for rule in rules.get(concept, ()):
                m = rule.search(text)
                if m and (best is None or m.start() < best[0]):
                    best = (m.start(), concept)
        if best is not None:
            return best[1]
    return None
