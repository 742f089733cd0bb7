"""Overlay pictures: three planes, colours, legend, centring on the target."""
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


def test_legend_text_uses_the_one_number_format():
    from vlseg.picture import legend_label  # the overlay's legend (render.py uses it)

    assert legend_label("ET", 61.0) == "ET enhancing tumor (61 mL)"
    assert legend_label("ET", 0.354) == "ET enhancing tumor (0.35 mL)"
    assert legend_label("WT") == "WT whole tumor"


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
