"""`vlseg render`: the 4 x 3 montage PNG with label contours, and its CLI errors."""
from __future__ import annotations

import numpy as np
import pytest

from vlseg.cli import main
from vlseg.io import load_case
from vlseg import vocab
from vlseg.render import render_case, slice_centre

CLASS_COLORS = {c: vocab.concept(c).hex_color for c in vocab.base_codes()}


def _rgb(path):
    import matplotlib.image as mpimg

    return mpimg.imread(path)[..., :3]


def _has_color(img: np.ndarray, hex_color: str, tol: float = 0.12) -> bool:
    rgb = np.array([int(hex_color[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return bool((np.abs(img - rgb).max(-1) < tol).sum() > 20)


def test_render_case_cli(phantom_case_2mm, tmp_path, capsys):
    out = tmp_path / "m.png"
    assert main(["render", str(phantom_case_2mm), "-o", str(out)]) == 0
    img = _rgb(out)
    assert img.shape[0] > 600 and img.shape[1] > 800
    for cls in ("ED",):                           # contours drawn in their class colour
        assert _has_color(img, CLASS_COLORS[cls])
    assert img.std() > 0.05                       # not a blank canvas
    case = load_case(phantom_case_2mm)
    c = slice_centre(case)
    assert case.labels["WT"][c]                   # the three planes cut through the tumor


def test_render_subset_without_labels(phantom_case_2mm, tmp_path):
    t1c = next(phantom_case_2mm.glob("*-t1c.nii.gz"))
    out = render_case({"t1c": t1c}, tmp_path / "one.png")
    img = _rgb(out)
    assert not _has_color(img, CLASS_COLORS["ED"])   # no labels -> no contours
    assert img.std() > 0.02


@pytest.mark.parametrize("target", ["dir", "txt"])
def test_render_bad_output_one_line(phantom_case_2mm, tmp_path, capsys, target):
    out = tmp_path if target == "dir" else tmp_path / "m.txt"
    assert main(["render", str(phantom_case_2mm), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("vlseg render: error:")


def test_render_missing_case_one_line(tmp_path, capsys):
    assert main(["render", str(tmp_path / "nope"), "-o", str(tmp_path / "m.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope" in err
    assert not (tmp_path / "m.png").exists()
