"""Label maps <-> concept masks, for any registered label convention."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from vlseg import vocab


def labels_to_concepts(labels: np.ndarray, convention: str) -> dict[str, np.ndarray]:
    """Integer label map -> boolean mask per concept (every concept the convention can give)."""
    values = vocab.label_convention(convention)
    base = {c: labels == v for c, v in values.items()}
    out: dict[str, np.ndarray] = {}
    for c in vocab.concepts():
        if not set(c.parts) <= set(base):
            continue
        mask = np.zeros(labels.shape, dtype=bool)
        for p in c.parts:
            mask |= base[p]
        out[c.code] = mask
    return out


def concepts_to_labels(masks: Mapping[str, np.ndarray], convention: str) -> np.ndarray:
    """Boolean masks (any concepts) -> integer label map in ``convention``.

    Painted from the outside in (composites first, base classes last) so inner classes win.
    A composite's voxels that no base mask claims take the class it adds to its largest
    sub-composite (WT -> ED), or its first part (TC -> NCR); ET wins over NCR, both over ED.
    """
    values = vocab.label_convention(convention)
    if not masks:
        raise ValueError("no masks given")
    shape = next(iter(masks.values())).shape
    out = np.zeros(shape, dtype=np.uint8)
    for code in vocab.draw_order():
        if code not in masks:
            continue
        fill = _fill_class(code, vocab.concept(code).parts)
        if fill in values:
            out[np.asarray(masks[code], dtype=bool)] = values[fill]
    return out


def _fill_class(code: str, parts: tuple[str, ...]) -> str:
    if parts == (code,):
        return code
    inner = [c for c in vocab.concepts() if c.code != code and not c.is_base
             and set(c.parts) < set(parts)]
    if inner:
        biggest = max(inner, key=lambda c: len(c.parts))
        extra = [p for p in parts if p not in biggest.parts]
        if extra:
            return extra[0]
    return parts[0]
