"""What a scan must look like for an answer: its field of view, its slice spacing, and whether its
content looks like a skull-stripped brain MRI at all.

    check_geometry(grid)                  # InputError: too small a field of view, too coarse slices
    geometry_warnings(grid)               # ["Thick slices: 6 mm apart along inferior-superior; ..."]
    brain_warnings(images, affine)        # ["This does not look like a brain MRI (...); ..."]

``check_geometry`` needs only the grid (a header), so the CLI runs it before any model loads;
``Segmenter.set_case`` runs all three. Refusals are one-line :class:`InputError`\\ s; warnings are
sentences the answer text and answer.json carry (the answer is still given).

Thresholds, measured on the synthetic phantoms and the ICBM152 template (skull-stripped brains:
1.5-1.9 L of foreground filling ~46 % of its bounding box, neighbouring voxels correlated at
0.94-0.96, at 1 mm, 2 mm and 1x1x6 mm) against white noise (correlation 0.0, fill 0.99), a smooth
random field filling its box (9 L, fill 1.0) and a body-sized ellipse (18 L).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from vlseg.errors import InputError
from vlseg.io.volume import Grid, fmt_vec, ras_grid

MIN_FOV_MM = 60.0  # a whole brain is ~140 x 170 x 120 mm; a scan covering less is not one
MAX_SPACING_MM = 10.0  # slices farther apart than this cannot outline a tumor
THICK_SLICE_MM = 4.0  # answered, with a word that boundaries along that axis are coarse
AXES = ("left-right", "posterior-anterior", "inferior-superior")  # RAS+ voxel axes

BRAIN_ML = (400.0, 2600.0)  # plausible skull-stripped brain volume (infant to large adult)
MAX_FILL = 0.8  # a brain fills about half of its bounding box; a block fills all of it
MIN_NEIGHBOUR_CORR = 0.5  # anatomy is smooth at the voxel scale; noise is not
_FG_FRACTION = 0.1  # foreground: above 10 % of the 99th percentile of positive voxels


def check_geometry(grid: Grid, path: str | None = None) -> None:
    """Refuse grids no brain-tumor answer can come from: a field of view under ``MIN_FOV_MM`` or
    voxels coarser than ``MAX_SPACING_MM`` along an axis."""
    ras = ras_grid(grid)
    spacing = np.array(ras.spacing)
    fov = spacing * np.array(ras.shape)
    if (fov < MIN_FOV_MM).any():
        axis = AXES[int(np.argmin(fov))]
        raise InputError(f"the scan covers only {_mm(fov)} mm ({_shape(ras.shape)} voxels of "
                         f"{_mm(spacing)} mm), too small for a brain MRI: at least {MIN_FOV_MM:g} mm "
                         f"is needed along each axis ({axis} has {fov.min():.4g} mm); give the "
                         "whole-brain scan", path)
    if (spacing > MAX_SPACING_MM).any():
        axis = AXES[int(np.argmax(spacing))]
        raise InputError(f"voxels are {spacing.max():.4g} mm apart along {axis} (spacing "
                         f"{fmt_vec(spacing)} mm), too coarse to outline a tumor; at most "
                         f"{MAX_SPACING_MM:g} mm is supported: give a finer acquisition", path)


def geometry_warnings(grid: Grid) -> list[str]:
    """Answered but worth saying: slices thicker than ``THICK_SLICE_MM``."""
    spacing = np.array(ras_grid(grid).spacing)
    thick = [f"{s:.3g} mm apart along {AXES[i]}" for i, s in enumerate(spacing) if s > THICK_SLICE_MM]
    if not thick:
        return []
    return [f"Thick slices ({'; '.join(thick)}): boundaries and volumes along that axis are coarse."]


def brain_statistics(images: dict[str, np.ndarray], affine: np.ndarray) -> dict[str, float]:
    """Foreground volume (mL), how much of its bounding box it fills, and the correlation of
    neighbouring voxels along the finest axis, on the first present sequence (RAS+ arrays)."""
    img = next(images[s] for s in ("t1n", "t1c", "t2w", "t2f") if s in images)
    spacing = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    positive = img[img > 0][::7]
    if positive.size == 0:
        return {"volume_ml": 0.0, "fill": 0.0, "neighbour_corr": 0.0}
    fg = img > _FG_FRACTION * float(np.percentile(positive, 99))
    n_fg = int(np.count_nonzero(fg))
    box = [np.flatnonzero(fg.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    box_voxels = float(np.prod([b[-1] - b[0] + 1 for b in box]))
    # Neighbours along the finest axis, both in the foreground (thinned: a few 10^5 pairs).
    a = np.moveaxis(img, int(np.argmin(spacing)), 0)
    m = np.moveaxis(fg, int(np.argmin(spacing)), 0)
    both = m[1:] & m[:-1]
    x, y = a[1:][both], a[:-1][both]
    step = max(1, x.size // 200_000)
    x, y = x[::step].astype(np.float64), y[::step].astype(np.float64)
    corr = float(np.corrcoef(x, y)[0, 1]) if x.size > 2 and x.std() > 0 and y.std() > 0 else 0.0
    return {"volume_ml": n_fg * float(np.prod(spacing)) / 1000.0, "fill": n_fg / box_voxels,
            "neighbour_corr": corr}


def brain_warnings(images: dict[str, np.ndarray], affine: np.ndarray) -> list[str]:
    """One warning when the scan's content is far from a skull-stripped brain MRI, else none."""
    st = brain_statistics(images, affine)
    why = []
    lo, hi = BRAIN_ML
    if not lo <= st["volume_ml"] <= hi:
        why.append(f"its foreground is {st['volume_ml']:.0f} mL where a skull-stripped brain is "
                   "about 1000-1800 mL")
    if st["fill"] > MAX_FILL:
        why.append(f"it fills {100 * st['fill']:.0f}% of its bounding box like a block, not a head")
    if st["neighbour_corr"] < MIN_NEIGHBOUR_CORR:
        why.append("neighbouring voxels are uncorrelated, like noise rather than anatomy")
    if not why:
        return []
    return [f"This does not look like a skull-stripped brain MRI ({'; '.join(why)}); "
            "treat the answer as unreliable."]


def sequence_warnings(present: Iterable[str]) -> list[str]:
    """One warning when the sequences given cannot support a tumor reading: T1n alone (on the
    test phantoms whole-tumor Dice 0.54, and 40-110 mL of "tumor" on tumor-free brains and the
    MNI templates, where T1c or FLAIR give 0 mL; bench/presence.py report)."""
    if tuple(present) == ("t1n",):
        return ["Only a native T1 (T1n) was given: the model cannot tell tumor from normal brain on it "
                "reliably (it finds tumor in tumor-free brains); add T1c or FLAIR."]
    return []


def _mm(v) -> str:
    return "x".join(f"{float(x):.4g}" for x in v)


def _shape(shape) -> str:
    return "x".join(str(int(s)) for s in shape)
