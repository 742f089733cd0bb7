"""Measurements from probability maps: volume (+ range), presence, lesions, diameters."""
from __future__ import annotations

import numpy as np
import pytest

from vlseg.reasoning.atlas import apply_affine
from vlseg.reasoning.measure import axial_axis, clean_mask, measure_target


def _rot(axis: int, deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    i, j = [(1, 2), (0, 2), (0, 1)][axis]
    r = np.eye(4)
    r[i, i] = r[j, j] = np.cos(t)
    r[i, j], r[j, i] = -np.sin(t), np.sin(t)
    return r


def _grid(shape, affine):
    """World RAS mm of every voxel centre, (X, Y, Z, 3)."""
    idx = np.indices(shape).reshape(3, -1).T.astype(np.float64)
    return apply_affine(affine, idx).reshape(*shape, 3)


def _centred(linear: np.ndarray, shape) -> np.ndarray:
    a = linear.copy()
    a[:3, 3] = -a[:3, :3] @ ((np.array(shape) - 1) / 2)
    return a


ANISO = np.diag([0.8, 1.1, 3.0, 1.0])


def test_volume_on_anisotropic_grid_counts_voxels_times_det():
    shape = (40, 30, 12)
    prob = np.zeros(shape, np.float32)
    prob[5:25, 4:19, 2:9] = 1.0  # 20 * 15 * 7 voxels
    m = measure_target("WT", prob, ANISO, locator=None)
    expected = 20 * 15 * 7 * 0.8 * 1.1 * 3.0 / 1000
    assert m.present and m.n_lesions == 1
    assert m.volume_ml == pytest.approx(expected)
    assert m.volume_ml_range == pytest.approx((expected, expected))  # hard map: no spread


def test_volume_range_brackets_volume_and_follows_soft_edges():
    shape = (50, 50, 20)
    affine = _centred(ANISO, shape)
    r = np.linalg.norm(_grid(shape, affine) / [12.0, 9.0, 15.0], axis=-1)
    prob = np.clip(1.5 - r, 0, 1).astype(np.float32)  # p = 0.5 on the ellipsoid surface
    m = measure_target("ED", prob, affine, locator=None)
    lo, hi = m.volume_ml_range
    true_ml = 4 / 3 * np.pi * 12 * 9 * 15 / 1000
    assert lo < m.volume_ml < hi
    assert m.volume_ml == pytest.approx(true_ml, rel=0.05)
    # p >= 0.7 is the ellipsoid scaled by 0.8, p >= 0.3 by 1.2.
    assert lo == pytest.approx(true_ml * 0.8**3, rel=0.08)
    assert hi == pytest.approx(true_ml * 1.2**3, rel=0.08)


@pytest.mark.parametrize("tilt", [0.0, 30.0])
def test_rano_diameters_of_known_ellipsoid(tilt):
    # Semi-axes 25 mm (x) and 15 mm (y) in the axial plane, 10 mm in z, on an anisotropic
    # grid that is rotated in-plane (oblique voxels) and stored with a flipped (LPS-like) x.
    shape = (90, 70, 16)
    linear = _rot(2, tilt) @ np.diag([-0.9, 1.2, 2.5, 1.0])
    affine = _centred(linear, shape)
    assert axial_axis(affine) == 2
    w = _grid(shape, affine)
    prob = (np.linalg.norm(w / [25.0, 15.0, 10.0], axis=-1) <= 1).astype(np.float32)
    m = measure_target("TC", prob, affine, locator=None)
    # Edge to edge: within one voxel (here up to 1.2 mm) of the true 50 x 30 mm.
    assert abs(m.max_diameter_mm - 50.0) <= 1.2
    assert abs(m.perpendicular_diameter_mm - 30.0) <= 1.2
    assert np.allclose(m.centroid_ras_mm, 0.0, atol=0.5)


def test_axial_axis_follows_world_z_not_array_order():
    # Slice axis stored first (e.g. a reformatted scan): z lives on array axis 0.
    affine = np.array([[0, 0, 1.0, 0], [0, 1.0, 0, 0], [3.0, 0, 0, 0], [0, 0, 0, 1]])
    assert axial_axis(affine) == 0
    shape = (12, 60, 70)
    affine = _centred(affine, shape)
    prob = (np.linalg.norm(_grid(shape, affine) / [20.0, 12.0, 9.0], axis=-1) <= 1).astype(np.float32)
    m = measure_target("ET", prob, affine, locator=None)
    assert abs(m.max_diameter_mm - 40.0) <= 1.0  # x extent 40, measured in the axial plane
    assert abs(m.perpendicular_diameter_mm - 24.0) <= 1.0


def test_lesion_count_ignores_specks_below_min_size():
    prob = np.zeros((60, 60, 30), np.float32)
    prob[5:15, 5:15, 5:15] = 0.9      # 1.0 mL at 1 mm
    prob[30:40, 30:45, 10:20] = 0.8   # 1.5 mL
    prob[50:53, 5:8, 20:23] = 0.95    # 27 uL: below the default 0.05 mL
    m = measure_target("ET", prob, np.eye(4), locator=None)
    assert m.n_lesions == 2
    assert m.lesion_volumes_ml == pytest.approx((1.5, 1.0))
    assert m.volume_ml == pytest.approx(2.5)
    assert clean_mask(prob, np.eye(4)).sum() == 2500
    m = measure_target("ET", prob, np.eye(4), locator=None, min_lesion_ml=0.01)
    assert m.n_lesions == 3


def test_absent_target_is_a_calibrated_no():
    affine = np.eye(4)
    empty = measure_target("ET", np.zeros((20, 20, 20), np.float32), affine, locator=None)
    assert not empty.present and empty.presence_score == 0.0 and empty.volume_ml == 0.0
    assert empty.centroid_ras_mm is None and empty.lobes == () and empty.hemisphere is None

    unsure = np.zeros((30, 30, 30), np.float32)
    unsure[5:15, 5:15, 5:15] = 0.4  # a sizeable region, but never above 0.5
    m = measure_target("ET", unsure, affine, locator=None)
    assert not m.present and 0.3 < m.presence_score < 0.5
    assert m.volume_ml_range[1] == pytest.approx(1.0)  # visible at p >= 0.3 only

    speck = np.zeros((30, 30, 30), np.float32)
    speck[3:5, 3:5, 3:5] = 1.0  # 8 uL, certain but below the minimum lesion size
    m = measure_target("ET", speck, affine, locator=None)
    assert not m.present and m.presence_score < 0.5

    sure = np.zeros((30, 30, 30), np.float32)
    sure[5:15, 5:15, 5:15] = 0.9
    m = measure_target("ET", sure, affine, locator=None)
    assert m.present and 0.85 <= m.presence_score <= 0.9


@pytest.mark.parametrize(
    "kwargs, prob, affine",
    [
        ({"concept": "LIVER"}, np.zeros((4, 4, 4)), np.eye(4)),
        ({}, np.zeros((4, 4)), np.eye(4)),
        ({}, np.full((4, 4, 4), np.nan), np.eye(4)),
        ({}, np.zeros((4, 4, 4)), np.zeros((4, 4))),
        ({"threshold": 1.5}, np.zeros((4, 4, 4)), np.eye(4)),
    ],
)
def test_bad_inputs_raise_value_error(kwargs, prob, affine):
    concept = kwargs.pop("concept", "WT")
    with pytest.raises(ValueError):
        measure_target(concept, prob, affine, locator=None, **kwargs)


@pytest.mark.parametrize("seed", range(6))
def test_diameters_of_ellipsoids_and_rims_at_1mm_are_within_1mm(seed):
    """Issue 21: RANO diameters on 1 mm masks of known shapes (ellipsoids of any in-plane
    orientation and size, enhancing rims around a necrotic centre), placed off the voxel grid,
    measure within 1 mm of the true maximum and perpendicular diameters."""
    from vlseg.reasoning.measure import axial_diameters

    rng = np.random.default_rng(seed)
    shape = (80, 80, 24)
    affine = np.eye(4)
    idx = np.indices(shape).astype(np.float64)
    centre = np.array([40, 40, 12]) + rng.uniform(-0.5, 0.5, 3)
    a, b = sorted(rng.uniform(4.0, 25.0, 2), reverse=True)  # in-plane semi-axes (mm)
    angle = rng.uniform(0, np.pi)
    d = idx - centre[:, None, None, None]
    x = d[0] * np.cos(angle) + d[1] * np.sin(angle)
    y = -d[0] * np.sin(angle) + d[1] * np.cos(angle)
    r = (x / a) ** 2 + (y / b) ** 2 + (d[2] / 6.0) ** 2
    solid = r <= 1.0
    rim = solid & ~(r <= 0.6 ** 2)  # an enhancing rim: the same outer size, hollow
    for mask in (solid, rim):
        dmax, dperp = axial_diameters(mask.astype(np.int32), affine)
        assert abs(dmax - 2 * a) <= 1.0, (dmax, 2 * a)
        assert abs(dperp - 2 * b) <= 1.0, (dperp, 2 * b)
