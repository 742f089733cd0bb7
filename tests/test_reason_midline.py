"""The brain's own mid-sagittal plane, midline crossing against it, and midline shift, on
2 mm phantoms whose pose and mass effect are known."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vlseg.reasoning.atlas import MNI_2MM_AFFINE, MNI_2MM_SHAPE, AtlasLocator, apply_affine
from vlseg.reasoning.midline import SEPTUM_MNI, case_midline_shift, midline_shift, pick_sequence
from vlseg.reasoning.midplane import fit_midplane, plane, plane_from_ras_to_mni
from vlseg.synth import DEFAULT_RANGES, generate_case_with_info
from vlseg.synth.anatomy import load_template, pose_matrix, sample_pose
from vlseg.synth.tumor import _pull_field, sample_tumor


def _streams(seed: int):
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)]


def _true_plane(seed: int, ranges=DEFAULT_RANGES):
    """The template's x = 0 plane through the phantom's pose (world -> MNI)."""
    return plane_from_ras_to_mni(pose_matrix(sample_pose(_streams(seed)[0], load_template(), ranges)))


def _true_shift(seed: int, ranges, normal) -> float:
    """Where the generator's mass effect moved the septum point, along the plane normal (mm):
    solve x + pull(x) = septum (the anatomy at x comes from x + pull(x)), map to world."""
    rp, rt = _streams(seed)[:2]
    tpl = load_template()
    pose = sample_pose(rp, tpl, ranges)
    spec = sample_tumor(rt, tpl, ranges)
    s0 = np.asarray(SEPTUM_MNI, np.float32)
    x = s0.copy()
    deep = np.full((1, 1, 1), 99.0, np.float32)  # far from the brain surface: no damping
    for _ in range(60):
        pull = sum(_pull_field(x[None, None, None], les, deep)[:, 0, 0, 0] for les in spec.lesions)
        x = s0 - pull
    return float(np.asarray(normal) @ np.linalg.solve(pose.matrix, x - s0))


def _case(seed: int, ranges=DEFAULT_RANGES):
    imgs, info = generate_case_with_info(seed, spacing_mm=2.0, ranges=ranges)
    arr = {k: np.asarray(v.dataobj, np.float32) for k, v in imgs.items()}
    return arr, imgs["t1n"].affine, info


def _angle_deg(a, b) -> float:
    return float(np.degrees(np.arccos(min(1.0, abs(float(np.dot(a, b)))))))


def test_midplane_fit_recovers_the_posed_template_midline():
    arr, aff, info = _case(0)
    truth = _true_plane(0)
    centre = apply_affine(aff, np.argwhere(arr["t1n"] > 0).mean(axis=0)[None])[0]
    for initial in (None, plane((1.0, 0.15, 0.0), truth.offset_mm + 8.0)):  # blind, or 8 mm off
        p = fit_midplane(arr["t1n"], aff, initial=initial)
        assert p.method == "symmetry"
        assert _angle_deg(p.normal, truth.normal) < 1.0
        assert abs(p.signed_mm(centre) - truth.signed_mm(centre)) < 1.0


def test_crossing_uses_the_case_plane_and_ignores_strays():
    w = apply_affine(MNI_2MM_AFFINE, np.indices(MNI_2MM_SHAPE).reshape(3, -1).T.astype(float))
    w = w.reshape(*MNI_2MM_SHAPE, 3)

    def ball(c, r):
        return np.linalg.norm(w - np.asarray(c, float), axis=-1) <= r

    loc = AtlasLocator.identity()
    # Mostly left, with a bump reaching 4 mm right of the midline (< 0.5 mL beyond 2 mm):
    # a stray, not a crossing.
    lesion = ball((-14, 20, 30), 12) | ball((0, 20, 30), 5)
    out = loc.locate(lesion, MNI_2MM_AFFINE)
    assert out["hemisphere"] == "left" and not out["crosses_midline"]
    assert 0 < out["lesions"][0]["across_midline_ml"] < 0.5 and out["right_fraction"] > 0
    # Really across: a third of it on the right.
    out = loc.locate(ball((-5, 20, 30), 14), MNI_2MM_AFFINE)
    assert out["hemisphere"] == "bilateral" and out["crosses_midline"]
    # The plane decides, not MNI x = 0: the brain's midline 10 mm to the right puts a lesion
    # centred at x = +4 in the left hemisphere, without crossing.
    shifted = AtlasLocator(ras_to_mni=np.eye(4), midplane=plane((1.0, 0.0, 0.0), 10.0))
    out = shifted.locate(ball((4, 20, 30), 5), MNI_2MM_AFFINE)
    assert out["hemisphere"] == "left" and not out["crosses_midline"]
    assert out["lesions"][0]["hemisphere"] == "left"


@pytest.fixture(scope="module")
def mass_effect_cases():
    """Same seed and tumor (left, near the frontal horn), with and without mass effect."""
    base = dataclasses.replace(DEFAULT_RANGES, lesion_centres_mm=((-35.0, 0.0, 15.0),),
                               core_radius_mm=(18.0, 18.0), mass_effect_decay_mm=(25.0, 25.0))
    out = {}
    for name, ratio in (("mass", (0.45, 0.45)), ("none", (0.0, 0.0))):
        r = dataclasses.replace(base, mass_effect_ratio=ratio)
        arr, aff, info = _case(2, r)
        out[name] = (arr, aff, AtlasLocator.fit(arr["t1n"], aff), r)
    return out


def test_midline_shift_with_and_without_mass_effect(mass_effect_cases):
    arr, aff, loc, r = mass_effect_cases["mass"]
    tumor = arr["seg"] > 0
    ms = midline_shift(arr["t1n"], aff, locator=loc, exclude=tumor)
    truth = _true_shift(2, r, loc.midplane.normal)
    assert truth > 4.0  # the phantom pushes the septum ~5 mm to the right
    assert ms.reliable and ms.direction == "right"
    assert ms.signed_mm == pytest.approx(truth, abs=1.0)
    # Any sequence gives it: FLAIR (dark CSF) and T2 (bright CSF) through pick_sequence.
    t2 = midline_shift(arr["t2w"], aff, locator=loc, csf_dark=False, exclude=tumor)
    assert t2.signed_mm == pytest.approx(truth, abs=1.5)
    assert pick_sequence({"t2w": 1, "t2f": 1}) == ("t2f", True)
    j = ms.to_json()
    assert j["midline_shift_mm"] == pytest.approx(ms.shift_mm, abs=0.05)
    assert j["midline_shift_direction"] == "right" and j["midsagittal_plane"]["method"] == "symmetry"

    arr0, aff0, loc0, _ = mass_effect_cases["none"]
    ms0 = case_midline_shift({k: v for k, v in arr0.items() if k != "seg"}, aff0, locator=loc0)
    assert ms0.shift_mm < 1.0 and ms0.reliable


def test_mass_effect_does_not_make_a_one_sided_tumor_cross(mass_effect_cases):
    from vlseg.reasoning.measure import measure_target

    arr, aff, loc, _ = mass_effect_cases["mass"]
    wt = arr["seg"] > 0
    m = measure_target("WT", wt.astype(np.float32), aff, locator=loc, mask=wt, distances=False)
    assert m.hemisphere == "left" and not m.crosses_midline
    assert m.midline_method == "symmetry" and m.left_fraction > 0.9
