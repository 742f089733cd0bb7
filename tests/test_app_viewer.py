"""The slice viewer's data: sprite tiles are the radiological planes, geometry maps clicks back to
voxels, masks travel as bit fields with the shared colours, and the window never clips the tumor."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlseg import picture, vocab
from vlseg.app import viewer


def _case(shape=(20, 24, 16)):
    rng = np.random.default_rng(0)
    img = np.zeros(shape, np.float32)
    img[2:18, 3:21, 2:14] = 100 + 10 * rng.random((16, 18, 12))  # the "head"
    img[12:15, 6:10, 5:8] = np.linspace(400, 1000, 36).reshape(3, 4, 3)  # a bright "tumor", 1 % of the head
    tumor = np.zeros(shape, np.uint8)
    tumor[12:15, 6:10, 5:8] = 1
    return img, tumor


def test_plane_axes_follow_display_plane():
    vol = np.random.default_rng(1).random((5, 6, 7))
    for axis in range(3):
        (ra, rf), (ca, cf) = picture.plane_axes(axis)
        d = picture.display_plane(vol, axis, 3)
        for r in range(d.shape[0]):
            for c in range(d.shape[1]):
                idx = [3, 3, 3]
                idx[ra] = vol.shape[ra] - 1 - r if rf else r
                idx[ca] = vol.shape[ca] - 1 - c if cf else c
                assert d[r, c] == vol[tuple(idx)]


def test_sprite_tiles_are_display_planes():
    vol = np.arange(4 * 5 * 6, dtype=np.int32).reshape(4, 5, 6)
    for axis in range(3):
        sheet, cols = viewer.sprite(vol, axis)
        h, w = picture.display_plane(vol, axis, 0).shape
        for i in range(vol.shape[axis]):
            r, c = divmod(i, cols)
            assert np.array_equal(sheet[r * h:(r + 1) * h, c * w:(c + 1) * w], picture.display_plane(vol, axis, i))


def test_window_never_clips_the_tumor():
    img, tumor = _case()
    lo, hi = picture.window(img)  # the plain 0.5-99.5 % window saturates the bright tumor
    assert (img[tumor > 0] > hi).any()
    lo, hi = picture.window_keeping(img, tumor)
    assert not (img[tumor > 0] > hi).any() and lo < hi


def test_payload_sheets_geometry_and_colours(tmp_path):
    img, tumor = _case()
    vc = viewer.ViewerCase(images={"t1c": img, "t2f": img * 0.5}, spacing=(1.0, 1.0, 2.5),
                           out_dir=tmp_path, key="k1")
    assert vc.offset == (0, 0, 0) and vc.shape == (20, 24, 16)  # head box + margin
    masks = {"ET": tumor, "WT": np.maximum(tumor, np.roll(tumor, 2, axis=0))}
    p = vc.payload(seq="t1c", masks=masks, volumes_ml={"ET": 0.036, "WT": 0.06}, center=(13, 8, 6),
                   focus=3, url=lambda path: f"u/{path.name}")
    json.dumps(p)  # JSON-able
    assert p["seq"] == "t1c" and p["key"] == "k1" and p["focus"] == 3
    # Only the concepts asked, in vocabulary order, with the shared colours and the one format.
    assert [c["code"] for c in p["concepts"]] == ["ET", "WT"]
    assert [c["color"] for c in p["concepts"]] == [list(vocab.colors()[c]) for c in ("ET", "WT")]
    assert p["concepts"][0]["volume"] == "0.04 mL" and p["draw_order"][0] == "WT"
    planes = {q["name"]: q for q in p["planes"]}
    assert planes["axial"]["marks"] == ["R", "L"] and planes["sagittal"]["marks"] == ["A", "P"]
    assert planes["coronal"]["aspect"] == 2.5
    # The centre comes back in cropped coordinates.
    assert [c + o for c, o in zip(p["center"], p["offset"])] == [13, 8, 6]
    # The axial mask tile at the tumour slice has the ET and WT bits where display_plane puts them.
    ax = planes["axial"]
    sheet = np.asarray(Image.open(tmp_path / ax["mask"].split("/")[-1]))
    h, w = ax["tile"]
    z = 6 - p["offset"][2]
    r, c = divmod(z, ax["cols"])
    tile = sheet[r * h:(r + 1) * h, c * w:(c + 1) * w]
    bits = viewer.concept_bits()
    want = picture.display_plane(tumor[vc.box], 2, z).astype(bool)
    assert np.array_equal((tile & bits["ET"]) > 0, want)
    # Background: a JPEG per plane; the tumour is not saturated (window raised to its maximum).
    bg = np.asarray(Image.open(tmp_path / ax["bg"].split("/")[-1]))
    assert bg.shape == sheet.shape
    tumour_px = bg[r * h:(r + 1) * h, c * w:(c + 1) * w][want]
    assert tumour_px.max() < 250 and np.ptp(tumour_px) > 100  # contrast kept, nothing saturated
    # A new sequence makes its own sheets; the same one reuses them.
    p2 = vc.payload(seq="t2f", masks=masks, volumes_ml={}, center=None, focus=3, url=str)
    assert all("-t2f-" in q["bg"].rsplit("/", 1)[-1] for q in p2["planes"])
    n_files = len(list(tmp_path.iterdir()))
    vc.payload(seq="t2f", masks=masks, volumes_ml={}, center=None, focus=3, url=str)
    assert len(list(tmp_path.iterdir())) == n_files


def test_legend_of_the_current_answer_whole_tumor_off_and_slice_numbers(tmp_path):
    """Issue 22: the legend lists the current answer's regions, not the session's pile; the
    whole tumor starts off when its sub-regions are shown; captions can say 'slice i of n'."""
    img, tumor = _case()
    vc = viewer.ViewerCase(images={"t1c": img}, spacing=(1.0, 1.0, 1.0), out_dir=tmp_path, key="k")
    wt = np.maximum(tumor, np.roll(tumor, 2, axis=0))
    masks = {"ET": tumor, "ED": wt & ~tumor.astype(bool), "WT": wt, "NCR": np.zeros_like(tumor)}
    p = vc.payload(seq="t1c", masks=masks, volumes_ml={}, center=None, focus=1, url=str,
                   current=("ED", "ET", "WT"))
    assert [c["code"] for c in p["concepts"]] == ["ED", "ET", "WT"] and p["off_by_default"] == ["WT"]
    p = vc.payload(seq="t1c", masks=masks, volumes_ml={}, center=None, focus=2, url=str, current=("NCR",))
    assert [c["code"] for c in p["concepts"]] == ["NCR"] and p["off_by_default"] == []
    assert p["draw_order"] == ["NCR"] and p["full_shape"] == list(img.shape)
    js = (Path(viewer.__file__).parent / "static" / "viewer.js").read_text()
    assert "slice ${" in js and "of ${full}" in js and "off_by_default" in js


def test_no_masks_no_overlays(tmp_path):
    img, _ = _case()
    vc = viewer.ViewerCase(images={"t1n": img}, spacing=(1, 1, 1), out_dir=tmp_path, key="k")
    p = vc.payload(seq="t1n", masks={}, volumes_ml={}, center=None, focus=0, url=str)
    assert p["concepts"] == [] and all(q["mask"] is None for q in p["planes"])
    with pytest.raises(ValueError, match="not part of this case"):
        vc.background_sheets("t2w")
