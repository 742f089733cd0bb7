"""Atlas location: lobes/hemisphere at known MNI points, and through a fitted registration of a
rotated, scaled, shifted, LPS-stored oblique copy of the ICBM152 template."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from vlseg.errors import VlsegError
from vlseg.reasoning.atlas import (
    MNI_2MM_AFFINE, MNI_2MM_SHAPE, AtlasLocator, apply_affine, lobe_at, load_lobe_atlas, template_path,
)
from vlseg.reasoning.measure import measure_target
from vlseg.vocab.places import LOBES


def _rot(axis: int, deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    i, j = [(1, 2), (0, 2), (0, 1)][axis]
    r = np.eye(4)
    r[i, i] = r[j, j] = np.cos(t)
    r[i, j], r[j, i] = -np.sin(t), np.sin(t)
    return r


def _world(shape, affine) -> np.ndarray:
    idx = np.indices(shape).reshape(3, -1).T.astype(np.float64)
    return apply_affine(affine, idx).reshape(*shape, 3)


def _blob_in_template_grid(centres, radius=8.0):
    """Mask of balls around MNI centres on the 2 mm MNI grid (the template's own space)."""
    w = _world(MNI_2MM_SHAPE, MNI_2MM_AFFINE)
    mask = np.zeros(MNI_2MM_SHAPE, bool)
    for c in centres:
        mask |= np.linalg.norm(w - np.asarray(c, float), axis=-1) <= radius
    return mask


def test_lobe_atlas_labels_known_mni_points():
    points = {
        (-40, 20, 30): "frontal", (40, 20, 30): "frontal", (-50, -20, -10): "temporal",
        (-20, -90, 0): "occipital", (-50, -40, 40): "parietal", (-38, 0, 5): "insula",
        (-5, 30, 25): "limbic", (-12, -18, 8): "deep grey matter", (20, -60, -30): "cerebellum",
        (0, -28, -30): "brainstem",
    }
    codes = lobe_at(np.array(list(points), float))
    assert [LOBES[c - 1] for c in codes] == list(points.values())
    assert lobe_at(np.array([[0.0, 0.0, 200.0]]))[0] == 0  # outside the head: no label
    labels, affine = load_lobe_atlas()
    assert labels.shape == MNI_2MM_SHAPE and set(np.unique(labels)) == set(range(len(LOBES) + 1))


def test_identity_locator_hemisphere_lobes_and_midline():
    loc = AtlasLocator.identity()
    left_frontal = loc.locate(_blob_in_template_grid([(-40, 20, 30)]), MNI_2MM_AFFINE)
    assert left_frontal["hemisphere"] == "left" and left_frontal["lobes"][0] == "frontal"
    assert not left_frontal["crosses_midline"]
    assert np.allclose(left_frontal["centroid_mni_mm"], (-40, 20, 30), atol=1.0)

    right_temporal = loc.locate(_blob_in_template_grid([(55, -20, -10)]), MNI_2MM_AFFINE)
    assert right_temporal["hemisphere"] == "right" and right_temporal["lobes"][0] == "temporal"

    across = loc.locate(_blob_in_template_grid([(0, 20, 30)], radius=12), MNI_2MM_AFFINE)
    assert across["hemisphere"] == "bilateral" and across["crosses_midline"]

    # Two separate lesions, one per side: bilateral but not crossing.
    pair = loc.locate(_blob_in_template_grid([(-40, 20, 30), (40, -60, 20)]), MNI_2MM_AFFINE)
    assert pair["hemisphere"] == "bilateral" and not pair["crosses_midline"]
    assert set(pair["lobes"]) >= {"frontal"} and sum(pair["lobe_fractions"].values()) <= 1.0 + 1e-9


def _oblique_case():
    """Template moved by a known world transform W (rotate, scale, shift), sampled onto an
    oblique, anisotropic, LPS-stored grid B. Returns (image, B, W)."""
    tpl = nib.load(template_path())
    data = tpl.get_fdata(dtype=np.float32)
    W = np.eye(4)
    W[:3, 3] = [14.0, -9.0, 7.0]
    W = W @ _rot(2, 14) @ _rot(0, -9) @ np.diag([1.08, 1.08, 1.08, 1.0])
    B = _rot(2, 20) @ _rot(0, 10) @ np.diag([-2.0, -1.8, 3.0, 1.0])  # L, P flipped: LPS storage
    shape = (110, 130, 60)
    centre = apply_affine(W, np.array([[0.0, -18.0, 18.0]]))[0]
    B[:3, 3] = centre - B[:3, :3] @ (np.array(shape) / 2)
    mni = apply_affine(np.linalg.inv(W), _world(shape, B).reshape(-1, 3))
    vox = apply_affine(np.linalg.inv(tpl.affine), mni)
    img = ndimage.map_coordinates(data, vox.T, order=1).reshape(shape)
    return img, B, W


@pytest.fixture(scope="module")
def oblique_fit():
    img, B, W = _oblique_case()
    return img, B, W, AtlasLocator.fit(img, B)


def test_registration_recovers_known_transform(oblique_fit):
    _, _, W, loc = oblique_fit
    pts = np.array([[-40, 20, 30], [40, -60, 20], [0, 0, 0], [-30, -80, -10], [20, -60, -30]], float)
    err = np.linalg.norm(loc.to_mni(apply_affine(W, pts)) - pts, axis=1)
    assert err.max() < 3.0, err
    assert loc.reliable and np.allclose(loc.scales, 1 / 1.08, atol=0.03)


def test_location_survives_rotation_scaling_and_lps_oblique_storage(oblique_fit):
    img, B, W, loc = oblique_fit
    w = _world(img.shape, B)
    # Lesion defined in MNI space, drawn on the case's own (oblique, LPS) grid.
    mni = apply_affine(np.linalg.inv(W), w.reshape(-1, 3)).reshape(w.shape)
    lesion = np.linalg.norm(mni - [-40, 20, 30], axis=-1) <= 10
    m = measure_target("WT", lesion.astype(np.float32), B, locator=loc)
    assert m.present and m.hemisphere == "left" and m.lobes[0] == "frontal"
    assert not m.crosses_midline
    assert np.allclose(m.centroid_ras_mm, apply_affine(W, np.array([[-40.0, 20, 30]]))[0], atol=1.5)
    assert np.allclose(m.centroid_mni_mm, (-40, 20, 30), atol=3.0)

    right = np.linalg.norm(mni - [45, -25, -12], axis=-1) <= 9
    m = measure_target("ED", right.astype(np.float32), B, locator=loc)
    assert m.hemisphere == "right" and m.lobes[0] == "temporal"

    midline = np.linalg.norm(mni - [0, 30, 25], axis=-1) <= 14
    m = measure_target("WT", midline.astype(np.float32), B, locator=loc)
    assert m.crosses_midline and m.hemisphere == "bilateral"


def test_fit_rejects_unusable_images():
    with pytest.raises(ValueError):
        AtlasLocator.fit(np.zeros((20, 20, 20), np.float32), np.eye(4))
    with pytest.raises(ValueError):
        AtlasLocator.fit(np.ones((20, 20), np.float32), np.eye(4))
    with pytest.raises(ValueError):
        AtlasLocator(ras_to_mni=np.zeros((4, 4)))
    with pytest.raises(VlsegError, match="atlas registration failed"):  # no brain-like content
        AtlasLocator.fit(np.ones((20, 20, 20), np.float32), np.eye(4))
