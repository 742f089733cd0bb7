"""Montage of a case: the four sequences x three planes through the tumor, with label contours.

    vlseg render CASE_FOLDER -o case.png [--seg labels.nii.gz]

Slices go through the centroid of the whole tumor (or the centre of the volume when there is no
label). Orientation (radiological, with side marks on every panel), windowing and colours follow
``vlseg.picture``, the one picture convention shared with the app; the voxel aspect is kept.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from vlseg import picture, vocab
from vlseg.errors import InputError
from vlseg.fileio import atomic_path
from vlseg.io import Case, load_case
from vlseg.vocab import SEQUENCE_TITLES, SEQUENCES

PLANES: tuple[str, ...] = ("axial", "coronal", "sagittal")


def slice_centre(case: Case) -> tuple[int, int, int]:
    """RAS voxel the three planes pass through: the tumor voxel nearest the whole-tumor centroid
    (so multifocal tumors are still cut through a lesion), else the volume centre."""
    if case.labels is not None and case.labels["WT"].any():
        pts = np.argwhere(case.labels["WT"])
        near = pts[np.argmin(((pts - pts.mean(0)) ** 2).sum(1))]
        return tuple(int(v) for v in near)  # type: ignore[return-value]
    return tuple(n // 2 for n in case.shape)  # type: ignore[return-value]


def render_case(
    case: Case | str | os.PathLike | Mapping[str, str | os.PathLike],
    out: str | os.PathLike,
    *,
    seg: str | os.PathLike | None = None,
    title: str | None = None,
    dpi: int = 100,
) -> Path:
    """Write the montage PNG for ``case`` (a loaded Case or anything ``load_case`` accepts)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    if not isinstance(case, Case):
        case = load_case(case, label=seg)
    elif seg is not None:
        raise ValueError("seg can only be given with a case path, not with a loaded Case")
    centre = slice_centre(case)
    spacing = case.spacing
    colors = {c: vocab.concept(c).hex_color for c in vocab.base_codes()}

    fig, axes = plt.subplots(len(PLANES), len(SEQUENCES), figsize=(4 * len(SEQUENCES), 4 * len(PLANES)),
                             facecolor="black", squeeze=False)
    for col, seq in enumerate(SEQUENCES):
        vol = case.images.get(seq)
        if vol is not None:
            lo, hi = picture.window(vol)
        for row, plane in enumerate(PLANES):
            axis = picture.PLANES[plane]
            ax = axes[row, col]
            ax.set_facecolor("black")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"{seq} ({SEQUENCE_TITLES[seq]})", color="white", fontsize=11)
            if col == 0:
                ax.set_ylabel(plane, color="white", fontsize=11)
            if vol is None:
                ax.text(0.5, 0.5, "not present", color="gray", ha="center", va="center",
                        transform=ax.transAxes)
                continue
            sl = picture.display_plane(vol, axis, centre[axis])
            ax.imshow(sl, cmap="gray", vmin=lo, vmax=hi, origin="upper",
                      aspect=picture.aspect(spacing, axis), interpolation="nearest")
            left, right = picture.side_marks(axis)
            ax.text(0.02, 0.5, left, color="white", fontsize=10, va="center", ha="left",
                    transform=ax.transAxes)
            ax.text(0.98, 0.5, right, color="white", fontsize=10, va="center", ha="right",
                    transform=ax.transAxes)
            if case.labels is not None:
                for cls, color in colors.items():
                    if cls not in case.labels:
                        continue
                    m = picture.display_plane(case.labels[cls], axis, centre[axis])
                    if m.any():
                        ax.contour(m.astype(np.float32), levels=[0.5], colors=color,
                                   linewidths=1.0)
    handles = [Line2D([], [], color=color, lw=2, label=f"{c} ({vocab.name(c)})")
               for c, color in colors.items()]
    if case.labels is not None:
        fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False, labelcolor="white",
                   fontsize=11)
    where = f"slices through voxel {centre} (RAS), {picture.CONVENTION} view"
    fig.suptitle(f"{title or case.case_id}  -  {where}", color="white", fontsize=12)
    fig.tight_layout(rect=(0, 0.04, 1, 0.96))
    out = Path(out)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor="black")
    plt.close(fig)
    return out


def run_cli(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and out.is_dir():
        raise InputError("is a folder; give a .png file path for -o", str(out))
    if out.suffix.lower() != ".png":
        raise InputError("the montage is a PNG; give -o a path ending in .png", str(out))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create the folder ({e.strerror})", str(out.parent)) from None
    path = render_case(args.case, out, seg=args.seg)
    print(path)
    return 0
