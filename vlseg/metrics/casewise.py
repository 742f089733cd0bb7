"""Metrics per concept for one case: Dice, HD95 (``overlap.py``) and the BraTS 2023 lesion-wise
scores (``lesionwise.py``), with TC/WT derived from their parts when missing."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from vlseg.concepts import CONCEPTS
from vlseg.metrics.lesionwise import lesion_wise
from vlseg.metrics.overlap import as_masks, check_spacing, complete_concepts, dice, hd95


def case_metrics(
    pred: Mapping[str, np.ndarray],
    gt: Mapping[str, np.ndarray],
    spacing: Sequence[float],
    *,
    include_lesion_wise: bool = True,
    dilation_iters: int = 3,
    min_size_voxels: int = 50,
) -> dict[str, dict[str, float]]:
    """Metrics per concept for one case.

    ``pred`` and ``gt`` map concept names (NCR/ED/ET/TC/WT) to boolean masks on the same grid;
    TC/WT are derived from their parts when missing. Every concept present in both is scored,
    in ``CONCEPTS`` order. Per concept the result holds ``dice``, ``hd95`` (mm),
    ``gt_voxels``, ``pred_voxels`` and, unless ``include_lesion_wise=False``, the BraTS 2023
    lesion-wise ``lesion_dice``, ``lesion_hd95``, ``n_tp``, ``n_fn``, ``n_fp`` (see
    :func:`vlseg.metrics.lesion_wise`).
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
        row: dict[str, float] = {"dice": dice(p, g)}
        n_gt = int(np.count_nonzero(g))
        if include_lesion_wise:
            lw = lesion_wise(p, g, spacing, dilation_iters=dilation_iters, min_size_voxels=min_size_voxels)
            # One scored lesion that is the whole GT and no false positive: its HD95 was taken
            # between the whole prediction and the whole GT, i.e. it is the case-wise HD95.
            whole = (lw["n_tp"] == 1 and lw["n_fp"] == 0 and len(lw["lesions"]) == 1
                     and lw["lesions"][0]["voxels"] == n_gt)
            row["hd95"] = lw["lesions"][0]["hd95"] if whole else hd95(p, g, spacing)
            row.update(
                lesion_dice=lw["dice"], lesion_hd95=lw["hd95"],
                n_tp=lw["n_tp"], n_fn=lw["n_fn"], n_fp=lw["n_fp"],
            )
        else:
            row["hd95"] = hd95(p, g, spacing)
        row.update(gt_voxels=n_gt, pred_voxels=int(np.count_nonzero(p)))
        out[c] = row
    return out
