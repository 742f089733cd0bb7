"""Metrics per concept for one case: Dice and HD95 of the whole masks (BraTS's "legacy" scores)
and the lesion-wise scores (``lesionwise.py``) of a challenge definition, with TC/WT derived
from their parts when missing.

The case-wise HD95 is the surface-area-weighted one (``surface.py``) in mm with the voxel
spacing; both masks empty scores 0, one empty 374 mm (``HD95_EMPTY``), as in BraTS.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from vlseg.concepts import CONCEPTS
from vlseg.metrics.lesionwise import lesion_hd95, lesion_wise
from vlseg.metrics.overlap import as_masks, check_spacing, complete_concepts, dice


def case_hd95(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> float:
    """BraTS's case-wise HD95 (mm): surface-weighted; 0 if both masks are empty, 374 if one is."""
    if not pred.any() and not gt.any():
        return 0.0
    return lesion_hd95(gt, pred, spacing)


def case_metrics(
    pred: Mapping[str, np.ndarray],
    gt: Mapping[str, np.ndarray],
    spacing: Sequence[float],
    *,
    definition: str = "brats2023",
    include_lesion_wise: bool = True,
    dilation_iters: int = 3,
    min_volume_mm3: float = 50.0,
) -> dict[str, dict[str, float]]:
    """Metrics per concept for one case.

    ``pred`` and ``gt`` map concept names (NCR/ED/ET/TC/WT) to boolean masks on the same grid;
    TC/WT are derived from their parts when missing. Every concept present in both is scored,
    in ``CONCEPTS`` order. Per concept the result holds ``dice``, ``hd95`` (mm),
    ``gt_voxels``, ``pred_voxels`` and, unless ``include_lesion_wise=False``, the lesion-wise
    ``lesion_dice``, ``lesion_hd95``, ``n_tp``, ``n_fn``, ``n_fp`` of ``definition``
    (see :func:`vlseg.metrics.lesion_wise`; ``brats2025`` adds ``pq``).
    """
    spacing = check_spacing(spacing)
    pred_c, gt_c = complete_concepts(pred), complete_concepts(gt)
    concepts = [c for c in CONCEPTS if c in pred_c and c in gt_c]
    if not concepts:
        raise ValueError(
            f"no concept in common between prediction ({', '.join(pred) or 'none'}) "
            f"and ground truth ({', '.join(gt) or 'none'})"
        )
    out: dict[str, dict[str, float]] = {}
    for c in concepts:
        p, g = as_masks(pred_c[c], gt_c[c])
        row: dict[str, float] = {"dice": dice(p, g), "hd95": case_hd95(p, g, spacing)}
        if include_lesion_wise:
            lw = lesion_wise(p, g, spacing, definition=definition, dilation_iters=dilation_iters,
                             min_volume_mm3=min_volume_mm3)
            row.update(lesion_dice=lw["dice"], lesion_hd95=lw["hd95"],
                       n_tp=lw["n_tp"], n_fn=lw["n_fn"], n_fp=lw["n_fp"])
            if "pq" in lw:
                row["pq"] = lw["pq"]
        row.update(gt_voxels=int(np.count_nonzero(g)), pred_voxels=int(np.count_nonzero(p)))
        out[c] = row
    return out
