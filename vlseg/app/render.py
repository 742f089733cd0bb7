"""Pictures of masks over the scan: the three-plane overlay shown with each answer in the chat.

All arrays are RAS+ ``(X, Y, Z)``. Orientation, side marks and colours follow the one picture
convention of ``vlseg.picture`` (radiological); the window never clips the tumor
(:func:`vlseg.picture.window_keeping`); legend volumes use the one number format of
``vlseg.numbers``. The interactive slice viewer's data lives in ``viewer.py``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from vlseg import picture, vocab
from vlseg.fileio import atomic_path
from vlseg.picture import ALPHA, blend, legend_label

BACKGROUND_PREFERENCE: tuple[str, ...] = ("t1c", "t2f", "t1n", "t2w")
__all__ = ["ALPHA", "blend", "crop_box", "pick_background", "render_overlay",
           "target_center", "windowed_uint8"]


def windowed_uint8(volume: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """Window to uint8 by :func:`vlseg.picture.window_keeping` (no voxel of ``keep`` clipped)."""
    vol = np.asarray(volume, dtype=np.float32)
    lo, hi = picture.window_keeping(vol, keep)
    return (np.clip((vol - lo) / (hi - lo), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def pick_background(images: Mapping[str, np.ndarray]) -> tuple[str, np.ndarray]:
    """The sequence shown under the masks: T1c if given, else FLAIR, T1, T2."""
    for seq in BACKGROUND_PREFERENCE:
        if seq in images:
            return seq, images[seq]
    raise ValueError("no image to display")


def target_center(masks: Mapping[str, np.ndarray], shape: Sequence[int]) -> tuple[int, int, int]:
    """Voxel through which the three planes pass: centre of mass of all masks, else the middle."""
    union = None
    for m in masks.values():
        union = m.astype(bool) if union is None else union | m.astype(bool)
    if union is None or not union.any():
        return tuple(int(s) // 2 for s in shape)  # type: ignore[return-value]
    idx = np.argwhere(union)
    com = idx.mean(axis=0)
    # Snap to the nearest voxel that is inside the mask, so every plane cuts the target.
    nearest = idx[np.argmin(((idx - com) ** 2).sum(axis=1))]
    return tuple(int(v) for v in nearest)  # type: ignore[return-value]


def crop_box(volume: np.ndarray, margin: int = 4) -> tuple[slice, slice, slice]:
    """Bounding box of the non-zero voxels, grown by ``margin``; the whole volume if empty."""
    nz = np.argwhere(np.asarray(volume) != 0)
    if nz.size == 0:
        return tuple(slice(0, s) for s in volume.shape)  # type: ignore[return-value]
    lo = np.maximum(nz.min(axis=0) - margin, 0)
    hi = np.minimum(nz.max(axis=0) + margin + 1, volume.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))  # type: ignore[return-value]


def render_overlay(images: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray],
                   spacing: Sequence[float], out_path: str | Path, *,
                   title: str | None = None, volumes_ml: Mapping[str, float | None] | None = None,
                   ) -> Path:
    """Three orthogonal slices through the target, one colour per concept, legend -> PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    seq, vol = pick_background(images)
    union = None
    for m in masks.values():
        union = np.asarray(m).astype(bool) if union is None else union | np.asarray(m).astype(bool)
    bg = windowed_uint8(vol, union)
    # Crop to the head (non-zero voxels, plus a margin) so the brain fills the panels.
    box = crop_box(vol)
    bg = bg[box]
    masks = {c: np.asarray(m)[box] for c, m in masks.items()}
    ci, cj, ck = target_center(masks, bg.shape)
    ox, oy, oz = (b.start for b in box)  # titles give voxel indices of the full RAS+ volume
    planes = [  # (title, axis, index, physical aspect = row spacing / col spacing)
        (f"axial z={ck + oz}", 2, ck, picture.aspect(spacing, 2)),
        (f"coronal y={cj + oy}", 1, cj, picture.aspect(spacing, 1)),
        (f"sagittal x={ci + ox}", 0, ci, picture.aspect(spacing, 0)),
    ]
    fig = Figure(figsize=(10.5, 4.2), dpi=90, facecolor="black")
    axes = fig.subplots(1, 3)
    for ax, (name, axis, index, aspect) in zip(axes, planes):
        sl_masks = {c: picture.display_plane(m, axis, index) for c, m in masks.items()}
        ax.imshow(blend(picture.display_plane(bg, axis, index), sl_masks), aspect=aspect, interpolation="nearest")
        ax.set_title(name, color="white", fontsize=9)
        ax.set_axis_off()
        h, w = picture.display_plane(bg, axis, index).shape
        left, right = picture.side_marks(axis)
        ax.text(1, h / 2, left, color="white", fontsize=9, va="center", ha="left")
        ax.text(w - 2, h / 2, right, color="white", fontsize=9, va="center", ha="right")
    handles = []
    colors = vocab.colors()
    for concept in vocab.codes():
        if concept not in masks:
            continue
        label = legend_label(concept, (volumes_ml or {}).get(concept))
        if not np.asarray(masks[concept]).any():
            label += " (none found)"
        handles.append(Patch(facecolor=np.asarray(colors[concept]) / 255.0, label=label))
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 3), fontsize=9,
                   facecolor="black", edgecolor="gray", labelcolor="white", frameon=True)
    fig.suptitle((title or f"background: {seq}") + f"  ({picture.CONVENTION} view)",
                 color="white", fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.86, bottom=0.16 if handles else 0.02, wspace=0.04)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format="png", facecolor="black")
    return out_path
