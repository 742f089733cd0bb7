"""Vocabulary the query parser matches against.

* ``CONCEPT_BANK``: many phrasings per concept; a target phrase is embedded with the text encoder
  and compared (cosine) with every phrasing. The best similarity is the reported score.
* ``NEGATIVE_BANK``: things the model does NOT segment (other organs, normal brain anatomy,
  unrelated topics). A phrase closer to these than to any concept is refused.
* Keyword tables: exact words that settle a concept (or a refusal) without doubt. They are
  combined with the embedding, never used alone for phrases they do not cover.

Everything per concept (phrasings, keywords, abbreviations) comes from ``vlseg.vocab``; this file
keeps only the words that belong to no concept (out-of-scope topics, filler, spelling).
"""
from __future__ import annotations

import re

from vlseg import vocab

def concept_bank() -> dict[str, tuple[str, ...]]:
    """Concept -> normalized phrasings the parser compares a phrase with: every term the
    vocabulary lists for it (name, training and held-out synonyms, lay phrasings)."""
    out: dict[str, tuple[str, ...]] = {}
    for c in vocab.concepts():
        terms = (c.name,) + c.synonyms + c.heldout_synonyms
        words = [" ".join(SPELLING.get(w, w) for w in t.lower().split()) for t in terms]
        out[c.code] = tuple(dict.fromkeys(words + list(c.phrases)))
    return out


# Things we will not segment: a phrase nearer to these than to every concept is refused.
NEGATIVE_BANK: tuple[str, ...] = (
    # other organs
    "liver", "kidney", "lungs", "heart", "spleen", "pancreas", "stomach", "bladder", "prostate",
    "breast", "colon", "bowel", "bone", "spine", "muscle", "thyroid", "eye", "skin", "aorta",
    "liver tumor", "lung nodule", "kidney cyst",
    # normal brain anatomy and other brain findings
    "hippocampus", "ventricles", "skull", "white matter", "gray matter", "cerebellum",
    "brainstem", "corpus callosum", "thalamus", "blood vessels", "cerebrospinal fluid",
    "the whole brain", "brain mask", "stroke", "hemorrhage", "aneurysm", "multiple sclerosis",
    "the background", "the head",
    # unrelated
    "the weather", "a joke", "the news", "a recipe", "sports", "the stock market", "a poem",
    "my car", "the time", "a cat", "a dog", "football", "music", "a movie", "politics",
    "hello", "thank you", "the meaning of life", "money", "a song",
)

def keywords() -> dict[str, tuple[str, ...]]:
    """Concept -> regexes (on the normalized text) that settle it without doubt."""
    return {c.code: c.keywords for c in vocab.concepts() if c.keywords}


def tiers() -> tuple[tuple[str, ...], ...]:
    """Concepts grouped by keyword precedence: a more specific tier wins (NCR/ED/ET, TC, WT)."""
    levels = sorted({c.tier for c in vocab.concepts()})
    return tuple(tuple(c.code for c in vocab.concepts() if c.tier == t) for t in levels)


def abbreviations() -> dict[str, str]:
    """Capitalised-only abbreviation -> the phrase it stands for ("ET" -> "enhancing tumor")."""
    return {abbr: phrase for c in vocab.concepts() for abbr, phrase in c.abbreviations}


# Out of scope wherever they appear: other organs and unrelated topics.
OFF_TOPIC = re.compile(
    r"\b(livers?|hepatic|kidneys?|renal|lungs?|pulmonary|hearts?|cardiac|spleen|pancreas|"
    r"stomach|bladder|prostate|breasts?|colon|bowels?|intestines?|bones?|spine|spinal|"
    r"muscles?|thyroid|eyes?|skin|aorta|knees?|hips?|abdomen|chest|pelvis|uterus|ovar\w+|"
    r"weather|jokes?|recipe|poem|songs?|movies?|football|stocks?|politics|news|rain\w*)\b"
)
# Out of scope as the thing to segment ("segment the hippocampus"), fine as a place
# ("is the tumor near the ventricles?").
BRAIN_ANATOMY = re.compile(
    r"\b(hippocampus|ventricles?|skull|thalamus|cerebellum|brainstem|brain stem|vessels?|"
    r"arter(y|ies)|veins?|csf|cerebrospinal|white matter|gr[ae]y matter|corpus callosum|"
    r"stroke|infarcts?|hemorrhage|aneurysms?|sclerosis|brain|head|cortex|sinus|face|nose)\b"
)
# Questions a segmentation tool must not answer (diagnosis, grading, treatment).
DIAGNOSTIC = re.compile(
    r"\b(grade|grading|malignan\w*|benign|prognos\w*|survival|surviv\w*|treat\w*|therap\w*|"
    r"diagnos\w*|cure|surgery|surgical|operate|operable|resect\w*|chemo\w*|radiotherap\w*|"
    r"radiation|idh|mgmt|mutation|mutated|genetic\w*|life expectancy|die|cancerous|"
    r"what type of tumor|which type of tumor|what kind of tumor|is (it|this) (a )?(glioblastoma|gbm|"
    r"metastas\w*|meningioma|lymphoma))\b"
)

# Canonical spelling for British forms and common variants (applied word by word).
SPELLING: dict[str, str] = {
    "tumour": "tumor", "tumours": "tumors", "oedema": "edema", "oedematous": "edematous",
    "haemorrhage": "hemorrhage", "peritumoural": "peritumoral", "centre": "center",
    "millilitres": "milliliters", "millilitre": "milliliter", "litres": "liters",
    "colour": "color", "grey": "gray", "localise": "localize", "segmentise": "segment",
    "nonenhancing": "non-enhancing", "ml": "ml", "cc": "cc",
}

# Domain words a misspelled token may be corrected to (difflib, close matches only).
DOMAIN_VOCAB: tuple[str, ...] = (
    "necrotic", "necrosis", "necrotizing", "edema", "edematous", "enhancing", "enhancement",
    "enhanced", "enhance", "tumor", "tumors", "lesion", "lesions", "swelling", "hyperintensity",
    "hyperintense", "peritumoral", "vasogenic", "glioma", "glioblastoma", "segment", "segmentation",
    "volume", "hemisphere", "hemispheres", "midline", "bilateral", "fraction", "proportion",
    "percentage", "ratio", "location", "located", "contrast", "gadolinium",
    "component", "components", "region", "regions", "surrounding", "delineate", "outline",
    "highlight", "measure", "diameter", "neoplasm", "abnormality", "tissue", "lobe", "lobes", "frontal", "parietal", "temporal",
    "occipital", "multifocal", "separate",
)

# Words that are neither targets nor content: dropped at the edges of a target phrase.
FILLER: frozenset[str] = frozenset("""
a an the please pls kindly can could would will you u me us my our your i we let lets let's
show display give get find detect identify locate localize mark draw outline delineate highlight
segment segmentation segmented segmenting mask masks contour contours label labels visualize
view see tell explain describe report compute calculate estimate measure measurement measurements
what whats what's which how how's is are was were be being been do does did has have had there
there's here just only also now then again too so ok okay hey hi hello thanks thank yes no want
need like to for about this scan image images mri study patient case volume volumes size
sizes big large small huge tiny extensive much many ml cc milliliters milliliter cm3 cubic mm
centimeters dimension dimensions diameter diameters extent where where's located location lobe
lobes side sides hemisphere hemispheres left right midline cross crosses crossing cross over
bilateral bilaterally both count number present presence visible seen exist exists fraction
ratio proportion percent percentage share amount relative compared compare versus vs it's am
overall total help approximately far extend extends extending spread spreads
reach reaches involve involves affect affects everything roughly exactly up out go new another next frontal parietal
multifocal multicentric unifocal solitary single several multiple separate distinct satellite foci focus involved involvement
involving extension extending extended across spread spreading closest nearest close near
temporal occipital insula insular limbic deep any some all there's i'd i'm could i
meant mean instead rather actually sorry nope
""".split())
# Prepositions: kept inside a phrase ("enhancing part of the tumor"), dropped at its edges.
PREPOSITIONS: frozenset[str] = frozenset(
    "in of on at near around within inside into beyond from with across through involving "
    "by over under behind between".split()
)
PRONOUNS: frozenset[str] = frozenset(
    "it its that this them those these they same one ones previous last above former latter".split()
)
# Generic head nouns: a phrase made only of these (and pronouns) names nothing by itself.
GENERIC_NOUNS: frozenset[str] = frozenset(
    "part parts region regions area areas component components portion portions tissue zone "
    "zones bit bits piece pieces thing things stuff structure structures subregion subregions "
    "sub-region sub-regions label labels class classes compartment compartments".split()
)
# Modifiers that may share a head noun ("enhancing and necrotic parts").
MODIFIERS: frozenset[str] = frozenset(
    "enhancing non-enhancing contrast-enhancing necrotic edematous swollen cystic solid active "
    "dead peritumoral perilesional vasogenic central".split()
)
