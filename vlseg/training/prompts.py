"""Phrase bank per concept: the words a user may type for each tumor region.

``concept_phrases()`` is the bank other parts import (the language parser uses it too).
Training draws a template x synonym phrasing per prompt (``sample_prompt``); a separate
held-out set of synonyms and templates (``heldout_prompts``) is never trained on and measures
how well free text generalises in validation.
"""
from __future__ import annotations

import functools

import numpy as np

from vlseg.concepts import CONCEPT_NAMES, CONCEPTS

# Terms seen in training. Abbreviations first, then clinical names and lay synonyms.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "NCR": (
        "NCR", "necrotic core", "necrotic tumor core", "necrotic tumour core", "necrosis",
        "necrotic tissue", "necrotic region", "non-enhancing tumor core", "non-enhancing core",
        "necrotic and non-enhancing tumor", "NCR/NET", "NET", "dead tissue in the tumor",
        "necrotic center", "central necrosis",
    ),
    "ED": (
        "ED", "edema", "oedema", "peritumoral edema", "peritumoral oedema", "perilesional edema",
        "vasogenic edema", "swelling", "SNFH", "surrounding non-enhancing FLAIR hyperintensity",
        "FLAIR hyperintensity", "T2 hyperintensity",
        "brain swelling around the tumor", "edematous tissue", "invaded tissue",
    ),
    "ET": (
        "ET", "enhancing tumor", "enhancing tumour", "enhancing rim", "contrast enhancing tumor",
        "contrast-enhancing tumor", "enhancement", "gadolinium enhancing tumor", "enhancing lesion",
        "enhancing part of the tumor", "active tumor", "rim enhancement", "enhancing tissue",
    ),
    "TC": (
        "TC", "tumor core", "tumour core", "core of the tumor", "solid tumor", "bulk tumor",
        "necrosis and enhancing tumor", "gross tumor core", "tumor core region", "solid core",
    ),
    "WT": (
        "WT", "whole tumor", "whole tumour", "tumor", "tumour", "entire tumor", "complete tumor",
        "lesion", "mass", "glioma", "FLAIR abnormality",
        "tumor with edema", "abnormal region", "full lesion extent",
    ),
}

# Terms only used for validation of free text (never trained on).
HELDOUT_SYNONYMS: dict[str, tuple[str, ...]] = {
    "NCR": ("necrotic part", "dead tumor tissue", "necrotic component"),
    "ED": ("oedematous area", "fluid around the tumor", "peritumoural swelling"),
    "ET": ("enhancing component", "contrast enhancement", "part that lights up with contrast"),
    "TC": ("tumour core region", "core tumor", "solid tumor core"),
    "WT": ("total tumor", "whole lesion", "entire abnormality"),
}

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
    """Concept -> its terms (synonyms and abbreviations), training terms first."""
    out = {}
    for c in CONCEPTS:
        terms = SYNONYMS[c] + (HELDOUT_SYNONYMS[c] if include_heldout else ())
        out[c] = tuple(dict.fromkeys(terms))
    return out


def canonical_prompt(concept: str) -> str:
    """The phrasing the predictor uses for a concept requested by name (``CONCEPT_NAMES``)."""
    return CONCEPT_NAMES[_check(concept)]


@functools.lru_cache(maxsize=None)
def training_prompts(concept: str) -> tuple[str, ...]:
    """Every training phrasing of a concept: each template filled with each training term."""
    terms = SYNONYMS[_check(concept)]
    return tuple(dict.fromkeys(t.format(x=x) for t in TEMPLATES for x in terms))


@functools.lru_cache(maxsize=None)
def heldout_prompts(concept: str) -> tuple[str, ...]:
    """Held-out phrasings: held-out terms in any template, and any term in held-out templates."""
    train = set(training_prompts(concept))
    phrases = [t.format(x=x) for t in TEMPLATES + HELDOUT_TEMPLATES for x in HELDOUT_SYNONYMS[concept]]
    phrases += [t.format(x=x) for t in HELDOUT_TEMPLATES for x in SYNONYMS[concept]]
    return tuple(p for p in dict.fromkeys(phrases) if p not in train)


def sample_prompt(concept: str, rng: np.random.Generator, *, canonical_prob: float = 0.25) -> str:
    """One random training phrasing of ``concept``; the canonical name with ``canonical_prob``
    (the predictor prompts with it, so it is seen often)."""
    if rng.random() < canonical_prob:
        return canonical_prompt(concept)
    phrases = training_prompts(concept)
    return phrases[int(rng.integers(len(phrases)))]


def _check(concept: str) -> str:
    if concept not in SYNONYMS:
        raise ValueError(f"unknown concept {concept!r}; use one of {', '.join(CONCEPTS)}")
    return concept
