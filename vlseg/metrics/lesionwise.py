"""BraTS 2023 lesion-wise Dice and HD95 for one concept of one case.

The rule, as in the BraTS 2023 challenge scripts (``get_LesionWiseScores``):

1. **Ground-truth lesions.** The GT mask is dilated ``dilation_iters`` times with the 18-connected
   structuring element (``generate_binary_structure(3, 2)``); the connected components
   (26-connectivity) of the *dilated* mask define the lesions, and each lesion is the set of
   original GT voxels inside one such component. GT blobs closer than about two dilation radii
   therefore count as one lesion.
2. **Matching.** Predicted lesions are the 26-connected components of the prediction. Each GT
   lesion is dilated again (same element, same iterations); every predicted component that
   touches this dilated lesion is matched to it (a component may match several lesions).
3. **Per-lesion scores.** For a GT lesion with matches: Dice and HD95 between that lesion and the
   union of its matched components (whole components, also the parts outside the dilation).
   A GT lesion with no match is a false negative: Dice 0, HD95 ``HD95_EMPTY`` (374 mm).
4. **Small lesions.** GT lesions with fewer than ``min_size_voxels`` voxels are ignored: they are
   neither scored nor counted, and predicted components matched to them are not false positives.
   (The BraTS script drops lesions of ≤ 50 mm³; at 1 mm spacing that is ``min_size_voxels=51``,
   we follow the stated contract "smaller than 50 voxels".)
5. **False positives.** Every predicted component that matched no GT lesion (small ones
   included) is a false positive, scored Dice 0 and HD95 374.
6. **Case score.** ``dice = sum(lesion Dice) / (TP + FN + FP)`` and
   ``hd95 = (sum(lesion HD95) + 374 * FP) / (TP + FN + FP)``, where TP and FN count the
   non-ignored GT lesions with and without a match. With nothing to score (no kept GT lesion
   and no false positive) the result is Dice 1, HD95 0.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from vlseg.metrics.overlap import HD95_EMPTY, as_masks, _bbox, _union_box, check_spacing, hd95

_CC_STRUCTURE = ndimage.generate_binary_structure(3, 3)        # 26-connectivity
_DILATION_STRUCTURE = ndimage.generate_binary_structure(3, 2)  # 18-connectivity, as BraTS


def _dilate(mask: np.ndarray, iters: int) -> np.ndarray:
    if iters == 0:
        return mask.copy()
    return ndimage.binary_dilation(mask, structure=_DILATION_STRUCTURE, iterations=iters)


def lesion_wise(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float],
    *,
    dilation_iters: int = 3,
    min_size_voxels: int = 50,
) -> dict[str, Any]:
    """Lesion-wise Dice/HD95 of boolean masks ``pred`` vs ``gt`` (rule in the module docstring).

    Returns a JSON-ready dict: ``dice``, ``hd95`` (mm), ``n_tp``, ``n_fn``, ``n_fp``,
    ``n_ignored`` (GT lesions below the size limit), ``lesions`` (one entry per GT lesion:
    ``voxels``, ``ignored``, ``detected``, ``dice``, ``hd95``, ``matched`` = number of matched
    predicted components) and ``false_positive_voxels`` (size of each spurious component).
    """
    if isinstance(dilation_iters, bool) or not isinstance(dilation_iters, (int, np.integer)) or dilation_iters < 0:
        raise ValueError(f"dilation_iters must be an integer >= 0, got {dilation_iters!r}")
    if isinstance(min_size_voxels, bool) or not isinstance(min_size_voxels, (int, np.integer)) or min_size_voxels < 0:
        raise ValueError(f"min_size_voxels must be an integer >= 0, got {min_size_voxels!r}")
    pred, gt = as_masks(pred, gt)
    spacing = check_spacing(spacing)
    result: dict[str, Any] = {
        "dice": 1.0, "hd95": 0.0, "n_tp": 0, "n_fn": 0, "n_fp": 0, "n_ignored": 0,
        "lesions": [], "false_positive_voxels": [],
    }
    boxes = [b for b in (_bbox(pred), _bbox(gt)) if b is not None]
    if not boxes:
        return result

    # Work in the joint bounding box, grown so every dilation fits (nothing lies outside it).
    margin = int(dilation_iters) + 1
    crop = _union_box(boxes, pred.shape, margin=margin)
    pred, gt = pred[crop], gt[crop]

    # GT lesions: components of the dilated GT, restricted to GT voxels.
    dilated_lab, n_gt = ndimage.label(_dilate(gt, dilation_iters), structure=_CC_STRUCTURE)
    lesions = np.where(gt, dilated_lab, 0)                       # (X, Y, Z) lesion id per GT voxel
    lesion_sizes = np.bincount(lesions.ravel(), minlength=n_gt + 1)
    lesion_boxes = ndimage.find_objects(lesions, max_label=n_gt)

    # Predicted lesions: plain 26-connected components.
    pred_lab, n_pred = ndimage.label(pred, structure=_CC_STRUCTURE)
    pred_sizes = np.bincount(pred_lab.ravel(), minlength=n_pred + 1)
    pred_boxes = ndimage.find_objects(pred_lab, max_label=n_pred)

    matched_any: set[int] = set()
    dice_sum = hd_sum = 0.0
    for j in range(1, n_gt + 1):
        # Match: predicted components touching this lesion's dilation (looked at in its box).
        box = _union_box([lesion_boxes[j - 1]], gt.shape, margin=int(dilation_iters))
        lesion = lesions[box] == j
        near = _dilate(lesion, dilation_iters)
        matched = np.unique(pred_lab[box][near])
        matched = matched[matched != 0]
        matched_any.update(int(m) for m in matched)
        size = int(lesion_sizes[j])
        entry: dict[str, Any] = {"voxels": size, "ignored": size < min_size_voxels,
                                 "detected": bool(matched.size), "matched": int(matched.size)}
        result["lesions"].append(entry)
        if entry["ignored"]:
            result["n_ignored"] += 1
            continue
        if matched.size == 0:
            entry.update(dice=0.0, hd95=HD95_EMPTY)
            result["n_fn"] += 1
        else:
            # Dice from counts (the intersection lies inside the lesion's box).
            inter = int(np.count_nonzero(np.isin(pred_lab[box][lesion], matched)))
            pred_voxels = int(pred_sizes[matched].sum())
            lesion_dice = 2.0 * inter / (size + pred_voxels)
            # HD95 in the box holding the lesion and all its matched components.
            ubox = _union_box([lesion_boxes[j - 1]] + [pred_boxes[m - 1] for m in matched], gt.shape, margin=0)
            lesion_hd = hd95(np.isin(pred_lab[ubox], matched), lesions[ubox] == j, spacing)
            entry.update(dice=lesion_dice, hd95=lesion_hd)
            result["n_tp"] += 1
        dice_sum += entry["dice"]
        hd_sum += entry["hd95"]

    false_positives = [m for m in range(1, n_pred + 1) if m not in matched_any]
    result["n_fp"] = len(false_positives)
    result["false_positive_voxels"] = [int(pred_sizes[m]) for m in false_positives]

    scored = result["n_tp"] + result["n_fn"] + result["n_fp"]
    if scored:
        result["dice"] = dice_sum / scored
        result["hd95"] = (hd_sum + HD95_EMPTY * result["n_fp"]) / scored
    return result
