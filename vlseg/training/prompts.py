"""Training phrasings per concept, built from the vocabulary's synonyms (``vlseg.vocab``).

Training draws a template x synonym phrasing per prompt (``sample_prompt``); a separate held-out
set of synonyms (each concept's ``heldout_synonyms``) and templates (``HELDOUT_TEMPLATES``) is
never trained on and measures how well free text generalises in validation. A concept registered
in the vocabulary is sampled like the bundled ones, with no edit here.
"""
from __future__ import annotations

import functools

import numpy as np

from vlseg import vocab

TEMPLATES: tuple[str, ...] = (
    "{x}", "the {x}", "segment the {x}", "segment {x}", "where is the {x}?", "show me the {x}",
    "show the {x}", "highlight the {x}", "outline the {x}", "find the {x}", "mask of the {x}",
    "delineate the {x}", "can you segment the {x}?", "{x} segmentation", "the {x} region",
    "label the {x}", "mark the {x}", "Segment the {x}.", "what is the extent of the {x}?",
)
HELDOUT_TEMPLATES: tuple[str, ...] = (
    "please contour the {x}", "I want to see the {x}", "locate the {x} in this scan",
)


def concept_phrases(*, include_heldout: bool = False) -> dict[str, tuple[str, ...]]:
    """Concept -> its terms (name, synonyms and abbreviations), training terms first."""
    out = {}
    for c in vocab.concepts():
        terms = _terms(c) + (c.heldout_synonyms if include_heldout else ())
        out[c.code] = tuple(dict.fromkeys(terms))
    return out


def canonical_prompt(concept: str) -> str:
    """The phrasing the predictor uses for a concept requested by name."""
    return vocab.concept(concept).canonical_prompt


def training_prompts(concept: str) -> tuple[str, ...]:
    """Every training phrasing of a concept: each template filled with each training term."""
    return _training_prompts(concept, vocab.version())


@functools.lru_cache(maxsize=64)
def _training_prompts(concept: str, _version: int) -> tuple[str, ...]:
    terms = _terms(vocab.concept(concept))
    return tuple(dict.fromkeys(t.format(x=x) for t in TEMPLATES for x in terms))


def heldout_prompts(concept: str) -> tuple[str, ...]:
    """Held-out phrasings: held-out terms in any template, and any term in held-out templates."""
    return _heldout_prompts(concept, vocab.version())


@functools.lru_cache(maxsize=64)
def _heldout_prompts(concept: str, _version: int) -> tuple[str, ...]:
    c = vocab.concept(concept)
    train = set(training_prompts(concept))
    phrases = [t.format(x=x) for t in TEMPLATES + HELDOUT_TEMPLATES for x in c.heldout_synonyms]
    phrases += [t.format(x=x) for t in HELDOUT_TEMPLATES for x in _terms(c)]
    return tuple(p for p in dict.fromkeys(phrases) if p not in train)


def sample_prompt(concept: str, rng: np.random.Generator, *, canonical_prob: float = 0.25) -> str:
    """One random training phrasing of ``concept``; the canonical name with ``canonical_prob``
    (the predictor prompts with it, so it is seen often)."""
    if rng.random() < canonical_prob:
        return canonical_prompt(concept)
    phrases = training_prompts(concept)
    return phrases[int(rng.integers(len(phrases)))]


def _terms(c: vocab.Concept) -> tuple[str, ...]:
    """Training terms: the synonyms, or the name alone for a concept that lists none."""
    return c.synonyms or (c.name,)
