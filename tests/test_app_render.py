"""Overlay pictures and the slice viewer: orientation, colours, legend, centring on the target."""
from __future__ import annotations

import numpy as np
from PIL import Image

from vlseg import vocab
from vlseg.app import render


def _volume(shape=(40, 48, 30)):
    x, y, z = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    img = (100 + x + 2 * y + 3 * z).astype(np.float32)
    return img


def test_target_center_inside_mask():
    m = np.zeros((40, 48, 30), np.uint8)
    m[30:34, 5:9, 20:23] = 1  # patient's right (high x), posterior (low y), superior (high z)
    c = render.target_center({"ET": m}, m.shape)
    assert m[c] == 1
    assert render.target_center({"ET": np.zeros_like(m)}, m.shape) == (20, 24, 15)


def test_axial_slice_radiological_orientation_and_colour():
    img = _volume()
    bg = render.to_display_uint8(img)
    m = np.zeros(img.shape, np.uint8)
    m[30:34, 40:44, 10] = 1  # right, anterior
    rgb = render.axial_slice(bg, {"ET": m}, 10)
    assert rgb.shape == (48, 40, 3) and rgb.dtype == np.uint8
    c = rgb.astype(int)
    tinted = c[..., 2] < c[..., 0] - 20  # yellow: blue channel clearly lower
    rows, cols = np.nonzero(tinted)
    # Radiological: patient's right (high x) on the viewer's left; anterior (high y) at the top.
    assert cols.max() < 20 and rows.max() < 24
    assert tinted.sum() == 16
    # Toggled off -> plain grey.
    grey = render.axial_slice(bg, {"ET": m}, 10, enabled=["WT"])
    assert np.all(grey[..., 0] == grey[..., 2])


def test_render_overlay_png_has_three_planes_and_legend(tmp_path):
    img = _volume()
    masks = {c: np.zeros(img.shape, np.uint8) for c in ("WT", "ET")}
    masks["WT"][10:25, 10:30, 8:20] = 1
    masks["ET"][14:18, 15:20, 12:15] = 1
    out = render.render_overlay({"t2f": img, "t1c": img * 2}, masks, (1.0, 1.0, 2.5),
                                tmp_path / "ov.png", volumes_ml={"ET": 0.06, "WT": 3.6})
    im = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert im.shape[1] > 2 * im.shape[0]  # three panels side by side
    for c in ("WT", "ET"):
        col = np.array(vocab.colors()[c])
        # Legend patch: pixels of the pure concept colour are drawn.
        assert (np.abs(im - col).sum(axis=-1) < 30).sum() > 20, c
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write left no temp file
