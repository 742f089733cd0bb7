"""Vocabulary the query parser matches against.

* ``CONCEPT_BANK``: many phrasings per concept; a target phrase is embedded with the text encoder
  and compared (cosine) with every phrasing. The best similarity is the reported score.
* ``NEGATIVE_BANK``: things the model does NOT segment (other organs, normal brain anatomy,
  unrelated topics). A phrase closer to these than to any concept is refused.
* Keyword tables: exact words that settle a concept (or a refusal) without doubt. They are
  combined with the embedding, never used alone for phrases they do not cover.
"""
from __future__ import annotations

import re

# Extra phrasings per concept (lay and descriptive wording) added to the training phrase bank
# ``vlseg.training.prompts.concept_phrases()``; see ``concept_bank()``.
EXTRA_PHRASES: dict[str, tuple[str, ...]] = {
    "NCR": (
        "necrotic tumor", "necrotic part", "dead tumor tissue", "the dark center of the tumor",
        "cystic necrotic cavity", "necrotic component", "tumor necrosis", "nonenhancing core",
    ),
    "ED": (
        "brain swelling", "swelling around the tumor", "surrounding edema", "fluid around the tumor",
        "infiltrative edema", "the bright area on flair", "white matter swelling", "edema region",
    ),
    "ET": (
        "enhancing part", "ring enhancement", "active tumor", "enhancing region", "enhancing component",
        "the part that lights up with contrast", "bright rim on t1 contrast", "viable enhancing tumor",
    ),
    "TC": (
        "core", "the core of the tumor", "solid tumor core", "core region", "tumor without the edema",
        "solid part of the tumor", "gross tumor",
    ),
    "WT": (
        "brain tumor", "the whole lesion", "the abnormality", "tumor including edema", "tumor region",
        "neoplasm", "cancer", "the growth", "all tumor tissue", "brain lesion",
        "the tumor and its edema",
    ),
}


def concept_bank() -> dict[str, tuple[str, ...]]:
    """Concept -> normalized phrasings: the training bank (with held-out terms) + ``EXTRA_PHRASES``."""
    from vlseg.training.prompts import concept_phrases

    base = concept_phrases(include_heldout=True)
    out: dict[str, tuple[str, ...]] = {}
    for concept, terms in base.items():
        words = [" ".join(SPELLING.get(w, w) for w in t.lower().split()) for t in terms]
        out[concept] = tuple(dict.fromkeys(words + list(EXTRA_PHRASES.get(concept, ()))))
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

# Keywords (regexes on the normalized text) that decide a concept.  Tiered: a tier-1 concept
# (NCR/ED/ET) wins over TC, which wins over WT; within tier 1 the earliest match wins.
KEYWORDS: dict[str, tuple[str, ...]] = {
    "NCR": (r"\bnon[- ]?enhanc\w*", r"\bnecro\w*", r"\bdead tissue\b", r"\bncr\b"),
    "ED": (r"\bedema\w*", r"\bswell\w*", r"\bswollen\b", r"\bflair hyperintens\w*",
           r"\bhyperintens\w*( \w+)? on (t2 |t2-)?(flair|t2)\b", r"\bt2 hyperintens\w*",
           r"\bperitumou?ral\b", r"\bperilesional\b", r"\bvasogenic\b", r"\bsnfh\b"),
    "ET": (r"\benhanc\w*", r"\bgadolinium\b"),
    "TC": (r"\bcore\b", r"\btc\b"),
    "WT": (r"\btumou?rs?\b", r"\blesions?\b", r"\bmass(es)?\b", r"\bgliomas?\b",
           r"\bglioblastomas?\b", r"\bneoplasms?\b", r"\bcancers?\b", r"\bwt\b", r"\bgrowths?\b",
           r"\babnormalit(y|ies)\b"),
}
TIERS: tuple[tuple[str, ...], ...] = (("NCR", "ED", "ET"), ("TC",), ("WT",))
# Abbreviations that only count when typed in capitals ("ET" yes, "et" no).
UPPERCASE_ONLY: dict[str, str] = {"ET": "ET", "ED": "ED", "TC": "TC", "WT": "WT", "NCR": "NCR",
                                  "NET": "NCR", "SNFH": "ED"}

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
temporal occipital insula insular limbic deep any some all there's i'd i'm could i
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
