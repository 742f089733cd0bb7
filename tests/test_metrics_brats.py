"""`--definition brats2023` against the official BraTS 2023 lesion-wise script, figure for figure,
on hand-made pairs; `--definition brats2025` (the official BraTS 2025 rule) by hand; its official figures are in
test_metrics_brats2025.py.

The expected values were computed with the official script's logic (``get_LesionWiseScores`` /
``get_LesionWiseResults`` of the BraTS 2023 metrics repository, with DeepMind's
``surface_distance`` 0.1 for HD95 and ``np.Inf`` restored for NumPy 2) and are written out here.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from vlseg.metrics import HD95_EMPTY, case_metrics, dice, hd95, lesion_wise
from vlseg.metrics.surface import hd95_surfel

ISO = (1.0, 1.0, 1.0)
THICK = (1.0, 1.0, 3.0)  # 1x1x3 mm: a typical thick-slice grid


def _box(vol, lo, size):
    vol[tuple(slice(a, a + s) for a, s in zip(lo, size))] = True
    return vol


def _empty(shape=(40, 40, 40)):
    return np.zeros(shape, bool)


def split_lesion():
    """One GT lesion; the prediction has it in two pieces (a 2-voxel cut)."""
    gt = _box(_empty(), (10, 10, 10), (12, 8, 8))
    pred = gt.copy()
    pred[15:17] = False
    return pred, gt, ISO


def merged_gt_lesions():
    """Two GT blobs 4 voxels apart (one lesion after dilation); only one is predicted."""
    gt = _box(_box(_empty(), (5, 10, 10), (6, 6, 6)), (15, 10, 10), (6, 6, 6))
    return _box(_empty(), (5, 10, 10), (6, 6, 6)), gt, ISO


def separate_gt_lesions():
    """Two GT blobs 10 voxels apart (two lesions); only one is predicted."""
    gt = _box(_box(_empty(), (2, 10, 10), (6, 6, 6)), (18, 10, 10), (6, 6, 6))
    return _box(_empty(), (2, 10, 10), (6, 6, 6)), gt, ISO


def merged_prediction():
    """Two GT lesions 12 voxels apart; one predicted blob covers both."""
    gt = _box(_box(_empty(), (2, 10, 10), (6, 6, 6)), (20, 10, 10), (6, 6, 6))
    return _box(_empty(), (2, 10, 10), (24, 6, 6)), gt, ISO


def boundary_50mm3():
    """1x1x3 mm: a found 480 mm³ lesion, a missed 17-voxel (51 mm³) one that counts and a missed
    16-voxel (48 mm³) one that does not. (A 50-*voxel* rule would ignore both.)"""
    shape = (40, 40, 20)
    gt = _box(np.zeros(shape, bool), (5, 5, 5), (8, 5, 4))
    gt = _box(gt, (5, 25, 12), (17, 1, 1))
    gt = _box(gt, (22, 5, 15), (16, 1, 1))
    return _box(np.zeros(shape, bool), (5, 5, 5), (8, 5, 4)), gt, THICK


def exactly_50mm3():
    """1x1x2.5 mm: a missed 20-voxel lesion is exactly 50 mm³: ignored (BraTS drops <= 50)."""
    shape = (30, 30, 20)
    gt = _box(np.zeros(shape, bool), (3, 3, 3), (6, 6, 4))
    gt = _box(gt, (20, 20, 10), (20 // 2, 2, 1))
    return _box(np.zeros(shape, bool), (3, 3, 3), (6, 6, 4)), gt, (1.0, 1.0, 2.5)


def spurious_blob_thick():
    """1x1x3 mm: a perfect prediction plus one spurious voxel 30 slices (90 mm) away."""
    shape = (40, 40, 40)
    gt = _box(np.zeros(shape, bool), (10, 10, 3), (12, 12, 4))
    pred = gt.copy()
    pred[30, 30, 36] = True
    return pred, gt, THICK


def both_empty():
    return _empty(), _empty(), ISO


def gt_empty():
    return _box(_empty(), (5, 5, 5), (4, 4, 4)), _empty(), ISO


def pred_empty():
    return _empty(), _box(_empty(), (5, 5, 5), (4, 4, 4)), ISO


# The official script's figures (see the module docstring).
OFFICIAL = {
    "split_lesion": {"dice": 0.9090909090909091, "hd95": 2.0, "lesion_dice": 0.9090909090909091, "lesion_hd95": 2.0, "n_tp": 1, "n_fn": 0, "n_fp": 0},
    "merged_gt_lesions": {"dice": 0.6666666666666666, "hd95": 10.0, "lesion_dice": 0.6666666666666666, "lesion_hd95": 10.0, "n_tp": 1, "n_fn": 0, "n_fp": 0},
    "separate_gt_lesions": {"dice": 0.6666666666666666, "hd95": 16.0, "lesion_dice": 0.5, "lesion_hd95": 187.0, "n_tp": 1, "n_fn": 1, "n_fp": 0},
    "merged_prediction": {"dice": 0.6666666666666666, "hd95": 5.0, "lesion_dice": 0.4, "lesion_hd95": 18.0, "n_tp": 2, "n_fn": 0, "n_fp": 0},
    "boundary_50mm3": {"dice": 0.9065155807365439, "hd95": 28.319604517012593, "lesion_dice": 0.5, "lesion_hd95": 187.0, "n_tp": 1, "n_fn": 1, "n_fp": 0},
    "exactly_50mm3": {"dice": 0.935064935064935, "hd95": 24.026027553467927, "lesion_dice": 1.0, "lesion_hd95": 0.0, "n_tp": 1, "n_fn": 0, "n_fp": 0},
    "spurious_blob_thick": {"dice": 0.9991326973113617, "hd95": 0.0, "lesion_dice": 0.5, "lesion_hd95": 187.0, "n_tp": 1, "n_fn": 0, "n_fp": 1},
    "both_empty": {"dice": 1.0, "hd95": 0.0, "lesion_dice": 1.0, "lesion_hd95": 0.0, "n_tp": 0, "n_fn": 0, "n_fp": 0},
    "gt_empty": {"dice": 0.0, "hd95": 374.0, "lesion_dice": 0.0, "lesion_hd95": 374.0, "n_tp": 0, "n_fn": 0, "n_fp": 1},
    "pred_empty": {"dice": 0.0, "hd95": 374.0, "lesion_dice": 0.0, "lesion_hd95": 374.0, "n_tp": 0, "n_fn": 1, "n_fp": 0},
}


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_brats2023_matches_the_official_script(name):
    pred, gt, spacing = globals()[name]()
    want = OFFICIAL[name]
    got = case_metrics({"WT": pred}, {"WT": gt}, spacing)["WT"]
    for key in ("dice", "hd95", "lesion_dice", "lesion_hd95"):
        assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), key
    for key in ("n_tp", "n_fn", "n_fp"):
        assert got[key] == want[key], key


def test_lesion_threshold_is_a_volume_not_a_voxel_count():
    pred, gt, spacing = boundary_50mm3()
    r = lesion_wise(pred, gt, spacing)
    vols = sorted(round(les["volume_mm3"]) for les in r["lesions"])
    assert vols == [48, 51, 480]
    assert [les["ignored"] for les in sorted(r["lesions"], key=lambda x: x["volume_mm3"])] == [True, False, False]
    r = lesion_wise(*exactly_50mm3())
    assert [les["volume_mm3"] for les in r["lesions"] if les["ignored"]] == [50.0]


def test_voxel_boundary_hd95_is_not_the_official_one():
    """The boundary-voxel HD95 (``overlap.hd95``, MONAI's) differs from the surface-weighted one
    BraTS reports; case_metrics reports the BraTS one."""
    for name in ("merged_prediction", "boundary_50mm3"):
        pred, gt, spacing = globals()[name]()
        assert hd95(pred, gt, spacing) != pytest.approx(OFFICIAL[name]["hd95"], rel=1e-3)
        assert hd95_surfel(gt, pred, spacing) == pytest.approx(OFFICIAL[name]["hd95"], rel=1e-12)


# ---------------------------------------------------------------------------- BraTS 2025
def _lw25(pred, gt, spacing):
    return lesion_wise(pred, gt, spacing, definition="brats2025")


def test_brats2025_one_to_one_by_hand():
    """The official BraTS 2025 rule (figures from the official package: test_metrics_brats2025)."""
    # Identical: one TP, perfect.
    _, gt, _ = split_lesion()
    r = _lw25(gt.copy(), gt, ISO)
    assert (r["n_tp"], r["n_fn"], r["n_fp"], r["dice"], r["hd95"], r["nsd"]) == (1, 0, 0, 1.0, 0.0, 1.0)
    # Split in two: any overlap matches, one piece is the TP, the other a FP that does not
    # lower the lesion-wise Dice (the mean is over matched lesions only).
    pred, gt, _ = split_lesion()
    r = _lw25(pred, gt, ISO)
    pieces, n = ndimage.label(pred)
    piece_dice = [2 * np.count_nonzero((pieces == i) & gt) / (np.count_nonzero(pieces == i) + gt.sum())
                  for i in range(1, n + 1)]
    assert (r["n_tp"], r["n_fn"], r["n_fp"]) == (1, 0, 1)
    assert r["dice"] == pytest.approx(max(piece_dice)) and r["global_dice"] == pytest.approx(dice(pred, gt))
    # One blob over two lesions: one lesion matched, the other missed.
    r = _lw25(*merged_prediction())
    assert (r["n_tp"], r["n_fn"], r["n_fp"]) == (1, 1, 0)
    # Empty cases: nothing to score is NaN; a lesion-less side gives 0 / inf, reported 373 globally.
    r = _lw25(*both_empty())
    assert np.isnan(r["dice"]) and np.isnan(r["hd95"]) and np.isnan(r["global_dice"])
    r = _lw25(*gt_empty())
    assert (r["n_fp"], r["dice"], r["hd95"], r["global_hd95"]) == (1, 0.0, np.inf, 373.0)
    r = _lw25(*pred_empty())
    assert (r["n_fn"], r["dice"], r["nsd"], r["global_dice"]) == (1, 0.0, 0.0, 0.0)


def test_brats2025_through_case_metrics():
    pred, gt, spacing = split_lesion()
    row = case_metrics({"ET": pred}, {"ET": gt}, spacing, definition="brats2025")["ET"]
    assert (row["n_tp"], row["n_fp"], row["rq"]) == (1, 1, pytest.approx(1 / 1.5))
    assert row["dice"] == pytest.approx(dice(pred, gt)) and 0 < row["nsd"] <= 1
