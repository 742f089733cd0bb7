"""Case-wise Dice and HD95: empty-mask conventions, physical spacing, agreement with MONAI."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import compute_hausdorff_distance
from scipy import ndimage

from vlseg.metrics import HD95_EMPTY, case_metrics, dice, hd95


def _cube(shape=(20, 20, 20), lo=(5, 5, 5), size=(6, 6, 6)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[tuple(slice(a, a + s) for a, s in zip(lo, size))] = True
    return m


def _blobs(seed: int, shape=(32, 36, 28), thr=0.6) -> np.ndarray:
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), 2.0)
    return noise > np.quantile(noise, thr)


def test_hd95_empty_penalty_is_brats_374():
    assert HD95_EMPTY == 374.0


@pytest.mark.parametrize("p_empty,g_empty,want_dice,want_hd", [
    (True, True, 1.0, 0.0),
    (False, True, 0.0, HD95_EMPTY),
    (True, False, 0.0, HD95_EMPTY),
    (False, False, 1.0, 0.0),  # identical non-empty masks
])
def test_four_empty_nonempty_combinations(p_empty, g_empty, want_dice, want_hd):
    empty, cube = np.zeros((20, 20, 20), bool), _cube()
    p, g = (empty if p_empty else cube), (empty if g_empty else cube)
    assert dice(p, g) == want_dice
    assert hd95(p, g, (1.0, 1.0, 1.0)) == want_hd


def test_dice_partial_overlap_by_hand():
    a = _cube(lo=(5, 5, 5), size=(4, 4, 4))   # 64 voxels
    b = _cube(lo=(7, 5, 5), size=(4, 4, 4))   # 64 voxels, 32 shared
    assert dice(a, b) == pytest.approx(2 * 32 / 128)
    assert dice(a, np.zeros_like(a)) == 0.0


@pytest.mark.parametrize("axis,spacing,want", [
    (0, (1.0, 2.0, 3.0), 3.0),   # 3 voxels along x at 1 mm
    (1, (1.0, 2.0, 3.0), 6.0),   # 3 voxels along y at 2 mm
    (2, (1.0, 2.0, 3.0), 9.0),   # 3 voxels along z at 3 mm
])
def test_hd95_uses_physical_spacing_per_axis(axis, spacing, want):
    a = np.zeros((12, 12, 12), bool)
    b = np.zeros_like(a)
    a[4, 4, 4] = True
    idx = [4, 4, 4]
    idx[axis] += 3
    b[tuple(idx)] = True
    assert hd95(a, b, spacing) == pytest.approx(want)
    assert hd95(b, a, spacing) == pytest.approx(want)


def test_hd95_slab_shift_anisotropic():
    # Two full-width slabs offset by 2 slices along z at 2.5 mm: every surface point of one is
    # 0 or 5 mm from the other; the facing faces dominate, so HD95 = 5 mm.
    a = np.zeros((10, 10, 20), bool)
    a[:, :, 5:9] = True
    b = np.roll(a, 2, axis=2)
    assert hd95(a, b, (0.8, 0.8, 2.5)) == pytest.approx(5.0)
    # The same voxels with isotropic 1 mm give 2 mm.
    assert hd95(a, b, (1.0, 1.0, 1.0)) == pytest.approx(2.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hd95_agrees_with_monai(seed):
    a, b = _blobs(seed), _blobs(seed + 100)
    spacing = (0.9, 1.7, 2.4)
    ref = compute_hausdorff_distance(torch.from_numpy(a)[None, None].float(),
                                     torch.from_numpy(b)[None, None].float(),
                                     include_background=True, percentile=95, spacing=spacing)
    assert hd95(a, b, spacing) == pytest.approx(float(ref), rel=1e-5)


def test_hd95_crop_does_not_change_result():
    a, b = _blobs(5, shape=(24, 24, 24), thr=0.85), _blobs(6, shape=(24, 24, 24), thr=0.85)
    big_a, big_b = np.zeros((60, 70, 50), bool), np.zeros((60, 70, 50), bool)
    big_a[10:34, 30:54, 0:24], big_b[10:34, 30:54, 0:24] = a, b  # touching the z=0 border
    assert hd95(big_a, big_b, (1.0, 1.2, 1.5)) == pytest.approx(hd95(a, b, (1.0, 1.2, 1.5)))


def test_bad_arguments_raise_value_error():
    a = _cube()
    with pytest.raises(ValueError, match="shape"):
        dice(a, a[:-1])
    with pytest.raises(ValueError, match="spacing"):
        hd95(a, a, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        hd95(a, a, (1.0, 1.0))
    with pytest.raises(ValueError, match="3D"):
        dice(a[0], a[0])


def test_case_metrics_all_concepts_and_derived_composites():
    gt = {"NCR": _cube(lo=(5, 5, 5), size=(3, 3, 3)), "ED": _cube(lo=(2, 2, 2), size=(12, 12, 12)),
          "ET": _cube(lo=(9, 9, 9), size=(3, 3, 3))}
    gt["ED"] &= ~(gt["NCR"] | gt["ET"])
    pred = {"NCR": gt["NCR"], "ED": gt["ED"], "ET": np.zeros_like(gt["ET"])}
    res = case_metrics(pred, gt, (1.0, 1.0, 1.0))
    assert list(res) == ["NCR", "ED", "ET", "TC", "WT"]
    assert res["NCR"]["dice"] == 1.0 and res["ED"]["dice"] == 1.0
    assert res["ET"]["dice"] == 0.0 and res["ET"]["hd95"] == HD95_EMPTY
    # TC = NCR ∪ ET, derived for both sides: 27 of 54 voxels predicted.
    assert res["TC"]["dice"] == pytest.approx(2 * 27 / (27 + 54))
    assert res["TC"]["gt_voxels"] == 54 and res["TC"]["pred_voxels"] == 27
    for key in ("lesion_dice", "lesion_hd95", "n_tp", "n_fn", "n_fp"):
        assert key in res["WT"]
    assert res["WT"]["n_tp"] == 1 and res["WT"]["n_fp"] == 0


def test_case_metrics_subset_and_errors():
    gt = {"ET": _cube()}
    res = case_metrics({"ET": _cube(), "NCR": _cube()}, gt, (1, 1, 1), include_lesion_wise=False)
    assert list(res) == ["ET"] and "lesion_dice" not in res["ET"]
    with pytest.raises(ValueError, match="no concept in common"):
        case_metrics({"NCR": _cube()}, gt, (1, 1, 1))


def test_case_metrics_hd95_equals_direct_hd95():
    # Single lesion (shortcut path) and two lesions plus a false positive (direct path).
    g1 = _cube((30, 30, 30), (5, 5, 5), (8, 7, 6))
    p1 = _cube((30, 30, 30), (6, 4, 5), (8, 9, 5))
    g2 = g1 | _cube((30, 30, 30), (20, 20, 20), (5, 5, 5))
    p2 = p1 | _cube((30, 30, 30), (20, 2, 22), (4, 4, 4))
    sp = (0.9, 1.1, 1.6)
    for p, g in ((p1, g1), (p2, g2)):
        res = case_metrics({"WT": p}, {"WT": g}, sp)
        assert res["WT"]["hd95"] == pytest.approx(hd95(p, g, sp))
        assert res["WT"]["dice"] == pytest.approx(dice(p, g))


@pytest.mark.parametrize("definition", ["brats2023"])  # brats2025 has its own global HD95
def test_case_hd95_reused_from_the_whole_lesion_is_identical(definition, monkeypatch):
    import vlseg.metrics.casewise as casewise

    sp = (0.9, 1.1, 1.6)
    g = _cube((40, 40, 40), (8, 8, 8), (12, 10, 9)) | _cube((40, 40, 40), (14, 14, 14), (9, 12, 10))
    near = np.roll(g, 1, axis=0)
    split = near.copy()
    split[:, :, 12] = False  # two predicted parts, both matched to the one lesion (BraTS 2023)
    far = near | _cube((40, 40, 40), (34, 34, 34), (3, 3, 3))  # plus a false positive
    small = g | _cube((40, 40, 40), (33, 2, 2), (2, 2, 2))  # plus a small, ignored GT lesion
    calls = []
    real = casewise.case_hd95
    monkeypatch.setattr(casewise, "case_hd95", lambda *a: calls.append(1) or real(*a))
    for p, gt, reused in ((near, g, True), (split, g, definition == "brats2023"),
                          (far, g, False), (near, small, False), (g, g, True)):
        calls.clear()
        res = case_metrics({"WT": p}, {"WT": gt}, sp, definition=definition)["WT"]
        assert res["hd95"] == real(p, gt, sp)  # to the bit: what case_metrics gave before
        assert (calls == []) == reused, (res["n_tp"], res["n_fp"], res["n_fn"])
