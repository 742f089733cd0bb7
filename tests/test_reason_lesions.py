"""Lesion counting as a radiologist would: pieces merged within 5 mm, sub-regions counted per
parent lesion, specks below the minimum not counted; checked on arrays and 2 mm phantoms."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vlseg.reasoning.answer import measurement_to_json
from vlseg.reasoning.atlas import AtlasLocator
from vlseg.reasoning.grouping import (
    MERGE_MM, group_lesions, lesion_core, lesion_masks, lesion_parent, merge_pieces,
)
from vlseg.reasoning.measure import measure_target
from vlseg.synth import DEFAULT_RANGES, generate_case_with_info


def _ball(shape, centre, radius, spacing=(1.0, 1.0, 1.0)):
    g = np.indices(shape).astype(float) * np.asarray(spacing, float)[:, None, None, None]
    return np.linalg.norm(g - np.asarray(centre, float)[:, None, None, None], axis=0) <= radius


def test_parent_and_core_of_each_concept():
    assert {c: lesion_parent(c) for c in ("NCR", "ED", "ET", "TC", "WT")} == {
        "NCR": "TC", "ET": "TC", "ED": "WT", "TC": None, "WT": None}
    assert {c: lesion_core(c) for c in ("NCR", "ED", "ET", "TC", "WT")} == {
        "NCR": None, "ET": None, "ED": "TC", "TC": None, "WT": "TC"}
    masks = {c: np.zeros((2, 2, 2), bool) for c in ("WT", "TC")}
    assert set(lesion_masks("ED", masks)) == {"parent_mask", "core_mask"}
    assert lesion_masks("TC", masks) == {}


def test_edema_islands_join_their_tumor():
    shape = (90, 60, 40)
    core = _ball(shape, (25, 30, 20), 8)
    wt = _ball(shape, (25, 30, 20), 14) | _ball(shape, (55, 30, 20), 5)   # an edema island 16 mm off
    assert group_lesions(wt, np.eye(4)).n == 2
    assert group_lesions(wt, np.eye(4), core=core).n == 1
    ed = wt & ~core
    assert group_lesions(ed, np.eye(4), parent=wt, core=core).n == 1
    # A second tumor (with its own core) stays a second lesion.
    core2 = _ball(shape, (75, 30, 20), 4)
    wt2 = wt | _ball(shape, (75, 30, 20), 7)
    assert group_lesions(wt2, np.eye(4), core=core | core2).n == 2


def test_pieces_within_merge_distance_are_one_lesion():
    m = _ball((60, 60, 40), (30, 30, 20), 12)
    m[:, 29:32, :] = False  # a 3 mm slit: two halves, 4 mm apart centre to centre
    assert merge_pieces(m, np.eye(4), merge_mm=0)[1] == 2
    g = group_lesions(m, np.eye(4))
    assert g.n == 1 and g.uncounted_ml == 0.0
    m[:, 26:35, :] = False  # a 9 mm gap: two lesions
    assert group_lesions(m, np.eye(4)).n == 2


def test_merge_distance_honours_anisotropic_spacing():
    m = np.zeros((40, 40, 20), bool)
    m[5:15, 5:15, 2:6] = True
    m[5:15, 5:15, 8:12] = True   # 2 empty slices between: 3 slices centre to centre
    assert group_lesions(m, np.diag([1.0, 1.0, 1.0, 1.0])).n == 1   # 3 mm apart: merged
    assert group_lesions(m, np.diag([1.0, 1.0, 2.5, 1.0])).n == 2   # 7.5 mm apart: two lesions


def test_specks_do_not_count_and_counts_are_largest_first():
    m = np.zeros((80, 80, 40), bool)
    m |= _ball(m.shape, (20, 20, 20), 8)           # ~2.1 mL
    m |= _ball(m.shape, (60, 60, 20), 5)           # ~0.5 mL, 40 mm away
    m[75:77, 2:4, 2:4] = True                      # 8 uL speck, far from both
    g = group_lesions(m, np.eye(4), min_lesion_ml=0.05)
    assert g.n == 2 and g.volumes_ml[0] > g.volumes_ml[1]
    assert g.uncounted_ml == pytest.approx(0.008)
    assert set(np.unique(g.labels)) == {0, 1, 2}
    # An only-speck target still counts its largest piece: present means at least one lesion.
    speck = np.zeros((10, 10, 10), bool)
    speck[2:4, 2:4, 2:4] = True
    assert group_lesions(speck, np.eye(4)).n == 1


def test_subregion_counts_once_per_parent_lesion():
    shape = (70, 70, 50)
    core = _ball(shape, (35, 35, 25), 15)
    inner = _ball(shape, (35, 35, 25), 11)
    x, y, z = np.indices(shape)
    sector = np.floor((np.arctan2(y - 35.0, x - 35.0) + np.pi) / (np.pi / 4)).astype(int)
    # The enhancing rim's equatorial band, cut into 4 arcs by 45-degree gaps (> 8 mm wide).
    et = core & ~inner & (np.abs(z - 25) <= 3) & (sector % 2 == 0)
    assert group_lesions(et, np.eye(4)).n == 4                   # on their own: 4 pieces
    assert group_lesions(et, np.eye(4), parent=core).n == 1      # within one core: one lesion
    # Two cores: a sub-region in both counts 2; a parent lesion without it does not count.
    core2 = _ball(shape, (10, 10, 10), 6)
    ncr2 = _ball(shape, (10, 10, 10), 3)
    assert group_lesions(inner | ncr2, np.eye(4), parent=core | core2).n == 2
    assert group_lesions(inner, np.eye(4), parent=core | core2).n == 1
    with pytest.raises(ValueError):
        group_lesions(inner, np.eye(4), parent=np.zeros((3, 3, 3), bool))


# ------------------------------------------------------------------ 2 mm phantoms with truth
def _masks(seg: np.ndarray) -> dict[str, np.ndarray]:
    m = {"NCR": seg == 1, "ED": seg == 2, "ET": seg == 3}
    m["TC"] = m["NCR"] | m["ET"]
    m["WT"] = m["TC"] | m["ED"]
    return m


def _case(seed: int, ranges=DEFAULT_RANGES):
    imgs, info = generate_case_with_info(seed, spacing_mm=2.0, ranges=ranges)
    img = np.asarray(imgs["t1n"].dataobj, np.float32)
    seg = np.asarray(imgs["seg"].dataobj)
    return img, imgs["t1n"].affine, _masks(seg), info


def _measure_all(masks, affine, locator):
    out = {}
    for c, m in masks.items():
        out[c] = measure_target(c, m.astype(np.float32), affine, locator=locator, mask=m,
                                distances=False, **lesion_masks(c, masks))
    return out


@pytest.fixture(scope="module")
def two_focus():
    """Two rim-enhancing tumors, one per hemisphere, ~80 mm apart, little edema."""
    r = dataclasses.replace(DEFAULT_RANGES, lesion_centres_mm=((-34.0, 14.0, 26.0), (36.0, -46.0, 24.0)),
                            core_radius_mm=(13.0, 13.0), satellite_radius_mm=(10.0, 10.0),
                            p_no_enhancement=0.0, p_no_necrosis=0.0, edema_extent_mm=(5.0, 8.0),
                            p_little_edema=0.0)
    img, aff, masks, info = _case(11, r)
    return masks, aff, AtlasLocator.fit(img, aff), info


def test_two_focus_phantom_counts_two_lesions_one_per_side(two_focus):
    masks, aff, loc, info = two_focus
    assert info["variant"] == "multifocal" and len(info["lesions"]) == 2
    ms = _measure_all(masks, aff, loc)
    for c in ("WT", "TC", "NCR", "ET", "ED"):
        assert ms[c].n_lesions == 2, (c, ms[c].lesion_volumes_ml)
    wt = ms["WT"]
    assert wt.hemisphere == "bilateral" and not wt.crosses_midline
    sides = sorted(d.hemisphere for d in wt.lesion_details)
    assert sides == ["left", "right"]
    left = next(d for d in wt.lesion_details if d.hemisphere == "left")
    assert left.main_lobe == "frontal" and left.centroid_ras_mm is not None
    assert sum(d.volume_ml for d in wt.lesion_details) == pytest.approx(wt.volume_ml)
    j = measurement_to_json(wt)
    assert j["n_lesions"] == len(j["lesions"]) == 2
    assert {"volume_ml", "centroid_ras_mm", "hemisphere", "main_lobe", "crosses_midline"} <= set(j["lesions"][0])
    assert j["lesion_merge_mm"] == MERGE_MM


def test_single_tumor_phantoms_count_one_even_with_specks(phantom_case_2mm):
    import nibabel as nib

    case_id = phantom_case_2mm.name
    seg = np.asarray(nib.load(phantom_case_2mm / f"{case_id}-seg.nii.gz").dataobj)
    aff = nib.load(phantom_case_2mm / f"{case_id}-seg.nii.gz").affine
    masks = _masks(seg)
    for seed in (1, 0):  # seed 0: the edema has an island 5+ mm off the tumor
        _, aff2, m2, info = _case(seed)
        assert info["variant"] == "typical"
        counts = {c: r.n_lesions for c, r in _measure_all(m2, aff2, None).items() if r.present}
        assert set(counts.values()) == {1}, (seed, counts)
    # Fragment the seed-7 tumor: a cut through it and stray specks, as a model might draw it.
    wt = masks["WT"].copy()
    ctr = np.argwhere(wt).mean(axis=0).astype(int)
    wt[ctr[0], :, :] = False                  # one-voxel (2 mm) cut: merged back
    rng = np.random.default_rng(0)
    far = np.argwhere(~wt)[rng.choice(int((~wt).sum()), 40, replace=False)]
    for p in far:                             # 40 single-voxel (8 uL) specks anywhere
        wt[tuple(p)] = True
    m = measure_target("WT", wt.astype(np.float32), aff, locator=None, mask=wt)
    assert m.n_lesions == 1 and m.uncounted_ml > 0


# ----------------------------------------------------------------------------- specks (issue 22)
def _mni_case(pieces):
    """A probability map on the 2 mm MNI grid: (centre_mm in MNI, radius_mm, p) balls."""
    from vlseg.reasoning.atlas import MNI_2MM_AFFINE, MNI_2MM_SHAPE, apply_affine

    w = apply_affine(MNI_2MM_AFFINE, np.indices(MNI_2MM_SHAPE).reshape(3, -1).T.astype(float))
    prob = np.zeros(MNI_2MM_SHAPE, np.float32)
    for centre, r, p in pieces:
        inside = (np.linalg.norm(w - centre, axis=1) <= r).reshape(MNI_2MM_SHAPE)
        prob[inside] = np.maximum(prob[inside], p)
    return prob, MNI_2MM_AFFINE


MAIN = ((-35.0, 20.0, 25.0), 18.0, 0.99)  # a left frontal tumor, about 24 mL


def test_a_weak_tiny_focus_far_away_is_not_a_lesion_and_does_not_move_the_hemisphere():
    from vlseg.reasoning.measure import FOCUS_MAX_ML, FOCUS_MIN_MEAN_P

    prob, affine = _mni_case([MAIN, ((40.0, -20.0, 10.0), 4.0, 0.6)])  # right, 0.27 mL, p 0.6
    m = measure_target("WT", prob, affine, locator=AtlasLocator.identity())
    assert m.n_lesions == 1 and m.hemisphere == "left" and not m.crosses_midline
    assert len(m.foci) == 1 and m.foci[0].hemisphere == "right" and m.foci[0].volume_ml < FOCUS_MAX_ML
    j = measurement_to_json(m)
    assert j["foci"][0]["hemisphere"] == "right" and j["focus_rule"]["min_mean_p"] == FOCUS_MIN_MEAN_P
    assert m.volume_ml == pytest.approx(float((prob >= 0.5).sum()) * 0.008)  # its voxels still count

    from vlseg.language.intents import get
    from vlseg.reasoning import Facts
    from vlseg.segmenter.dialogue import answer_text_parts

    for intent in ("segment", "count", "location"):
        text = answer_text_parts([(get(intent), Facts(targets=[j]))], sequences_used=["t1n"])
        assert text.count("tiny separate focus") == 1 and "possibly spurious" in text
        assert "both hemispheres" not in text and "separate lesions" not in text


def test_a_confident_small_piece_far_away_is_a_lesion_and_a_near_one_joins_the_tumor():
    far = ((40.0, -20.0, 10.0), 4.0, 0.99)     # right, confidently predicted: a second lesion
    near = ((-35.0, 20.0, 50.0), 3.0, 0.6)     # 7 mm above the tumor's top: a fragment of it
    m = measure_target("WT", *_mni_case([MAIN, far]), locator=AtlasLocator.identity())
    assert m.n_lesions == 2 and m.hemisphere == "bilateral" and not m.foci
    m = measure_target("WT", *_mni_case([MAIN, near]), locator=AtlasLocator.identity())
    assert m.n_lesions == 1 and m.hemisphere == "left" and not m.foci
    big_far = ((40.0, -20.0, 10.0), 8.0, 0.6)  # 2 mL: above the size limit, a lesion however weak
    m = measure_target("WT", *_mni_case([MAIN, big_far]), locator=AtlasLocator.identity())
    assert m.n_lesions == 2 and not m.foci
