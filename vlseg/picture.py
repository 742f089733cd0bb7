"""The one picture convention of vlseg: orientation, side marks, windowing and mask colours.

Every picture (``vlseg render`` montages, the app's overlays and its slice viewer) is drawn in
the **radiological** convention: the patient's right on the viewer's left in axial and coronal
views, anterior at the top of axial views, superior at the top of coronal and sagittal views,
anterior on the left of sagittal views. Each picture carries the side marks of
:func:`side_marks` so nobody has to guess. Colours come from the vocabulary (``vlseg.vocab``).

Arrays are RAS+ ``(X, Y, Z)``; ``axis`` is the axis held fixed (0 sagittal, 1 coronal, 2 axial).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from vlseg import vocab
from vlseg.numbers import fmt_ml

CONVENTION = "radiological"
PLANES: dict[str, int] = {"sagittal": 0, "coronal": 1, "axial": 2}
ALPHA = 0.45  # overlay opacity


def display_plane(vol: np.ndarray, axis: int, index: int) -> np.ndarray:
    """2D display array (rows top->bottom, columns left->right) of one plane, radiological."""
    if axis == 2:  # axial: columns = x flipped (patient's right on the left), rows = y (A up)
        sl = vol[::-1, :, index]  # (X, Y)
    elif axis == 1:  # coronal: columns = x flipped, rows = z (S up)
        sl = vol[::-1, index, :]  # (X, Z)
    elif axis == 0:  # sagittal: columns = y (A on the left), rows = z (S up)
        sl = vol[index, ::-1, :]  # (Y, Z)
    else:
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    return sl.T[::-1]  # rows: second axis flipped so anterior/superior is at the top


def side_marks(axis: int) -> tuple[str, str]:
    """Letters for the (left edge, right edge) of a displayed plane."""
    return ("A", "P") if axis == 0 else ("R", "L")


def aspect(spacing: tuple[float, float, float] | list[float], axis: int) -> float:
    """Physical aspect (row spacing / column spacing) of a displayed plane."""
    sx, sy, sz = (float(s) for s in spacing)
    return {2: sy / sx, 1: sz / sx, 0: sz / sy}[axis]


def window(volume: np.ndarray, *, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """Display range: the ``low``/``high`` percentiles of the non-zero voxels."""
    vol = np.asarray(volume, dtype=np.float32)
    nz = vol[vol != 0]
    if nz.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(nz, [low, high]))
    return lo, hi if hi > lo else lo + 1.0


def blend(background: np.ndarray, masks: Mapping[str, np.ndarray], *,
          alpha: float = ALPHA) -> np.ndarray:
    """Colour a 2D uint8 image with 2D concept masks -> (H, W, 3) uint8 (vocabulary colours,
    composites painted first so nested parts stay visible)."""
    rgb = np.repeat(background[..., None].astype(np.float32), 3, axis=-1)  # (H, W, 3)
    colors = vocab.colors()
    for concept in vocab.draw_order():
        m = masks.get(concept)
        if m is None:
            continue
        sel = m.astype(bool)
        if sel.any():
            rgb[sel] = (1 - alpha) * rgb[sel] + alpha * np.asarray(colors[concept], np.float32)
    return rgb.clip(0, 255).astype(np.uint8)


def legend_label(code: str, volume_ml: float | None = None) -> str:
    """Legend text of one concept: code, name and (when measured) its volume."""
    label = f"{code} {vocab.name(code)}"
    if volume_ml is not None:
        label += f" ({fmt_ml(volume_ml)})"
    return label


def plane_axes(axis: int) -> tuple[tuple[int, bool], tuple[int, bool]]:
    """How :func:`display_plane` lays out a plane: ``((row_axis, row_flipped), (col_axis,
    col_flipped))``. Row ``r`` of the picture shows voxel ``N - 1 - r`` along ``row_axis`` when
    flipped, else voxel ``r`` (columns alike). Read off ``display_plane`` itself, so viewers
    that map clicks to voxels follow the one convention."""
    shape = (2, 3, 4)  # distinct sizes tell the axes apart
    found: dict[str, tuple[int, bool]] = {}
    for k in (a for a in range(3) if a != axis):
        probe = display_plane(np.indices(shape)[k], axis, 0)  # voxel index along k per pixel
        along_rows = probe.shape[0] == shape[k] and probe[0, 0] != probe[-1, 0]
        first = int(probe[0, 0])
        found["row" if along_rows else "col"] = (k, first == shape[k] - 1)
    return found["row"], found["col"]


def window_keeping(volume: np.ndarray, keep: np.ndarray | None = None, *, low: float = 0.5,
                   high: float = 99.99) -> tuple[float, float]:
    """Display range that never saturates what matters: the ``low``/``high`` percentiles of the
    non-zero voxels, with the top raised to the brightest voxel inside ``keep`` (a mask, e.g. the
    tumor) so no voxel of it is clipped to white."""
    lo, hi = window(volume, low=low, high=high)
    if keep is not None:
        sel = np.asarray(keep, dtype=bool)
        if sel.shape == np.shape(volume) and sel.any():
            hi = max(hi, float(np.asarray(volume, dtype=np.float32)[sel].max()))
    return lo, hi if hi > lo else lo + 1.0
