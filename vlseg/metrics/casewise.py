"""Metrics per concept for one case: Dice and HD95 of the whole masks (BraTS's "legacy" scores)
and the lesion-wise scores (``lesionwise.py``) of a challenge definition, with TC/WT derived
from their parts when missing.

The case-wise HD95 is the surface-area-weighted one (``surface.py``) in mm with the voxel
spacing; both masks empty scores 0, one empty 374 mm (``HD95_EMPTY``), as in BraTS.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from vlseg import vocab
from vlseg.metrics.lesionwise import brats2025_result, lesion_hd95, lesion_wise
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
    in the vocabulary's order. Per concept the result holds ``dice``, ``hd95`` (mm),
    ``gt_voxels``, ``pred_voxels`` and, unless ``include_lesion_wise=False``, the lesion-wise
    ``lesion_dice``, ``lesion_hd95``, ``n_tp``, ``n_fn``, ``n_fp`` of ``definition``
    (see :func:`vlseg.metrics.lesion_wise`).

    ``brats2025`` gives the official BraTS 2025 figures (:mod:`vlseg.metrics.panoptic`):
    ``dice``/``hd95``/``nsd`` are the global ones (NaN when both masks are empty, HD95 373 mm
    when they do not overlap), ``lesion_dice``/``lesion_hd95``/``lesion_nsd`` the means over
    matched lesions (NaN without lesions, 0/0/inf without a match), plus ``rq``.
    """
    spacing = check_spacing(spacing)
    pred_c, gt_c = complete_concepts(pred), complete_concepts(gt)
    concepts = [c for c in vocab.codes() if c in pred_c and c in gt_c]
    if not concepts:
        raise ValueError(
            f"no concept in common between prediction ({', '.join(pred) or 'none'}) "
            f"and ground truth ({', '.join(gt) or 'none'})"
        )
    out: dict[str, dict[str, float]] = {}
    for c in concepts:
        p, g = as_masks(pred_c[c], gt_c[c])
        if definition == "brats2025":
            out[c] = _brats2025_row(p, g, spacing)
            continue
        gt_voxels = int(np.count_nonzero(g))
        lw = (lesion_wise(p, g, spacing, definition=definition, dilation_iters=dilation_iters,
                          min_volume_mm3=min_volume_mm3) if include_lesion_wise else None)
        whole = _whole_lesion_hd95(lw, gt_voxels) if lw is not None else None
        row: dict[str, float] = {"dice": dice(p, g),
                                 "hd95": whole if whole is not None else case_hd95(p, g, spacing)}
        if lw is not None:
            row.update(lesion_dice=lw["dice"], lesion_hd95=lw["hd95"],
                       n_tp=lw["n_tp"], n_fn=lw["n_fn"], n_fp=lw["n_fp"])
        row.update(gt_voxels=gt_voxels, pred_voxels=int(np.count_nonzero(p)))
        out[c] = row
    return out


def _brats2025_row(p: np.ndarray, g: np.ndarray, spacing: tuple[float, float, float]) -> dict[str, float]:
    r = brats2025_result(p, g, spacing)
    return {"dice": r["global_dice"], "hd95": r["global_hd95"], "nsd": r["global_nsd"],
            "lesion_dice": r["dice"], "lesion_hd95": r["hd95"], "lesion_nsd": r["nsd"],
            "n_tp": r["n_tp"], "n_fn": r["n_fn"], "n_fp": r["n_fp"], "rq": r["rq"],
            "gt_voxels": int(np.count_nonzero(g)), "pred_voxels": int(np.count_nonzero(p))}


def _whole_lesion_hd95(lw: Mapping, gt_voxels: int) -> float | None:
    """The case-wise HD95 when the lesion-wise result already holds it, else None: one detected
    lesion that is the whole ground truth (none ignored or missed) and no false positive, so
    every predicted component was matched to it and its HD95 is between the whole masks
    (``surface_distances`` crops to their union's box, so the value is the same to the bit)."""
    if lw["n_tp"] != 1 or lw["n_fp"] or lw["n_fn"] or lw.get("n_ignored", 0):
        return None
    kept = [e for e in lw["lesions"] if not e["ignored"]]
    if len(kept) != 1 or kept[0]["voxels"] != gt_voxels or not kept[0]["detected"]:
        return None
    return float(kept[0]["hd95"])
