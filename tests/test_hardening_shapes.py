"""A catalogue of scan shapes (issue 10, point 3): each one is answered or refused with one line.

Answered shapes are resampled from one 2 mm phantom (thick slices along each axis, 3-7 mm, the
reported 240x240x26 at 1x1x6 mm, anisotropic and LPS grids) and run through the bundled tiny
model, atlas registration included. Refused shapes fail with an InputError naming the reason
(field of view, spacing, 2D) through the Segmenter and, before the model loads, the CLI.
A volume of noise is answered with a "does not look like a brain MRI" warning (point 6).
"""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vlseg.cli import main
from vlseg.errors import InputError
from vlseg.io import brain_warnings, load_case
from vlseg.segmenter import Segmenter

QUERY = "how big is the whole tumor?"


@pytest.fixture(scope="module")
def seg():
    return Segmenter.from_pretrained(None)


@pytest.fixture(scope="module")
def phantom_arrays(phantom_case_2mm):
    """{sequence: (X, Y, Z) float32} of the 2 mm phantom (RAS+, 120x120x78)."""
    case = load_case(phantom_case_2mm)
    return case.images, np.diag([2.0, 2.0, 2.0, 1.0]) @ np.eye(4)


def _write(folder: Path, images: dict[str, np.ndarray], affine: np.ndarray) -> Path:
    folder.mkdir(parents=True)
    for seq, arr in images.items():
        nib.save(nib.Nifti1Image(arr.astype(np.float32), affine), folder / f"{folder.name}-{seq}.nii.gz")
    return folder


def _resampled(images, spacing_mm, *, shape=None):
    """The 2 mm phantom on a grid of ``spacing_mm`` (same field of view), area/linear resampling."""
    src = np.array(next(iter(images.values())).shape)
    shape = shape or tuple(int(round(n * 2.0 / s)) for n, s in zip(src, spacing_mm))
    out = {}
    for seq in ("t1c", "t2f"):
        t = torch.from_numpy(np.ascontiguousarray(images[seq]))[None, None]
        out[seq] = F.interpolate(t, size=shape, mode="trilinear", align_corners=False)[0, 0].numpy()
    return out


# name: (spacing in mm (x, y, z), flip to LPS)
ANSWERED = {
    "thick_z_6mm_240x240x26": ((1.0, 1.0, 6.0), False),  # the reported scan
    "thick_z_3mm": ((2.0, 2.0, 3.0), False),
    "thick_z_7mm": ((2.0, 2.0, 7.0), False),
    "thick_x_5mm": ((5.0, 2.0, 2.0), False),
    "thick_y_4mm_lps": ((2.0, 4.0, 2.0), True),
    "anisotropic_1.5x2.5x3.5": ((1.5, 2.5, 3.5), False),
    "isotropic_2mm": ((2.0, 2.0, 2.0), False),
}


FAST = ("thick_z_6mm_240x240x26", "thick_x_5mm")  # the rest (~5 s each) run with the slow tests


@pytest.mark.parametrize("name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow)
                                  for n in ANSWERED])
def test_shapes_are_answered(name, seg, phantom_arrays, tmp_path):
    images, _ = phantom_arrays
    spacing, lps = ANSWERED[name]
    shape = (240, 240, 26) if name.startswith("thick_z_6mm") else None
    arrays = _resampled(images, spacing, shape=shape)
    affine = np.diag([*spacing, 1.0])
    if lps:  # same voxels stored left-right and front-back flipped
        arrays = {k: v[::-1, ::-1].copy() for k, v in arrays.items()}
        affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    folder = _write(tmp_path / name, arrays, affine)
    info = seg.set_case(folder)
    answer = seg.ask(QUERY)
    wt = answer.targets[0]
    assert wt["concept"] == "WT" and np.isfinite(wt["volume_ml"])
    assert answer.masks["WT"].shape == nib.load(next(folder.glob("*-t2f.nii.gz"))).shape
    assert "Location unavailable" not in answer.text  # atlas registration adapted to the grid
    thick = max(spacing) > 4.0
    assert any("Thick slices" in w for w in answer.warnings) == thick
    assert not any("brain MRI" in w for w in answer.warnings), answer.warnings
    assert answer.to_json()["warnings"] == answer.warnings == info["warnings"]


REFUSED = {
    # name: (shape, spacing mm, words in the one-line reason)
    "8x8x8_at_1mm": ((8, 8, 8), (1.0, 1.0, 1.0), "too small for a brain MRI"),
    "16cubed_at_2mm": ((16, 16, 16), (2.0, 2.0, 2.0), "too small for a brain MRI"),
    "slab_240x240x3_at_6mm": ((240, 240, 3), (1.0, 1.0, 6.0), "inferior-superior has 18 mm"),
    "40mm_cube": ((40, 40, 40), (1.0, 1.0, 1.0), "at least 60 mm"),
    "12mm_slices": ((120, 120, 12), (2.0, 2.0, 12.0), "too coarse"),
    "2d_slice": ((240, 240, 1), (1.0, 1.0, 1.0), "is 2D"),
}


def _noise(shape, spacing, seed=0):
    rng = np.random.default_rng(seed)
    return {"t2f": (rng.random(shape) * 100 + 10).astype(np.float32)}, np.diag([*spacing, 1.0])


@pytest.mark.parametrize("name", list(REFUSED))
def test_shapes_are_refused_with_the_reason(name, seg, tmp_path, capsys, monkeypatch):
    shape, spacing, words = REFUSED[name]
    folder = _write(tmp_path / name, *_noise(shape, spacing))
    if len([s for s in shape if s > 1]) == 3:
        with pytest.raises(InputError, match=words):
            seg.set_case(folder)
    # The CLI refuses it with one line and exit 2 before any model loads.
    monkeypatch.setattr(Segmenter, "from_pretrained",
                        classmethod(lambda cls, *a, **k: pytest.fail("model loaded")))
    rc = main(["segment", "--case", str(folder), "--query", QUERY, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and words in lines[0], err


def test_the_network_refuses_what_is_smaller_than_its_coarsest_level(seg):
    """Below the field-of-view rule (e.g. a caller that skips it), prepare() itself refuses."""
    from vlseg.io import Case, Grid
    from vlseg.model.inference import prepare

    images, affine = _noise((8, 8, 8), (1.0, 1.0, 1.0))
    case = Case(images=images, affine=affine, source_grid=Grid(shape=(8, 8, 8), affine=affine),
                labels=None, case_id="tiny")
    with pytest.raises(InputError, match="the network needs at least 16 voxels"):
        prepare(seg.model, case)


def test_a_small_brain_box_in_a_big_volume_is_padded_not_crashed(seg):
    """A volume with only a few nonzero voxels crops to a tiny box: padded, then answered."""
    from vlseg.io import Case, Grid

    img = np.zeros((80, 80, 80), np.float32)
    img[40:44, 40:44, 40:44] = np.random.default_rng(0).random((4, 4, 4)) + 1
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    case = Case(images={"t1n": img}, affine=affine, source_grid=Grid(shape=img.shape, affine=affine),
                labels=None, case_id="speck")
    seg.set_case(case)
    answer = seg.ask(QUERY)
    assert answer.targets and any("brain MRI" in w for w in answer.warnings)


def test_noise_is_answered_with_a_not_a_brain_warning(seg, tmp_path):
    folder = _write(tmp_path / "noise", *_noise((64, 64, 64), (2.0, 2.0, 2.0)))
    seg.set_case(folder)
    answer = seg.ask(QUERY)
    assert answer.targets[0]["concept"] == "WT"  # the answer is still given
    warning = next(w for w in answer.warnings if "does not look like a skull-stripped brain MRI" in w)
    assert warning in answer.text and answer.to_json()["warnings"] == answer.warnings
    assert "uncorrelated" in warning


def test_brain_statistics_pass_real_anatomy(phantom_arrays):
    images, affine = phantom_arrays
    assert brain_warnings(images, affine) == []
    import scipy.ndimage as ndi

    field = ndi.gaussian_filter(np.random.default_rng(1).random((120, 120, 80)), 3).astype(np.float32) + 1
    (warning,) = brain_warnings({"t1n": field}, np.diag([2.0, 2.0, 2.0, 1.0]))
    assert "mL" in warning and "bounding box" in warning  # smooth, but a block of 9 L
