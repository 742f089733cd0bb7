"""Places a question may name: the lobe atlas' regions and the named brain structures, with the
words a user might type for each. One table each; the parser (``vlseg.language.places``) finds
the words, the reasoning (``vlseg.reasoning.atlas``, ``vlseg.reasoning.structures``) measures
the places.

    structure("Brain stem").key    # 'brainstem'
    LOBES[0]                       # 'frontal' (lobe atlas value 1)
"""
from __future__ import annotations

from dataclasses import dataclass

# The lobe atlas' regions, in atlas order (value = 1 + index).
LOBES: tuple[str, ...] = (
    "frontal", "parietal", "temporal", "occipital", "insula", "limbic",
    "deep grey matter", "cerebellum", "brainstem",
)

# SNOMED CT codes of the lobe atlas' regions (finding sites in the DICOM SR measurement report);
# "deep grey matter" has no single code in pydicom's dictionary and is left uncoded.
LOBE_CODES: dict[str, tuple[str, str, str]] = {
    "frontal": ("83251001", "SCT", "Frontal lobe"),
    "parietal": ("16630005", "SCT", "Parietal lobe"),
    "temporal": ("78277001", "SCT", "Temporal lobe"),
    "occipital": ("31065004", "SCT", "Occipital lobe"),
    "insula": ("36169008", "SCT", "Insula"),
    "limbic": ("279215006", "SCT", "Limbic lobe"),
    "cerebellum": ("113305005", "SCT", "Cerebellum"),
    "brainstem": ("119238007", "SCT", "Brain Stem"),
}
# SNOMED CT laterality values of the answers' hemispheres.
HEMISPHERE_CODES: dict[str, tuple[str, str, str]] = {
    "left": ("7771000", "SCT", "Left"),
    "right": ("24028007", "SCT", "Right"),
    "bilateral": ("51440002", "SCT", "Right and left"),
}

# Other words for the lobe atlas' regions.
LOBE_ALIASES: dict[str, str] = {
    "insular": "insula", "insular cortex": "insula", "cerebellar": "cerebellum",
    "deep gray matter": "deep grey matter", "basal ganglia": "deep grey matter",
    "frontal lobe": "frontal", "parietal lobe": "parietal", "temporal lobe": "temporal",
    "occipital lobe": "occipital", "limbic lobe": "limbic",
}


@dataclass(frozen=True)
class Structure:
    """A named brain structure: how questions and answers name it, and where its mask comes from."""

    key: str                          # JSON key in distances_mm
    name: str                         # how answers name it
    aliases: tuple[str, ...]          # lower-case phrases a user might type
    atlas: str                        # where the mask comes from
    labels: tuple[str, ...] = ()      # atlas label names (left first where sided)
    sides: tuple[str, ...] = ()       # sides of ``labels`` ("left"/"right"/"" per label)
    note: str = ""


STRUCTURES: tuple[Structure, ...] = (
    Structure("motor_cortex", "motor cortex (precentral gyrus)",
              ("motor cortex", "primary motor cortex", "motor strip", "motor area", "m1",
               "precentral gyrus", "precentral gyri", "precentral cortex", "precentral"),
              "Harvard-Oxford cortical", ("Left_Precentral_Gyrus", "Right_Precentral_Gyrus"),
              ("left", "right")),
    Structure("broca_area", "Broca's area",
              ("broca's area", "brocas area", "broca area", "broca", "broca's",
               "motor speech area", "speech area", "pars opercularis", "pars triangularis",
               "left inferior frontal gyrus", "inferior frontal gyrus"),
              "Harvard-Oxford cortical",
              ("Left_Inferior_Frontal_Gyrus_pars_opercularis",
               "Left_Inferior_Frontal_Gyrus_pars_triangularis"), ("left", "left"),
              note="left hemisphere only (the usual language-dominant side)"),
    Structure("lateral_ventricles", "lateral ventricles",
              ("lateral ventricles", "lateral ventricle", "ventricles", "ventricle",
               "ventricular system", "frontal horn", "occipital horn", "temporal horn"),
              "Harvard-Oxford subcortical", ("Left_Lateral_Ventrical", "Right_Lateral_Ventricle"),
              ("left", "right")),
    Structure("thalamus", "thalamus", ("thalamus", "thalami", "thalamic"),
              "Harvard-Oxford subcortical", ("Left_Thalamus", "Right_Thalamus"), ("left", "right")),
    Structure("brainstem", "brainstem", ("brainstem", "brain stem", "brain-stem", "pons",
                                         "midbrain", "medulla", "medulla oblongata"),
              "Harvard-Oxford subcortical", ("Brain-Stem",), ("",)),
    Structure("corpus_callosum", "corpus callosum",
              ("corpus callosum", "callosum", "callosal body", "body of the corpus callosum",
               "genu", "splenium"),
              "Talairach (Brodmann areas)", ("Corpus_Callosum",), ("",),
              note="Harvard-Oxford has no corpus callosum; Talairach's label is used"),
    Structure("midline", "midline",
              ("midline", "mid-line", "mid line", "midsagittal plane", "mid-sagittal plane",
               "falx", "falx cerebri", "interhemispheric fissure"),
              "mid-sagittal plane fitted to the case"),
)
STRUCTURE_KEYS: tuple[str, ...] = tuple(s.key for s in STRUCTURES)
ALIASES: dict[str, str] = {a: s.key for s in STRUCTURES for a in (s.key.replace("_", " "), *s.aliases)}


def structure(key_or_alias: str) -> Structure:
    """The structure with this key or alias (case-insensitive); ValueError otherwise."""
    k = " ".join(str(key_or_alias).lower().replace("’", "'").split())
    key = k if k in STRUCTURE_KEYS else ALIASES.get(k)
    if key is None:
        raise ValueError(f"unknown structure {key_or_alias!r}; use one of {', '.join(STRUCTURE_KEYS)}")
    return next(s for s in STRUCTURES if s.key == key)
