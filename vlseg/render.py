"""Montage of a case: the four sequences x three planes through the tumor, with label contours.

    vlseg render CASE_FOLDER -o case.png [--seg labels.nii.gz]

Slices go through the centroid of the whole tumor (or the centre of the volume when there is no
label). Images are shown in RAS+ (neurological convention: the patient's right on the right of
axial and coronal views; anterior on the right of sagittal views), with the voxel aspect ratio.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from vlseg.concepts import BASE_CONCEPTS, CONCEPT_NAMES, SEQUENCES
from vlseg.errors import InputError
from vlseg.fileio import atomic_path
from vlseg.io import Case, load_case

PLANES: tuple[str, ...] = ("axial", "coronal", "sagittal")
CLASS_COLORS: dict[str, str] = {"NCR": "#ff3b30", "ED": "#ffd60a", "ET": "#30d5ff"}
SEQUENCE_TITLES: dict[str, str] = {"t1n": "T1 native", "t1c": "T1 post-contrast", "t2w": "T2",
                                   "t2f": "T2-FLAIR"}


def slice_centre(case: Case) -> tuple[int, int, int]:
    """RAS voxel the three planes pass through: the tumor voxel nearest the whole-tumor centroid
    (so multifocal tumors are still cut through a lesion), else the volume centre."""
    if case.labels is not None and case.labels["WT"].any():
        pts = np.argwhere(case.labels["WT"])
        near = pts[np.argmin(((pts - pts.mean(0)) ** 2).sum(1))]
        return tuple(int(v) for v in near)  # type: ignore[return-value]
    return tuple(n // 2 for n in case.shape)  # type: ignore[return-value]


def _plane(vol: np.ndarray, plane: str, c: tuple[int, int, int]) -> np.ndarray:
    """2D slice oriented for imshow(origin="lower"): rows = vertical axis."""
    if plane == "axial":
        return vol[:, :, c[2]].T      # x right, y (anterior) up
    if plane == "coronal":
        return vol[:, c[1], :].T      # x right, z (superior) up
    return vol[c[0], :, :].T          # y (anterior) right, z up


def _aspect(spacing: tuple[float, float, float], plane: str) -> float:
    h, v = {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}[plane]
    return spacing[v] / spacing[h]


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

    fig, axes = plt.subplots(len(PLANES), len(SEQUENCES), figsize=(4 * len(SEQUENCES), 4 * len(PLANES)),
                             facecolor="black", squeeze=False)
    for col, seq in enumerate(SEQUENCES):
        vol = case.images.get(seq)
        if vol is not None:
            nz = vol[vol != 0]
            lo, hi = np.percentile(nz, [0.5, 99.5]) if nz.size else (0.0, 1.0)
        for row, plane in enumerate(PLANES):
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
            ax.imshow(_plane(vol, plane, centre), cmap="gray", vmin=lo, vmax=max(hi, lo + 1e-6),
                      origin="lower", aspect=_aspect(spacing, plane), interpolation="nearest")
            if case.labels is not None:
                for cls in BASE_CONCEPTS:
                    m = _plane(case.labels[cls], plane, centre)
                    if m.any():
                        ax.contour(m.astype(np.float32), levels=[0.5], colors=CLASS_COLORS[cls],
                                   linewidths=1.0)
    handles = [Line2D([], [], color=CLASS_COLORS[c], lw=2, label=f"{c} ({CONCEPT_NAMES[c]})")
               for c in BASE_CONCEPTS]
    if case.labels is not None:
        fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False, labelcolor="white",
                   fontsize=11)
    where = f"slices through voxel {centre} (RAS)"
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
