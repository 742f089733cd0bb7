"""Lesion-wise Dice and HD95 for one concept of one case, by challenge definition.

``definition="brats2023"`` (the default) is the official BraTS 2023 rule
(``get_LesionWiseScores`` of the BraTS 2023 metrics script), figure for figure:

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
   HD95 is the surface-area-weighted one (``surface.py``, the surface-distance method), in mm
   with the voxel spacing. A GT lesion with no match is a false negative: Dice 0, HD95
   ``HD95_EMPTY`` (374 mm).
4. **Small lesions.** GT lesions of at most ``min_volume_mm3`` (50 mm³) are ignored: neither
   scored nor counted, and predicted components matched to them are not false positives. The
   threshold is a *volume*: on a 1x1x3 mm grid 17 voxels are already 51 mm³.
5. **False positives.** Every predicted component that matched no GT lesion (small ones
   included) is a false positive, scored Dice 0 and HD95 374.
6. **Case score.** ``dice = sum(lesion Dice) / (TP + FN + FP)`` and
   ``hd95 = (sum(lesion HD95) + 374 * FP) / (TP + FN + FP)``, where TP and FN count the
   non-ignored GT lesions with and without a match. With nothing to score (no kept GT lesion
   and no false positive) the result is Dice 1, HD95 0.

``definition="brats2025"``: the BraTS 2025 evaluation (PyPI ``brats-evaluation``, panoptica's
glioma config), figure for figure: see :mod:`vlseg.metrics.panoptic` (optimal one-to-one matching
on Dice with any overlap, lesion-wise means over the matched lesions only, pooled HD95, NSD,
global scores, NaN/inf for empty cases).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from vlseg.metrics.overlap import HD95_EMPTY, _bbox, _union_box, as_masks, check_spacing
from vlseg.metrics.panoptic import panoptic
from vlseg.metrics.surface import hd95_surfel

DEFINITIONS = ("brats2023", "brats2025")
_CC_STRUCTURE = ndimage.generate_binary_structure(3, 3)        # 26-connectivity
_DILATION_STRUCTURE = ndimage.generate_binary_structure(3, 2)  # 18-connectivity, as BraTS


def _dilate(mask: np.ndarray, iters: int) -> np.ndarray:
    if iters == 0:
        return mask.copy()
    return ndimage.binary_dilation(mask, structure=_DILATION_STRUCTURE, iterations=iters)


def lesion_hd95(gt: np.ndarray, pred: np.ndarray, spacing: Sequence[float]) -> float:
    """BraTS's per-lesion HD95: surface-weighted, 374 mm where it is infinite (a mask empty)."""
    d = hd95_surfel(gt, pred, spacing)
    return HD95_EMPTY if not np.isfinite(d) else d


def _empty_result() -> dict[str, Any]:
    return {"dice": 1.0, "hd95": 0.0, "n_tp": 0, "n_fn": 0, "n_fp": 0, "n_ignored": 0,
            "lesions": [], "false_positive_voxels": []}


def _finish(result: dict[str, Any], dice_sum: float, hd_sum: float) -> dict[str, Any]:
    scored = result["n_tp"] + result["n_fn"] + result["n_fp"]
    if scored:
        result["dice"] = dice_sum / scored
        result["hd95"] = (hd_sum + HD95_EMPTY * result["n_fp"]) / scored
    return result


def lesion_wise(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float],
    *,
    definition: str = "brats2023",
    dilation_iters: int = 3,
    min_volume_mm3: float = 50.0,
) -> dict[str, Any]:
    """Lesion-wise Dice/HD95 of boolean masks ``pred`` vs ``gt`` (rules in the module docstring).

    Returns a JSON-ready dict: ``dice``, ``hd95`` (mm), ``n_tp``, ``n_fn``, ``n_fp``,
    ``n_ignored`` (GT lesions at or below the volume limit), ``lesions`` (one entry per GT
    lesion: ``voxels``, ``volume_mm3``, ``ignored``, ``detected``, ``dice``, ``hd95``,
    ``matched`` = number of matched predicted components) and ``false_positive_voxels``.
    ``brats2025`` returns :func:`brats2025_result` instead (``dilation_iters`` and
    ``min_volume_mm3`` do not apply).
    """
    if definition not in DEFINITIONS:
        raise ValueError(f"definition must be one of {', '.join(DEFINITIONS)}, got {definition!r}")
    pred, gt = as_masks(pred, gt)
    spacing = check_spacing(spacing)
    if definition == "brats2025":
        return brats2025_result(pred, gt, spacing)
    if isinstance(dilation_iters, bool) or not isinstance(dilation_iters, (int, np.integer)) or dilation_iters < 0:
        raise ValueError(f"dilation_iters must be an integer >= 0, got {dilation_iters!r}")
    if not np.isfinite(min_volume_mm3) or min_volume_mm3 < 0:
        raise ValueError(f"min_volume_mm3 must be a number >= 0, got {min_volume_mm3!r}")
    voxel_mm3 = float(np.prod(spacing))
    result = _empty_result()
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
        volume = size * voxel_mm3
        entry: dict[str, Any] = {"voxels": size, "volume_mm3": volume, "ignored": volume <= min_volume_mm3,
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
            lesion_hd = lesion_hd95(lesions[ubox] == j, np.isin(pred_lab[ubox], matched), spacing)
            entry.update(dice=lesion_dice, hd95=lesion_hd)
            result["n_tp"] += 1
        dice_sum += entry["dice"]
        hd_sum += entry["hd95"]

    false_positives = [m for m in range(1, n_pred + 1) if m not in matched_any]
    result["n_fp"] = len(false_positives)
    result["false_positive_voxels"] = [int(pred_sizes[m]) for m in false_positives]
    return _finish(result, dice_sum, hd_sum)


def brats2025_result(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> dict[str, Any]:
    """The BraTS 2025 figures (:mod:`vlseg.metrics.panoptic`) as a JSON-ready dict.

    ``dice``, ``nsd``, ``hd95``: lesion-wise means over matched lesions (the official ``sq_*``;
    NaN when neither mask has a lesion, 0/0/inf when nothing matched) and their ``*_std``;
    ``global_dice``, ``global_nsd``, ``global_hd95`` (inf reported as 373 mm, as the official
    report); ``n_tp``, ``n_fn``, ``n_fp``, ``rq`` (F1 of detection), ``lesions`` and
    ``false_positive_voxels``.
    """
    r = panoptic(pred, gt, spacing)
    tp, fp, fn = r.tp, r.fp, r.fn
    return {"dice": r.lesion_dice, "nsd": r.lesion_nsd, "hd95": r.lesion_hd95,
            "dice_std": r.lesion_dice_std, "nsd_std": r.lesion_nsd_std, "hd95_std": r.lesion_hd95_std,
            "global_dice": r.dice, "global_nsd": r.nsd, "global_hd95": r.reported_hd95,
            "n_tp": tp, "n_fn": fn, "n_fp": fp, "n_ignored": 0,
            "rq": tp / (tp + 0.5 * fp + 0.5 * fn) if tp else (0.0 if tp + fp + fn else float("nan")),
            "lesions": r.lesions, "false_positive_voxels": r.false_positive_voxels}
