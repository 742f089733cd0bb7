"""Vocabulary shared by every part of vlseg: tumor concepts, MRI sequences, label conventions.

Concepts (see DESIGN.md):
    NCR  necrotic / non-enhancing tumor core
    ED   peritumoral edema (SNFH)
    ET   enhancing tumor
    TC   tumor core   = NCR ∪ ET
    WT   whole tumor  = NCR ∪ ED ∪ ET
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

CONCEPTS: tuple[str, ...] = ("NCR", "ED", "ET", "TC", "WT")
BASE_CONCEPTS: tuple[str, ...] = ("NCR", "ED", "ET")  # disjoint label classes
CONCEPT_NAMES: dict[str, str] = {
    "NCR": "necrotic tumor core",
    "ED": "peritumoral edema",
    "ET": "enhancing tumor",
    "TC": "tumor core",
    "WT": "whole tumor",
}
# Which disjoint classes make up each concept.
CONCEPT_PARTS: dict[str, tuple[str, ...]] = {
    "NCR": ("NCR",),
    "ED": ("ED",),
    "ET": ("ET",),
    "TC": ("NCR", "ET"),
    "WT": ("NCR", "ED", "ET"),
}

# Canonical sequence names, in the channel order the model uses.
SEQUENCES: tuple[str, ...] = ("t1n", "t1c", "t2w", "t2f")
SEQUENCE_ALIASES: dict[str, str] = {
    "t1n": "t1n", "t1": "t1n", "t1w": "t1n", "t1native": "t1n",
    "t1c": "t1c", "t1ce": "t1c", "t1gd": "t1c", "t1post": "t1c",
    "t2w": "t2w", "t2": "t2w",
    "t2f": "t2f", "flair": "t2f", "t2flair": "t2f", "t2-flair": "t2f",
}

# Label value of each disjoint class, per convention.
LABEL_CONVENTIONS: dict[str, dict[str, int]] = {
    "brats2023": {"NCR": 1, "ED": 2, "ET": 3},
    "brats2021": {"NCR": 1, "ED": 2, "ET": 4},
    # MSD Task01_BrainTumour: 1 edema, 2 non-enhancing tumor, 3 enhancing tumor.
    "msd": {"ED": 1, "NCR": 2, "ET": 3},
}


def canonical_sequence(name: str) -> str:
    """Map any accepted sequence name (``flair``, ``t1ce``, ``T2w`` ...) to ``t1n|t1c|t2w|t2f``."""
    key = name.strip().lower().replace("_", "").replace(" ", "")
    if key in SEQUENCE_ALIASES:
        return SEQUENCE_ALIASES[key]
    raise ValueError(
        f"unknown MRI sequence {name!r}; use one of {', '.join(SEQUENCES)} "
        "(or the older names t1, t1ce, t2, flair)"
    )


def check_convention(convention: str) -> dict[str, int]:
    if convention not in LABEL_CONVENTIONS:
        raise ValueError(
            f"unknown label convention {convention!r}; use one of {', '.join(LABEL_CONVENTIONS)}"
        )
    return LABEL_CONVENTIONS[convention]


def labels_to_concepts(labels: np.ndarray, convention: str) -> dict[str, np.ndarray]:
    """Integer label map -> boolean mask per concept (all five)."""
    values = check_convention(convention)
    base = {c: labels == v for c, v in values.items()}
    out: dict[str, np.ndarray] = {}
    for concept, parts in CONCEPT_PARTS.items():
        mask = np.zeros(labels.shape, dtype=bool)
        for p in parts:
            mask |= base[p]
        out[concept] = mask
    return out


def concepts_to_labels(masks: Mapping[str, np.ndarray], convention: str) -> np.ndarray:
    """Boolean masks (any of the five concepts) -> integer label map in ``convention``.

    Composite concepts are resolved to disjoint classes: ET and NCR win over ED, ET wins over
    NCR; TC voxels not claimed by NCR/ET become NCR; WT voxels not claimed become ED.
    """
    values = check_convention(convention)
    if not masks:
        raise ValueError("no masks given")
    shape = next(iter(masks.values())).shape
    out = np.zeros(shape, dtype=np.uint8)
    get = lambda c: np.asarray(masks[c], dtype=bool) if c in masks else np.zeros(shape, bool)  # noqa: E731
    # Paint from the outside in so inner classes overwrite outer ones.
    out[get("WT")] = values["ED"]
    out[get("ED")] = values["ED"]
    out[get("TC")] = values["NCR"]
    out[get("NCR")] = values["NCR"]
    out[get("ET")] = values["ET"]
    return out
