"""BraTS 2023 lesion-wise Dice/HD95 on hand-made volumes, and against a direct re-statement of
the challenge script's per-lesion loop (full volume, surface-weighted HD95, mm³ threshold)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from vlseg.metrics import HD95_EMPTY, hd95_surfel, lesion_wise

ISO = (1.0, 1.0, 1.0)


def _box(vol: np.ndarray, lo, size) -> np.ndarray:
    vol[tuple(slice(a, a + s) for a, s in zip(lo, size))] = True
    return vol


def _empty(shape=(40, 40, 40)) -> np.ndarray:
    return np.zeros(shape, bool)


def test_true_positive_identical_lesion():
    gt = _box(_empty(), (5, 5, 5), (5, 5, 5))           # 125 voxels
    r = lesion_wise(gt.copy(), gt, ISO)
    assert (r["dice"], r["hd95"]) == (1.0, 0.0)
    assert (r["n_tp"], r["n_fn"], r["n_fp"], r["n_ignored"]) == (1, 0, 0, 0)


def test_false_negative_missed_lesion():
    gt = _box(_box(_empty(), (2, 2, 2), (5, 5, 5)), (25, 25, 25), (5, 5, 5))
    pred = _box(_empty(), (2, 2, 2), (5, 5, 5))          # finds only the first lesion
    r = lesion_wise(pred, gt, ISO)
    assert (r["n_tp"], r["n_fn"], r["n_fp"]) == (1, 1, 0)
    assert r["dice"] == pytest.approx((1.0 + 0.0) / 2)
    assert r["hd95"] == pytest.approx((0.0 + HD95_EMPTY) / 2)
    missed = [les for les in r["lesions"] if not les["detected"]]
    assert len(missed) == 1 and missed[0]["dice"] == 0.0 and missed[0]["hd95"] == HD95_EMPTY


def test_false_positive_spurious_component():
    gt = _box(_empty(), (2, 2, 2), (5, 5, 5))
    pred = _box(gt.copy(), (30, 30, 30), (3, 3, 3))      # exact lesion + a far blob of 27 voxels
    r = lesion_wise(pred, gt, ISO)
    assert (r["n_tp"], r["n_fn"], r["n_fp"]) == (1, 0, 1)
    assert r["false_positive_voxels"] == [27]            # FPs are counted whatever their size
    assert r["dice"] == pytest.approx(0.5)
    assert r["hd95"] == pytest.approx(HD95_EMPTY / 2)


def test_both_empty_and_one_empty():
    r = lesion_wise(_empty(), _empty(), ISO)
    assert (r["dice"], r["hd95"], r["n_tp"], r["n_fn"], r["n_fp"]) == (1.0, 0.0, 0, 0, 0)
    blob = _box(_empty(), (5, 5, 5), (5, 5, 5))
    r = lesion_wise(blob, _empty(), ISO)                  # only a false positive
    assert (r["dice"], r["hd95"], r["n_fp"]) == (0.0, HD95_EMPTY, 1)
    r = lesion_wise(_empty(), blob, ISO)                  # only a miss
    assert (r["dice"], r["hd95"], r["n_fn"]) == (0.0, HD95_EMPTY, 1)


def test_small_gt_lesions_ignored_and_their_matches_not_false_positives():
    gt = _box(_box(_empty(), (2, 2, 2), (5, 5, 5)), (25, 25, 25), (3, 3, 3))  # 125 + 27 voxels
    pred_big_only = _box(_empty(), (2, 2, 2), (5, 5, 5))
    r = lesion_wise(pred_big_only, gt, ISO)
    assert (r["dice"], r["n_tp"], r["n_fn"], r["n_ignored"]) == (1.0, 1, 0, 1)
    pred_both = _box(pred_big_only.copy(), (25, 25, 25), (3, 3, 3))
    r = lesion_wise(pred_both, gt, ISO)
    assert (r["dice"], r["n_fp"], r["n_ignored"]) == (1.0, 0, 1)
    # With the limit lowered the small lesion counts: missed when not predicted.
    r = lesion_wise(pred_big_only, gt, ISO, min_volume_mm3=20)
    assert (r["n_tp"], r["n_fn"], r["n_ignored"]) == (2 - 1, 1, 0)
    # A case whose only GT lesion is too small and not predicted scores as "nothing to score".
    r = lesion_wise(_empty(), _box(_empty(), (5, 5, 5), (3, 3, 3)), ISO)
    assert (r["dice"], r["hd95"], r["n_ignored"]) == (1.0, 0.0, 1)


def test_dilation_merges_nearby_gt_blobs_and_matches_nearby_predictions():
    gt = _box(_box(_empty(), (5, 5, 5), (5, 5, 5)), (12, 5, 5), (5, 5, 5))  # 2-voxel gap
    assert lesion_wise(gt.copy(), gt, ISO)["n_tp"] == 1
    assert lesion_wise(gt.copy(), gt, ISO, dilation_iters=0)["n_tp"] == 2
    # A prediction 2 voxels beside the lesion (no overlap) is matched, not a false positive.
    single = _box(_empty(), (5, 5, 5), (5, 5, 5))
    beside = _box(_empty(), (12, 5, 5), (5, 5, 5))
    r = lesion_wise(beside, single, ISO)
    assert (r["n_tp"], r["n_fp"], r["n_fn"]) == (1, 0, 0)
    assert r["dice"] == 0.0 and r["hd95"] == pytest.approx(hd95_surfel(single, beside, ISO))
    # Ten voxels away it is a miss plus a false positive.
    far = _box(_empty(), (20, 5, 5), (5, 5, 5))
    r = lesion_wise(far, single, ISO)
    assert (r["n_tp"], r["n_fp"], r["n_fn"]) == (0, 1, 1)
    assert r["dice"] == 0.0 and r["hd95"] == HD95_EMPTY


def test_argument_validation():
    with pytest.raises(ValueError, match="dilation_iters"):
        lesion_wise(_empty(), _empty(), ISO, dilation_iters=-1)
    with pytest.raises(ValueError, match="min_volume_mm3"):
        lesion_wise(_empty(), _empty(), ISO, min_volume_mm3=-1)
    with pytest.raises(ValueError, match="definition"):
        lesion_wise(_empty(), _empty(), ISO, definition="brats2021")


# ---------------------------------------------------------------- reference comparison

def _reference(pred, gt, spacing, k=3, min_mm3=50.0):
    """The BraTS 2023 per-lesion loop, restated on full volumes without any cropping (HD95 by
    ``hd95_surfel``, checked against DeepMind's code in tests/test_metrics_brats.py)."""
    cc26, dil = ndimage.generate_binary_structure(3, 3), ndimage.generate_binary_structure(3, 2)
    dil_lab, n = ndimage.label(ndimage.binary_dilation(gt, dil, iterations=k), cc26)
    lesions = dil_lab * gt
    pred_lab, _ = ndimage.label(pred, cc26)
    tp_ids, scores = [], []
    for j in range(1, n + 1):
        les = lesions == j
        inter = np.unique(pred_lab[ndimage.binary_dilation(les, dil, iterations=k)])
        inter = inter[inter != 0]
        tp_ids += list(inter)
        if les.sum() * np.prod(spacing) <= min_mm3:
            continue
        p = np.isin(pred_lab, inter) & (pred_lab > 0)
        d = 2 * (p & les).sum() / (p.sum() + les.sum())
        h = HD95_EMPTY if not p.any() else hd95_surfel(les, p, spacing)
        scores.append((d, h))
    n_fp = len(set(np.unique(pred_lab)) - set(tp_ids) - {0})
    denom = len(scores) + n_fp
    if denom == 0:
        return 1.0, 0.0
    return sum(s[0] for s in scores) / denom, (sum(s[1] for s in scores) + HD95_EMPTY * n_fp) / denom


def _random_lesions(rng, shape, n):
    vol = np.zeros(shape, bool)
    for _ in range(n):
        size = rng.integers(2, 8, size=3)
        lo = [rng.integers(0, s - z) for s, z in zip(shape, size)]
        vol[tuple(slice(a, a + z) for a, z in zip(lo, size))] = True
    return vol


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_reference_loop_on_random_volumes(seed):
    rng = np.random.default_rng(seed)
    shape = (36, 40, 32)
    gt = _random_lesions(rng, shape, 6)
    pred = np.roll(gt, rng.integers(-2, 3, size=3), axis=(0, 1, 2))
    pred &= ~_random_lesions(rng, shape, 3)          # cut pieces out (misses)
    pred |= _random_lesions(rng, shape, 3)           # add spurious blobs
    spacing = (1.0, 1.3, 2.0)
    r = lesion_wise(pred, gt, spacing)
    want_dice, want_hd = _reference(pred, gt, spacing)
    assert r["dice"] == pytest.approx(want_dice, abs=1e-9)
    assert r["hd95"] == pytest.approx(want_hd, rel=1e-5)
    assert r["n_tp"] + r["n_fn"] + r["n_ignored"] == len(r["lesions"])
