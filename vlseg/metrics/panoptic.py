"""The BraTS 2025 evaluation of one region of one case, figure for figure with the official package.

The official evaluation (PyPI ``brats-evaluation`` 0.0.10, glioma config ``gli``, built on
``panoptica``) computes, for each region (NETC, SNFH, ET, RC, TC, WT):

1. **Instances.** The 26-connected components of the ground-truth and of the predicted mask.
2. **Matching.** One-to-one and optimal: the Hungarian assignment (``linear_sum_assignment``)
   on the cost ``1 - Dice`` of every (GT, predicted) pair whose Dice is at least 1e-6, other
   pairs costing ``1 + 1e-6``; an assigned pair is a match when its cost is below 1. So any
   overlap can match, and a GT lesion split in two predicted pieces matches the better piece
   (the other is a false positive). ``TP`` = matches, ``FP = n_pred - TP``, ``FN = n_gt - TP``.
3. **Lesion-wise scores (``sq_*``).** The *mean over the matched pairs only* of their Dice,
   NSD and HD95; missed and spurious lesions do not lower them (they are counted in TP/FP/FN).
   With no match at all: NaN when neither mask has a lesion, else Dice 0, NSD 0, HD95 inf.
4. **Surface distances** (HD95, NSD), per pair: the boundary of a mask is its voxels with a
   face-neighbour outside it (6-connected erosion, the image edge outside); the distances from
   each boundary voxel to the other boundary (exact Euclidean distance transform with the voxel
   spacing). HD95 = the 95th percentile (linear interpolation) of *both directions pooled*;
   NSD = the mean of the two directions' fractions within the tolerance, the smallest voxel
   spacing (1 mm on BraTS data).
5. **Global scores (``global_bin_*``)** on the whole masks: Dice; HD95 and NSD as above but
   with NSD tolerance 0.5. When the masks share no voxel: NaN if both are empty, else Dice 0,
   NSD 0, HD95 inf, which the official report (``parse_seg_results``) writes as 373 mm.

Voxel spacing, where the official package does not use it as given:

* Global HD95 and NSD get no spacing there (distances in voxels, NSD tolerance 0.5 voxel).
  vlseg uses the spacing: global HD95 in mm, NSD tolerance 0.5 mm. On BraTS's 1 mm grids the
  figures are the same; on any grid with voxels larger than 0.5 mm the global NSD is too (only
  boundary voxels that coincide count either way); the global HD95 differs on other grids.
* Reading NIfTI files, panoptica takes the array from SimpleITK (z, y, x) but the spacing in
  (x, y, z) order, so the lesion-wise HD95/NSD of an anisotropic case get the spacing on the
  wrong axes. vlseg applies each spacing to its own axis (what panoptica computes when given
  arrays and ``voxelspacing``); on isotropic grids the two agree.

``tests/test_metrics_brats2025.py`` checks all of this against figures the official package
produced (``bench/brats_official_figures.py``).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from vlseg.metrics.overlap import _bbox, _union_box

HD95_REPORTED_EMPTY: float = 373.0   # what the official report writes for an infinite global HD95
GLOBAL_NSD_TOLERANCE_MM: float = 0.5
MATCH_MIN_DICE: float = 1e-6
_CC_STRUCTURE = ndimage.generate_binary_structure(3, 3)   # 26-connectivity, as cc3d's default
_FACES = ndimage.generate_binary_structure(3, 1)          # boundary: 6-connected erosion
_NAN = float("nan")


def boundary_distances(gt: np.ndarray, pred: np.ndarray,
                       spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(GT boundary -> prediction boundary, prediction boundary -> GT boundary) distances, mm.

    Both masks must be non-empty. Works in the union's bounding box padded by one voxel of
    background, which changes neither boundary (the image edge counts as outside anyway).
    """
    box = _union_box([b for b in (_bbox(gt), _bbox(pred)) if b is not None], gt.shape, margin=0)
    g, p = np.pad(gt[box], 1), np.pad(pred[box], 1)
    g_edge = g & ~ndimage.binary_erosion(g, structure=_FACES)
    p_edge = p & ~ndimage.binary_erosion(p, structure=_FACES)
    sampling = tuple(float(s) for s in spacing)
    to_pred = ndimage.distance_transform_edt(~p_edge, sampling=sampling)[g_edge]
    to_gt = ndimage.distance_transform_edt(~g_edge, sampling=sampling)[p_edge]
    return to_pred, to_gt


def hd95_pooled(d_gt: np.ndarray, d_pred: np.ndarray) -> float:
    """95th percentile of both directions' distances pooled (panoptica's HD95)."""
    return float(np.percentile(np.hstack((d_gt, d_pred)), 95))


def nsd(d_gt: np.ndarray, d_pred: np.ndarray, tolerance: float) -> float:
    """Normalized surface Dice as panoptica computes it: the two directions' shares within
    ``tolerance`` (each normalized by its own boundary size), averaged."""
    tp_a, tp_b = np.sum(d_gt <= tolerance) / d_gt.size, np.sum(d_pred <= tolerance) / d_pred.size
    fp, fn = np.sum(d_gt > tolerance) / d_gt.size, np.sum(d_pred > tolerance) / d_pred.size
    return float((tp_a + tp_b) / (tp_a + tp_b + fp + fn + sys.float_info.min))


@dataclass
class PanopticResult:
    """The official figures of one region: counts, lesion-wise means (over matches) and std
    (``np.std``; NaN without a match), global scores, and one entry per GT lesion."""

    n_ref: int = 0
    n_pred: int = 0
    tp: int = 0
    lesion_dice: float = _NAN
    lesion_nsd: float = _NAN
    lesion_hd95: float = _NAN
    lesion_dice_std: float = _NAN
    lesion_nsd_std: float = _NAN
    lesion_hd95_std: float = _NAN
    dice: float = _NAN
    nsd: float = _NAN
    hd95: float = _NAN          # inf where the official result is inf
    lesions: list[dict[str, float | int | bool]] = field(default_factory=list)
    false_positive_voxels: list[int] = field(default_factory=list)

    @property
    def fp(self) -> int:
        return self.n_pred - self.tp

    @property
    def fn(self) -> int:
        return self.n_ref - self.tp

    @property
    def reported_hd95(self) -> float:
        """The global HD95 as the official report writes it (inf -> 373 mm)."""
        return HD95_REPORTED_EMPTY if np.isinf(self.hd95) else self.hd95


def _match(gt_lab: np.ndarray, n_gt: int, pred_lab: np.ndarray, n_pred: int,
           gt_sizes: np.ndarray, pred_sizes: np.ndarray) -> dict[int, tuple[int, int]]:
    """GT label -> (predicted label, overlap voxels) of the optimal one-to-one matching."""
    both = (gt_lab > 0) & (pred_lab > 0)
    if n_gt == 0 or n_pred == 0 or not both.any():
        return {}
    pairs, counts = np.unique(np.stack([gt_lab[both], pred_lab[both]]), axis=1, return_counts=True)
    cost = np.full((n_gt, n_pred), 1.0 + MATCH_MIN_DICE)
    overlap = {}
    for (g, p), inter in zip(pairs.T.tolist(), counts.tolist()):
        d = 2.0 * inter / (gt_sizes[g] + pred_sizes[p])
        if d >= MATCH_MIN_DICE:
            cost[g - 1, p - 1] = 1.0 - d
            overlap[g, p] = inter
    rows, cols = linear_sum_assignment(cost)
    return {int(r) + 1: (int(c) + 1, overlap[r + 1, c + 1]) for r, c in zip(rows, cols) if cost[r, c] < 1.0}


def _empty_scores(n_ref: int, n_pred: int) -> tuple[float, float, float]:
    """(Dice, NSD, HD95) when nothing is matched / the masks do not overlap."""
    if n_ref + n_pred == 0:
        return _NAN, _NAN, _NAN
    return 0.0, 0.0, float("inf")


def panoptic(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> PanopticResult:
    """The official BraTS 2025 figures of boolean masks ``pred`` vs ``gt`` (module docstring).

    ``spacing`` is (x, y, z) mm in the arrays' axis order.
    """
    spacing = tuple(float(s) for s in spacing)
    tolerance = min(spacing)
    gt_lab, n_gt = ndimage.label(gt, structure=_CC_STRUCTURE)
    pred_lab, n_pred = ndimage.label(pred, structure=_CC_STRUCTURE)
    gt_sizes = np.bincount(gt_lab.ravel(), minlength=n_gt + 1)
    pred_sizes = np.bincount(pred_lab.ravel(), minlength=n_pred + 1)
    res = PanopticResult(n_ref=int(n_gt), n_pred=int(n_pred))

    # Lesion-wise: match, then score each matched pair
    matches = _match(gt_lab, n_gt, pred_lab, n_pred, gt_sizes, pred_sizes)
    voxel_mm3 = float(np.prod(spacing))
    scores: list[tuple[float, float, float]] = []
    for g in range(1, n_gt + 1):
        entry: dict[str, float | int | bool] = {"voxels": int(gt_sizes[g]),
                                                "volume_mm3": int(gt_sizes[g]) * voxel_mm3,
                                                "detected": g in matches}
        if g in matches:
            p, inter = matches[g]
            d_gt, d_pred = boundary_distances(gt_lab == g, pred_lab == p, spacing)
            s = (2.0 * inter / (gt_sizes[g] + pred_sizes[p]), nsd(d_gt, d_pred, tolerance),
                 hd95_pooled(d_gt, d_pred))
            scores.append(s)
            entry.update(dice=s[0], nsd=s[1], hd95=s[2])
        res.lesions.append(entry)
    matched_pred = {p for p, _ in matches.values()}
    res.false_positive_voxels = [int(pred_sizes[p]) for p in range(1, n_pred + 1) if p not in matched_pred]
    res.tp = len(matches)
    if scores:
        a = np.asarray(scores)  # (TP, 3): Dice, NSD, HD95
        res.lesion_dice, res.lesion_nsd, res.lesion_hd95 = (float(np.average(a[:, i])) for i in range(3))
        res.lesion_dice_std, res.lesion_nsd_std, res.lesion_hd95_std = (float(np.std(a[:, i])) for i in range(3))
    else:
        res.lesion_dice, res.lesion_nsd, res.lesion_hd95 = _empty_scores(n_gt, n_pred)

    # Global: the whole masks
    inter = int(np.count_nonzero(gt & pred))
    if inter == 0:
        res.dice, res.nsd, res.hd95 = _empty_scores(n_gt, n_pred)
    else:
        res.dice = 2.0 * inter / (int(gt_sizes[1:].sum()) + int(pred_sizes[1:].sum()))
        d_gt, d_pred = boundary_distances(gt, pred, spacing)
        res.nsd = nsd(d_gt, d_pred, GLOBAL_NSD_TOLERANCE_MM)
        res.hd95 = hd95_pooled(d_gt, d_pred)
    return res
