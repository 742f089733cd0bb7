"""Named structures: the alias table, the derived atlas, distances (checked against a brute-force
computation and known geometry), reaches() for lobe / hemisphere questions, and speed."""
from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage

from vlseg.reasoning.answer import measurement_to_json
from vlseg.reasoning.atlas import MNI_2MM_AFFINE, MNI_2MM_SHAPE, AtlasLocator, apply_affine
from vlseg.reasoning.location import reaches
from vlseg.reasoning.measure import measure_target
from vlseg.reasoning.structures import distances_mm, structure_points_mni
from vlseg.vocab.places import ALIASES, STRUCTURE_KEYS, STRUCTURES, structure

_W = apply_affine(MNI_2MM_AFFINE, np.indices(MNI_2MM_SHAPE).reshape(3, -1).T.astype(float))
_W = _W.reshape(*MNI_2MM_SHAPE, 3)


def _ball(c, r):
    return np.linalg.norm(_W - np.asarray(c, float), axis=-1) <= r


def test_alias_table_is_one_table_the_parser_can_use():
    assert STRUCTURE_KEYS == ("motor_cortex", "broca_area", "lateral_ventricles", "thalamus",
                              "brainstem", "corpus_callosum", "midline")
    assert structure("Broca’s area").key == "broca_area"
    assert structure("precentral gyrus").key == structure("motor cortex").key == "motor_cortex"
    assert structure("the ventricles".removeprefix("the ")).key == "lateral_ventricles"
    assert structure("Brain stem").key == "brainstem" and structure("falx").key == "midline"
    assert set(ALIASES.values()) == set(STRUCTURE_KEYS)
    assert all(a == a.lower() for a in ALIASES)
    with pytest.raises(ValueError, match="unknown structure"):
        structure("liver")
    cc = structure("corpus callosum")
    assert cc.atlas.startswith("Talairach") and "Harvard-Oxford has no corpus callosum" in cc.note


def test_structure_atlas_places_structures_where_anatomy_has_them():
    centres = {}
    for s in STRUCTURES:
        if s.key == "midline":
            assert structure_points_mni(s.key) == ()
            continue
        sides = {side: pts.mean(axis=0) for side, pts, _ in structure_points_mni(s.key)}
        assert sides, s.key
        centres[s.key] = sides
    assert centres["motor_cortex"]["left"][0] < -20 < 20 < centres["motor_cortex"]["right"][0]
    assert set(centres["broca_area"]) == {"left"} and centres["broca_area"]["left"][0] < -40
    assert abs(centres["brainstem"][""][0]) < 3 and centres["brainstem"][""][2] < -20
    assert abs(centres["corpus_callosum"][""][0]) < 3 and 5 < centres["corpus_callosum"][""][2] < 25
    assert abs(centres["thalamus"]["left"][0] + 11) < 3


def _brute_force(mask: np.ndarray, key: str) -> float:
    """Independent check: the target's Euclidean distance map on its 2 mm grid, read at the
    structure's surface points rounded to that grid, minimum (no half-voxel allowances)."""
    pts = np.concatenate([surf for _, _, surf in structure_points_mni(key)])
    edt = ndimage.distance_transform_edt(~mask, sampling=2.0)
    ijk = np.rint(apply_affine(np.linalg.inv(MNI_2MM_AFFINE), pts)).astype(int)
    ok = np.all((ijk >= 0) & (ijk < MNI_2MM_SHAPE), axis=1)
    return float(edt[tuple(ijk[ok].T)].min())


def test_distances_agree_with_geometry_and_brute_force():
    loc = AtlasLocator.identity()
    # A ball in the left precentral gyrus touches the motor cortex and not Broca's area.
    motor = _ball((-38, -18, 56), 6)
    d = distances_mm(motor, MNI_2MM_AFFINE, loc)
    assert d["motor_cortex"] == 0.0 and d["broca_area"] > 20 and set(d) == set(STRUCTURE_KEYS)
    # A ball 30 mm left of the midline (radius 8): 22 mm minus half a voxel from the plane.
    far = _ball((-30, 30, 30), 8)
    d = distances_mm(far, MNI_2MM_AFFINE, loc, ["midline", "Broca's area", "thalamus"])
    assert d["midline"] == pytest.approx(22.0 - 1.0, abs=0.6)
    for key in ("broca_area", "thalamus"):
        # Brute force on the 2 mm grid rounds structure points to voxels: agree within 1.5 mm.
        assert d[key] == pytest.approx(max(0.0, _brute_force(far, key) - 1.5), abs=1.5)
    # Moving the ball 10 mm further from the thalamus adds ~10 mm.
    d2 = distances_mm(_ball((-30, 40, 30), 8), MNI_2MM_AFFINE, loc, ["thalamus"])
    assert 7.0 < d2["thalamus"] - d["thalamus"] <= 10.5
    assert distances_mm(np.zeros(MNI_2MM_SHAPE, bool), MNI_2MM_AFFINE, loc) == {
        k: None for k in STRUCTURE_KEYS}
    # Straddling the midline: 0.
    assert distances_mm(_ball((0, 30, 30), 6), MNI_2MM_AFFINE, loc, ["midline"])["midline"] == 0.0


def test_measurement_json_has_ranked_lobes_sides_and_distances():
    loc = AtlasLocator.identity()
    lesion = _ball((-50, -20, -10), 12)  # left temporal, reaching towards insula / parietal
    m = measure_target("WT", lesion.astype(np.float32), MNI_2MM_AFFINE, locator=loc)
    j = measurement_to_json(m)
    fr = j["lobe_fractions"]
    assert list(fr) == sorted(fr, key=lambda k: -fr[k]) and j["lobes"][0] == "temporal"
    assert j["lobes_involved"][0] == "temporal"
    assert all(fr[k] >= 0.1 for k in j["lobes_involved"])
    assert all(0.01 <= m_ < 0.1 for m_ in (dict(m.lobe_fractions)[k] for k in j["lobes_minor"]))
    assert j["lobe_fractions_by_side"]["temporal"]["left"] > 0.3
    assert j["lobe_fractions_by_side"]["temporal"]["right"] == 0.0
    assert j["left_fraction"] == 1.0 and j["hemisphere"] == "left"
    assert set(j["distances_mm"]) == set(STRUCTURE_KEYS) and j["distances_mm"]["midline"] > 20

    yes = reaches(m, lobe="temporal lobe")
    assert yes.answer and yes.side == "left" and yes.fraction == pytest.approx(fr["temporal"], abs=0.01)
    assert not reaches(m, lobe="occipital").answer
    assert not reaches(m, hemisphere="right").answer and reaches(m, hemisphere="left").answer
    assert not reaches(m, lobe="temporal", hemisphere="right").answer
    assert reaches(j, lobe="temporal", hemisphere="left").answer  # the JSON dict works too
    with pytest.raises(ValueError):
        reaches(m, lobe="elbow")
    # A lesion crossing the midline reaches both hemispheres.
    both = measure_target("WT", _ball((0, 20, 30), 12).astype(np.float32), MNI_2MM_AFFINE, locator=loc)
    assert both.crosses_midline and reaches(both, hemisphere="right").answer
    assert reaches(both, hemisphere="left").answer


def test_follow_up_measurements_are_fast_on_a_full_size_grid():
    """240x240x155 at 1 mm, a ~65 mL tumor: distances and the whole measurement on a
    follow-up (structure points cached on the locator) stay well under a second."""
    shape = (240, 240, 155)
    aff = np.diag([1.0, 1.0, 1.0, 1.0])
    aff[:3, 3] = [-120.0, -140.0, -72.0]
    idx = np.indices(shape, dtype=np.float32)
    w = [idx[i] + aff[i, 3] for i in range(3)]
    mask = ((w[0] + 35) ** 2 + (w[1] - 10) ** 2 + (w[2] - 20) ** 2) <= 25.0 ** 2
    loc = AtlasLocator(ras_to_mni=np.eye(4))
    distances_mm(mask, aff, loc)  # first call maps the structures into the case (cached)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        m = measure_target("WT", mask.astype(np.float32), aff, locator=loc, mask=mask)
        times.append(time.perf_counter() - t)
    assert m.n_lesions == 1 and 60 < m.volume_ml < 70
    assert float(np.median(times)) < 2.0, times  # ~0.2-0.4 s on 2 shared cores; 2 s = slack
