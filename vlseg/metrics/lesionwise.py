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

``definition="brats2025"``: one-to-one matching, as the BraTS 2025 (Lighthouse) evaluation
configures panoptica (``panoptica_evaluator_BRATS.yaml``): instances are the 26-connected
components of GT and prediction (no dilation merge, no size filter); pairs are matched greedily
by descending IoU, each instance at most once, when IoU >= ``iou_threshold`` (0.5). Matched
pairs are TP with their Dice and surface-weighted HD95; every unmatched GT instance (FN) and
predicted instance (FP) scores Dice 0, HD95 374; the case score averages over TP + FN + FP as
above. Also reported: panoptic quality ``pq = sq * rq`` with ``sq`` the mean IoU of TP and
``rq = TP / (TP + FP/2 + FN/2)``. (panoptica itself cannot be installed beside NumPy 2.4: it
pins numpy<2.3; the rule is small enough to state here and test by hand.)
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from vlseg.metrics.overlap import HD95_EMPTY, _bbox, _union_box, as_masks, check_spacing
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
    iou_threshold: float = 0.5,
) -> dict[str, Any]:
    """Lesion-wise Dice/HD95 of boolean masks ``pred`` vs ``gt`` (rules in the module docstring).

    Returns a JSON-ready dict: ``dice``, ``hd95`` (mm), ``n_tp``, ``n_fn``, ``n_fp``,
    ``n_ignored`` (GT lesions at or below the volume limit), ``lesions`` (one entry per GT
    lesion: ``voxels``, ``volume_mm3``, ``ignored``, ``detected``, ``dice``, ``hd95``,
    ``matched`` = number of matched predicted components) and ``false_positive_voxels``; with
    ``brats2025`` also ``pq``, ``sq``, ``rq``.
    """
    if definition not in DEFINITIONS:
        raise ValueError(f"definition must be one of {', '.join(DEFINITIONS)}, got {definition!r}")
    pred, gt = as_masks(pred, gt)
    spacing = check_spacing(spacing)
    if definition == "brats2025":
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold!r}")
        return _one_to_one(pred, gt, spacing, iou_threshold)
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


def _one_to_one(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, float, float],
                iou_threshold: float) -> dict[str, Any]:
    """BraTS 2025: components matched one-to-one by IoU (see the module docstring)."""
    result = _empty_result()
    result.update(pq=1.0, sq=1.0, rq=1.0)
    gt_lab, n_gt = ndimage.label(gt, structure=_CC_STRUCTURE)
    pred_lab, n_pred = ndimage.label(pred, structure=_CC_STRUCTURE)
    if n_gt == 0 and n_pred == 0:
        return result
    gt_sizes = np.bincount(gt_lab.ravel(), minlength=n_gt + 1)
    pred_sizes = np.bincount(pred_lab.ravel(), minlength=n_pred + 1)
    # Overlap counts of every (gt, pred) pair that shares a voxel.
    both = (gt_lab > 0) & (pred_lab > 0)
    pairs, counts = np.unique(np.stack([gt_lab[both], pred_lab[both]]), axis=1, return_counts=True)
    candidates = []
    for (g, p), inter in zip(pairs.T.tolist(), counts.tolist()):
        iou = inter / (gt_sizes[g] + pred_sizes[p] - inter)
        if iou >= iou_threshold:
            candidates.append((-iou, g, p, inter))
    candidates.sort()  # highest IoU first; ties by GT then prediction label
    used_gt: dict[int, tuple[int, int, float]] = {}
    used_pred: set[int] = set()
    for neg_iou, g, p, inter in candidates:
        if g in used_gt or p in used_pred:
            continue
        used_gt[g] = (p, inter, -neg_iou)
        used_pred.add(p)
    gt_boxes = ndimage.find_objects(gt_lab, max_label=n_gt)
    pred_boxes = ndimage.find_objects(pred_lab, max_label=n_pred)
    voxel_mm3 = float(np.prod(spacing))
    dice_sum = hd_sum = iou_sum = 0.0
    for g in range(1, n_gt + 1):
        size = int(gt_sizes[g])
        entry: dict[str, Any] = {"voxels": size, "volume_mm3": size * voxel_mm3, "ignored": False,
                                 "detected": g in used_gt, "matched": int(g in used_gt)}
        if g in used_gt:
            p, inter, iou = used_gt[g]
            box = _union_box([gt_boxes[g - 1], pred_boxes[p - 1]], gt.shape, margin=0)
            entry.update(dice=2.0 * inter / (size + int(pred_sizes[p])), iou=iou,
                         hd95=lesion_hd95(gt_lab[box] == g, pred_lab[box] == p, spacing))
            result["n_tp"] += 1
            iou_sum += iou
        else:
            entry.update(dice=0.0, hd95=HD95_EMPTY)
            result["n_fn"] += 1
        dice_sum += entry["dice"]
        hd_sum += entry["hd95"]
        result["lesions"].append(entry)
    false_positives = [p for p in range(1, n_pred + 1) if p not in used_pred]
    result["n_fp"] = len(false_positives)
    result["false_positive_voxels"] = [int(pred_sizes[p]) for p in false_positives]
    tp, fn, fp = result["n_tp"], result["n_fn"], result["n_fp"]
    result["sq"] = iou_sum / tp if tp else 0.0
    result["rq"] = tp / (tp + 0.5 * fp + 0.5 * fn)
    result["pq"] = result["sq"] * result["rq"]
    return _finish(result, dice_sum, hd_sum)
