"""One labelling per case: nested regions from the outside in, derived classes without specks."""
from __future__ import annotations

import numpy as np

from vlseg.reasoning.labelling import final_masks, final_probabilities, labelling_sources, region_chain

AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])


def _ball(shape, centre, r):
    x, y, z = np.indices(shape)
    return ((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2) <= r * r


def test_chain_and_sources():
    assert region_chain() == ("WT", "TC", "ET")
    assert labelling_sources(["NCR"]) == ("WT", "TC", "ET")
    assert labelling_sources(["ED", "WT"]) == ("WT", "TC", "ET")


def test_masks_nest_exactly_and_specks_are_absorbed():
    shape = (40, 40, 40)
    wt, tc, et = _ball(shape, (20, 20, 20), 14), _ball(shape, (20, 20, 20), 9), _ball(shape, (20, 20, 20), 9)
    et &= ~_ball(shape, (20, 20, 20), 6)          # an enhancing rim around necrosis
    probs = {"WT": np.where(wt, 0.9, 0.05), "TC": np.where(tc, 0.9, 0.05), "ET": np.where(et, 0.9, 0.05)}
    probs["ET"][20, 20, 20] = 0.9                  # one ET voxel inside the necrosis: an NCR hole
    probs["TC"][20, 20, 34] = 0.9                  # TC reaching one voxel past the rim
    probs = {c: p.astype(np.float32) for c, p in probs.items()}
    m = final_masks(probs, AFFINE)
    assert np.array_equal(m["NCR"] | m["ET"], m["TC"]) and not (m["NCR"] & m["ET"]).any()
    assert np.array_equal(m["NCR"] | m["ED"] | m["ET"], m["WT"])
    assert not (m["ED"] & m["TC"]).any()
    from scipy import ndimage
    for c in ("NCR", "ED", "ET"):
        n = ndimage.label(m[c], structure=np.ones((3, 3, 3)))[1]
        assert n == 1, (c, n)                     # no specks left in any class
    assert m["NCR"][20, 20, 20]                    # the lone ET voxel joined the necrosis around it
    p = final_probabilities(probs)
    assert np.allclose(p["NCR"], np.clip(probs["TC"] - probs["ET"], 0, 1))


def test_whole_tumor_pieces_without_a_core_are_dropped_unless_none_has_one():
    shape = (48, 40, 40)
    tumor, blob = _ball(shape, (14, 20, 20), 9), _ball(shape, (36, 20, 20), 6)  # separate pieces
    core = _ball(shape, (14, 20, 20), 5)
    probs = {"WT": np.where(tumor | blob, 0.9, 0.05), "TC": np.where(core, 0.9, 0.05),
             "ET": np.where(core, 0.9, 0.05)}
    m = final_masks({c: p.astype(np.float32) for c, p in probs.items()}, AFFINE)
    assert np.array_equal(m["WT"], tumor)            # the core-less blob is gone ...
    assert not m["ED"][blob].any()                    # ... from the derived edema too
    assert np.array_equal(m["NCR"] | m["ED"] | m["ET"], m["WT"])
    # A tumor with no core anywhere (all edema, e.g. non-enhancing) keeps every piece.
    probs["TC"] = probs["ET"] = np.full(shape, 0.05)
    m = final_masks({c: p.astype(np.float32) for c, p in probs.items()}, AFFINE)
    assert np.array_equal(m["WT"], tumor | blob) and np.array_equal(m["ED"], tumor | blob)
    # Asked for the whole tumor alone (no core decoded), nothing is dropped.
    m = final_masks({"WT": np.where(tumor | blob, 0.9, 0.05).astype(np.float32)}, AFFINE)
    assert np.array_equal(m["WT"], tumor | blob)


def test_raw_core_evidence_keeps_a_tumor_whose_core_is_only_specks():
    shape = (48, 40, 40)
    tumor, blob = _ball(shape, (14, 20, 20), 9), _ball(shape, (36, 20, 20), 6)
    probs = {"WT": np.where(tumor | blob, 0.9, 0.05), "TC": np.full(shape, 0.05), "ET": np.full(shape, 0.05)}
    probs["TC"][36, 18:23, 18:23] = 0.9            # the blob keeps a 25 mm^3 core (kept by cleaning at 0.02 mL)
    probs["TC"][14, 20, 20] = 0.9                  # the tumor's core is one voxel: a speck cleaning removes
    probs = {c: p.astype(np.float32) for c, p in probs.items()}
    cleaned = final_masks(probs, AFFINE, min_lesion_ml=0.02)
    assert not cleaned["WT"][tumor].any() and cleaned["WT"][blob].all()
    raw = final_masks(probs, AFFINE, min_lesion_ml=0.02, core_evidence="raw")
    assert np.array_equal(raw["WT"], tumor | blob)
    assert not raw["TC"][tumor].any()               # the speck itself is still cleaned away
    assert np.array_equal(raw["NCR"] | raw["ED"] | raw["ET"], raw["WT"])
    import pytest
    with pytest.raises(ValueError, match="core_evidence"):
        final_masks(probs, AFFINE, core_evidence="loose")


def test_a_class_outside_the_chain_is_disjoint_from_it():
    """The resection cavity is decoded with the chain; a voxel both claim goes to the higher
    probability and the tumor regions still nest and add up."""
    assert labelling_sources(["RC"]) == ("WT", "TC", "ET", "RC")
    shape = (40, 40, 40)
    wt, tc = _ball(shape, (20, 20, 20), 12), _ball(shape, (20, 20, 20), 8)
    rc = _ball(shape, (20, 20, 12), 7)            # overlaps the tumor's lower part
    probs = {"WT": np.where(wt, 0.8, 0.05), "TC": np.where(tc, 0.8, 0.05), "ET": np.where(tc, 0.8, 0.05),
             "RC": np.where(rc, 0.9, 0.05)}
    probs["RC"][rc & tc] = 0.6                     # inside the core the tumor is more likely
    probs = {c: p.astype(np.float32) for c, p in probs.items()}
    m = final_masks(probs, AFFINE)
    assert not (m["RC"] & m["WT"]).any()
    assert (m["RC"] & wt & ~tc).any() and not (m["RC"] & tc).any()
    assert np.array_equal(m["WT"], m["NCR"] | m["ED"] | m["ET"]) and np.array_equal(m["TC"], m["NCR"] | m["ET"])
    assert not (m["TC"] & ~m["WT"]).any()


def test_masks_computed_in_the_support_box_equal_the_whole_grid_computation():
    """final_masks works inside the box of voxels at or above the threshold (a 1 mm scan's
    labelling at a fraction of the cost); the masks are those of the whole-grid computation."""
    from scipy import ndimage

    from vlseg.reasoning.labelling import _masks_in_box, final_masks

    rng = np.random.default_rng(7)
    shape = (70, 64, 50)
    base = ndimage.gaussian_filter(rng.random(shape), 2.0)
    base = (base - base.min()) / (base.max() - base.min())
    blob = np.zeros(shape, np.float32)
    blob[20:45, 18:40, 10:30] = 1.0
    blob = ndimage.gaussian_filter(blob, 3.0)
    probs = {"WT": np.clip(blob * 1.2 + 0.3 * (base - 0.5), 0, 1).astype(np.float32),
             "TC": np.clip(blob * 0.9 + 0.4 * (base - 0.5), 0, 1).astype(np.float32),
             "ET": np.clip(blob * 0.7 + 0.5 * (base - 0.5), 0, 1).astype(np.float32)}
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = (-35.0, -30.0, -20.0)
    for threshold in (0.3, 0.5, 0.9, 0.999):
        want = _masks_in_box(probs, affine, threshold=threshold, min_lesion_ml=0.05, core_evidence="cleaned")
        got = final_masks(probs, affine, threshold=threshold)
        assert got.keys() == want.keys()
        for c in want:
            assert np.array_equal(got[c], want[c]), (threshold, c)
