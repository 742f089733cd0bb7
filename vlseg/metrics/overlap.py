"""Case-wise overlap and surface-distance metrics: Dice and HD95 on boolean 3D masks.

Empty-mask conventions (BraTS):

=============  =============  ======  ============================
prediction     ground truth   Dice    HD95 (mm)
=============  =============  ======  ============================
empty          empty          1.0     0.0
non-empty      empty          0.0     ``HD95_EMPTY`` (374)
empty          non-empty      0.0     ``HD95_EMPTY`` (374)
non-empty      non-empty      2|P∩G|/(|P|+|G|)   max of the two directed 95th percentiles
=============  =============  ======  ============================

HD95 is computed on boundary voxels (mask voxels with a face-neighbour outside the mask) with
SciPy's exact Euclidean distance transform in physical units (``sampling=spacing``), like
MONAI's ``compute_hausdorff_distance(..., percentile=95)``: the distances from each surface to
the other are taken, the 95th percentile of each direction is computed and the larger one is
returned. This is *not* the BraTS HD95: BraTS weights each surface element by its area
(``surface.py``), and the two can differ by far more than a voxel (one spurious 1-voxel blob:
1.4 mm here, 63 mm there). ``case_metrics`` and ``vlseg evaluate`` use the BraTS one; this one
stays for comparison with MONAI.

``case_metrics`` (every concept of a case, with the lesion-wise scores) is in ``casewise.py``.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

from vlseg import vocab

# The BraTS penalty for a Hausdorff distance that is undefined because exactly one mask is
# empty: 374 mm, about the diagonal of the 240x240x155 mm BraTS volume.
HD95_EMPTY: float = 374.0


def check_spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    """Validate voxel spacing: three finite positive numbers in mm."""
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise ValueError(f"spacing must be three numbers in mm, got {spacing!r}") from None
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be three finite positive numbers in mm, got {spacing!r}")
    return values  # type: ignore[return-value]


def as_masks(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred).astype(bool, copy=False)
    gt = np.asarray(gt).astype(bool, copy=False)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {gt.shape}")
    if pred.ndim != 3:
        raise ValueError(f"masks must be 3D, got {pred.ndim}D")
    return pred, gt


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice coefficient of two boolean masks; 1.0 when both are empty."""
    pred, gt = as_masks(pred, gt)
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(gt))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(pred & gt)) / total


def _bbox(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Tight bounding box of a boolean 3D mask (None if empty); two passes over the volume."""
    proj01 = mask.any(axis=2)  # (X, Y)
    xs, ys = np.flatnonzero(proj01.any(axis=1)), np.flatnonzero(proj01.any(axis=0))
    if xs.size == 0:
        return None
    zs = np.flatnonzero(mask.any(axis=(0, 1)))
    return tuple(slice(int(a[0]), int(a[-1]) + 1) for a in (xs, ys, zs))


def _union_box(boxes: Sequence[tuple[slice, ...]], shape: tuple[int, ...], margin: int) -> tuple[slice, ...]:
    """Smallest box containing all ``boxes``, grown by ``margin`` voxels and clipped to ``shape``."""
    return tuple(
        slice(max(0, min(b[d].start for b in boxes) - margin), min(shape[d], max(b[d].stop for b in boxes) + margin))
        for d in range(len(shape))
    )


def _surface(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels: in the mask with at least one face-neighbour outside (image edge = outside)."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def _directed_p95(from_surface: np.ndarray, to_surface: np.ndarray, spacing: tuple[float, float, float]) -> float:
    # Distance of every voxel to the nearest ``to`` surface voxel, read at the ``from`` surface.
    dist = ndimage.distance_transform_edt(~to_surface, sampling=spacing)  # (X, Y, Z) mm
    return float(np.percentile(dist[from_surface], 95))


def hd95(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile symmetric Hausdorff distance in mm (see the module docstring for empties)."""
    pred, gt = as_masks(pred, gt)
    spacing = check_spacing(spacing)
    box_p, box_g = _bbox(pred), _bbox(gt)
    if box_p is None and box_g is None:
        return 0.0
    if box_p is None or box_g is None:
        return HD95_EMPTY
    # Crop to the joint bounding box (+1 voxel so the image edge never touches a mask): every
    # surface voxel of both masks lies inside, so nearest-surface distances are unchanged.
    box = _union_box([box_p, box_g], pred.shape, margin=1)
    p = np.pad(pred[box], 1)
    g = np.pad(gt[box], 1)
    surf_p, surf_g = _surface(p), _surface(g)
    return max(_directed_p95(surf_p, surf_g, spacing), _directed_p95(surf_g, surf_p, spacing))


def complete_concepts(masks: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Add the composite concepts TC and WT when all their parts are given (and they are not)."""
    out = {k: np.asarray(v).astype(bool, copy=False) for k, v in masks.items()}
    for concept, parts in vocab.parts().items():
        if concept not in out and len(parts) > 1 and all(p in out for p in parts):
            union = np.zeros_like(out[parts[0]])
            for p in parts:
                union |= out[p]
            out[concept] = union
    return out
