"""The one label validation: a label map's values against a convention, and 0/1 concept masks.

``load_case`` (a case's ``*-seg`` file) and ``vlseg evaluate`` (predictions and ground truth)
both call these, so a bad label file gets the same one-line message everywhere.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from vlseg import vocab
from vlseg.errors import InputError


def _as_uint8(data: np.ndarray, path: Path, allowed: list[int], what: str) -> np.ndarray:
    lo, hi = float(data.min()), float(data.max())
    if lo < 0 or hi > 255:
        raise InputError(f"has label values from {lo:g} to {hi:g}, not integer labels {allowed} "
                         f"({what}); is this a label map?", str(path))
    values = data.astype(np.uint8)
    if not np.array_equal(values, data):
        raise InputError(f"has non-integer label values (from {lo:g} to {hi:g}), not integer labels "
                         f"{allowed} ({what}); is this a label map?", str(path))
    return values


def _present(labels: np.ndarray) -> set[int]:
    """The values a uint8 label array holds. One comparison per candidate value up to the
    maximum: for the few labels a map holds this is 20 times faster than ``np.bincount`` (which
    first widens every voxel to 64 bits) on a 240x240x155 map."""
    hi = int(labels.max()) if labels.size else 0
    return {v for v in range(hi + 1) if (labels == v).any()}


def check_label_map(data: np.ndarray, path: str | Path, convention: str, *,
                    option: str = "label_convention=") -> np.ndarray:
    """Validate label values against ``convention``; return uint8 labels in the input's order.

    ``option`` is how the caller's user picks another convention (named in the hint).
    """
    path = Path(path)
    allowed = sorted({0, *vocab.label_convention(convention).values()})
    labels = _as_uint8(np.asarray(data), path, allowed, f"{convention} convention")
    present = _present(labels)
    bad = sorted(present - set(allowed))
    if bad:
        fits = [c for c, v in vocab.label_conventions().items() if present <= {0, *v.values()}]
        hint = (f"they fit {fits[0]} labels, pass {option}{fits[0]}" if fits
                else "is this a label map?")
        raise InputError(f"has label values {bad} outside the {convention} convention {allowed}; "
                         f"{hint}", str(path))
    return labels


def named_like_convention(data: np.ndarray, convention: str) -> str:
    """The convention to read a label map in when only its file naming said ``convention``:
    that one if its values fit, else a convention named the same way whose values fit (a BraTS
    2024 post-treatment map, label 4, is named like 2023), else ``convention`` (the check then
    says what is wrong)."""
    values = np.asarray(data)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if 0 <= lo and hi <= 255:  # the usual case: 8-bit labels, read fast
        small = values.astype(np.uint8)
        if not np.array_equal(small, values):  # non-integer values
            return convention
        present = _present(small) - {0}
    else:
        if values.dtype.kind == "f" and not np.array_equal(values, np.round(values)):
            return convention
        present = {int(v) for v in np.unique(values)} - {0}
    if present <= set(vocab.label_convention(convention).values()):
        return convention
    named = vocab.convention(convention)
    for c in vocab.conventions():
        if (c.name != convention and c.separator == named.separator
                and c.sequence_tokens == named.sequence_tokens
                and present <= set(vocab.label_convention(c.name).values())):
            return c.name
    return convention


def check_binary_mask(data: np.ndarray, path: str | Path) -> np.ndarray:
    """Validate a one-concept 0/1 mask; return it as bool in the input's order."""
    path = Path(path)
    mask = _as_uint8(np.asarray(data), path, [0, 1], "a concept mask holds 0 and 1")
    if mask.max() > 1:
        raise InputError("is a concept mask but holds values other than 0 and 1", str(path))
    return mask.astype(bool)
