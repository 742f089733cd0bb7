"""The three-plane slice viewer's data: per-plane sprite sheets written beside the session's answers.

The browser never slices volumes. For each plane (axial, coronal, sagittal) this module writes
one **sprite sheet**: every slice of that plane, already in the radiological display orientation of
``vlseg.picture.display_plane``, tiled in a grid. The browser (``static/viewer.js``) only copies
tile ``i`` to a canvas, so scrolling is instant and needs no server round trip.

* background: one JPEG sheet per plane and sequence, windowed per sequence by
  :func:`vlseg.picture.window_keeping` (percentiles, raised so no tumor voxel is clipped once masks
  are known); made when a sequence is first shown;
* masks: one PNG sheet per plane whose grey value is a bit field of the concepts found so far
  (bit ``k`` = ``vocab.codes()[k]``); the browser colours them from the shared colour table;
* geometry: which voxel axis runs along rows/columns (:func:`vlseg.picture.plane_axes`), the
  physical aspect and the side marks, so clicks map back to voxels for linked crosshairs.

Everything is cropped to the head (non-zero voxels of any sequence, plus a margin). Payload for a
240×240×155 scan at 1 mm: about 0.3–1 MB of JPEG per sequence and a few kB of PNG masks.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from vlseg import picture, vocab
from vlseg.fileio import atomic_path
from vlseg.numbers import fmt_ml
from vlseg.segmenter.compare import CHANGE_COLORS, CHANGE_LABELS, CHANGE_NAMES
from vlseg.vocab import SEQUENCE_TITLES, SEQUENCES

PLANE_ORDER: tuple[str, ...] = ("axial", "coronal", "sagittal")
SEQUENCE_BUTTONS: dict[str, str] = {"t1n": "T1", "t1c": "T1c", "t2w": "T2", "t2f": "FLAIR"}
MAX_BITS = 8  # concepts one PNG grey value can carry
JPEG_QUALITY = 88
CROP_MARGIN = 3


def head_box(images: Mapping[str, np.ndarray], margin: int = CROP_MARGIN) -> tuple[slice, slice, slice]:
    """Bounding box of voxels non-zero in any sequence, grown by ``margin`` (whole grid if empty)."""
    any_nz = None
    for v in images.values():
        nz = np.asarray(v) != 0
        any_nz = nz if any_nz is None else any_nz | nz
    assert any_nz is not None, "no images"
    idx = [np.flatnonzero(any_nz.any(axis=tuple(a for a in range(3) if a != k))) for k in range(3)]
    if any(i.size == 0 for i in idx):
        return tuple(slice(0, s) for s in any_nz.shape)  # type: ignore[return-value]
    return tuple(slice(max(int(i[0]) - margin, 0), min(int(i[-1]) + margin + 1, s))  # type: ignore[return-value]
                 for i, s in zip(idx, any_nz.shape))


def sprite(volume: np.ndarray, axis: int) -> tuple[np.ndarray, int]:
    """All slices of ``volume`` along ``axis`` in display orientation, tiled -> (sheet, n_cols)."""
    n = volume.shape[axis]
    first = picture.display_plane(volume, axis, 0)
    h, w = first.shape
    cols = max(1, math.ceil(math.sqrt(n * h / max(w, 1))))  # roughly square sheets
    rows = math.ceil(n / cols)
    sheet = np.zeros((rows * h, cols * w), dtype=volume.dtype)
    for i in range(n):
        r, c = divmod(i, cols)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = picture.display_plane(volume, axis, i)
    return sheet, cols


def concept_bits(codes: Sequence[str] | None = None) -> dict[str, int]:
    """Concept -> bit value in the mask sheets (the first :data:`MAX_BITS` vocabulary codes)."""
    codes = tuple(codes) if codes is not None else vocab.codes()
    return {c: 1 << k for k, c in enumerate(codes[:MAX_BITS])}


def bitfield(masks: Mapping[str, np.ndarray], bits: Mapping[str, int]) -> np.ndarray:
    """Concept masks -> one uint8 volume whose bits say which concepts cover each voxel."""
    out = None
    for c, m in masks.items():
        if c not in bits:
            continue
        layer = np.asarray(m).astype(bool).astype(np.uint8) * np.uint8(bits[c])
        out = layer if out is None else out | layer
    return out


@dataclass
class ViewerCase:
    """One case's viewer: its images (RAS+), spacing and where its sprite sheets go."""

    images: Mapping[str, np.ndarray]
    spacing: tuple[float, float, float]
    out_dir: Path
    key: str  # changes with the case (the browser resets its crosshair on a new key)
    box: tuple[slice, slice, slice] | None = None  # the head's box; None: found from the images
    _base_window: dict[str, tuple[float, float]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if not self.images:
            raise ValueError("a viewer needs at least one image")
        if self.box is None:
            self.box = head_box(self.images)
        self.out_dir = Path(self.out_dir)

    @property
    def sequences(self) -> list[str]:
        return [s for s in SEQUENCES if s in self.images]

    @property
    def offset(self) -> tuple[int, int, int]:
        return tuple(int(b.start) for b in self.box)  # type: ignore[return-value]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(b.stop - b.start) for b in self.box)  # type: ignore[return-value]

    def window(self, seq: str, keep: np.ndarray | None = None) -> tuple[float, float]:
        """Per-sequence display window; never clips a voxel inside ``keep`` (full-grid mask)."""
        if seq not in self._base_window:
            self._base_window[seq] = picture.window_keeping(self.images[seq])
        lo, hi = self._base_window[seq]
        if keep is not None and keep.any():
            hi = max(hi, float(np.asarray(self.images[seq], np.float32)[keep.astype(bool)].max()))
        return lo, hi

    # ------------------------------------------------------------------ sheets on disk
    def background_sheets(self, seq: str, keep: np.ndarray | None = None) -> dict[str, Path]:
        """JPEG sheets of sequence ``seq`` per plane (made once per sequence and window)."""
        if seq not in self.images:
            raise ValueError(f"sequence {seq} is not part of this case")
        lo, hi = self.window(seq, keep)
        tag = hashlib.sha1(f"{lo:.4g}:{hi:.4g}".encode()).hexdigest()[:8]
        paths = {p: self.out_dir / f"bg-{self.key}-{seq}-{p}-{tag}.jpg" for p in PLANE_ORDER}
        if all(path.is_file() for path in paths.values()):
            return paths
        vol = np.asarray(self.images[seq], dtype=np.float32)[self.box]
        u8 = (np.clip((vol - lo) / (hi - lo), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        for plane, path in paths.items():
            sheet, _ = sprite(u8, picture.PLANES[plane])
            _save(Image.fromarray(sheet, mode="L"), path, "JPEG", quality=JPEG_QUALITY)
        return paths

    def mask_sheets(self, masks: Mapping[str, np.ndarray], bits: Mapping[str, int]) -> dict[str, Path] | None:
        """PNG bit-field sheets of the masks per plane; None without masks."""
        field_ = bitfield({c: np.asarray(m)[self.box] for c, m in masks.items()}, bits)
        if field_ is None:
            return None
        tag = hashlib.sha1(field_.tobytes()).hexdigest()[:10]
        paths = {p: self.out_dir / f"mask-{p}-{tag}.png" for p in PLANE_ORDER}
        if not all(path.is_file() for path in paths.values()):
            for plane, path in paths.items():
                sheet, _ = sprite(field_, picture.PLANES[plane])
                _save(Image.fromarray(sheet, mode="L"), path, "PNG", optimize=False, compress_level=6)
        return paths

    # ------------------------------------------------------------------ the payload
    def geometry(self) -> list[dict[str, Any]]:
        """Per plane: axes along rows/columns, sizes, sprite grid, aspect, side marks."""
        planes = []
        for name in PLANE_ORDER:
            axis = picture.PLANES[name]
            (ra, rf), (ca, cf) = picture.plane_axes(axis)
            h, w = self.shape[ra], self.shape[ca]
            n = self.shape[axis]
            cols = max(1, math.ceil(math.sqrt(n * h / max(w, 1))))
            planes.append({"name": name, "axis": axis, "row": [ra, rf], "col": [ca, cf],
                           "n": n, "tile": [h, w], "cols": cols,
                           "aspect": round(picture.aspect(self.spacing, axis), 4),
                           "marks": list(picture.side_marks(axis))})
        return planes

    def payload(self, *, seq: str, masks: Mapping[str, np.ndarray], volumes_ml: Mapping[str, float | None],
                center: Sequence[int] | None, focus: int, url: Any,
                current: Sequence[str] = ()) -> dict[str, Any]:
        """Everything the browser needs, as JSON-able data. ``url(path)`` makes a file URL;
        ``center`` (full-grid voxel) moves the crosshair when ``focus`` changes. ``current``:
        the latest answer's concepts, the only ones in the legend and drawn (issue 22: the
        legend does not pile up every region of the session); a region holding another shown
        one (WT around NCR, ED, ET) starts switched off (``off_by_default``) so it does not wash
        out the sub-regions."""
        bits = concept_bits()
        union = None
        for m in masks.values():
            union = np.asarray(m).astype(bool) if union is None else union | np.asarray(m).astype(bool)
        bg = self.background_sheets(seq, union)
        mk = self.mask_sheets(masks, bits) if masks else None
        planes = self.geometry()
        for p in planes:
            p["bg"] = url(bg[p["name"]])
            p["mask"] = url(mk[p["name"]]) if mk else None
        colors = vocab.colors()
        shown = [c for c in vocab.codes() if c in masks and c in bits and (not current or c in current)]
        parts = {c: set(vocab.concept(c).parts or (c,)) for c in shown}
        off_by_default = [c for c in shown if any(o != c and parts[o] < parts[c] for o in shown)]
        concepts = [{"code": c, "name": vocab.name(c), "color": list(colors[c]), "bit": bits[c],
                     "found": bool(np.asarray(masks[c]).any()),
                     "volume": None if volumes_ml.get(c) is None else fmt_ml(volumes_ml[c])}
                    for c in shown]
        off = self.offset
        if center is None:
            ctr = [s // 2 for s in self.shape]
        else:
            ctr = [int(np.clip(int(v) - o, 0, s - 1)) for v, o, s in zip(center, off, self.shape)]
        full = next(iter(self.images.values())).shape
        return {"key": self.key, "focus": int(focus), "center": ctr, "offset": list(off),
                "shape": list(self.shape), "full_shape": [int(v) for v in full],
                "off_by_default": off_by_default, "seq": seq, "seq_title": SEQUENCE_TITLES.get(seq, seq),
                "planes": planes, "concepts": concepts,
                "draw_order": [c for c in vocab.draw_order() if c in shown],
                "opacity": picture.ALPHA, "convention": picture.CONVENTION}


def change_classes(found: np.ndarray | None = None) -> list[dict[str, Any]]:
    """The change map's classes as viewer layers: one bit each, colour and name (``found``: the
    change map, to say which classes occur)."""
    return [{"code": name, "name": CHANGE_NAMES[name], "color": list(CHANGE_COLORS[name]), "bit": 1 << k,
             "found": True if found is None else bool(np.any(found == value)), "volume": None}
            for k, (name, value) in enumerate(CHANGE_LABELS.items())]


@dataclass
class PairView:
    """Two time points side by side on the baseline's grid: the baseline with its masks, and the
    follow-up registered onto it with the change coloured (grown, shrunk, new lesion). Both
    panels share one geometry, so the crosshair and the slice are the same voxel in both."""

    baseline: ViewerCase
    followup: ViewerCase  # the follow-up's images on the baseline grid, with the baseline's box
    masks: Mapping[str, np.ndarray]  # the baseline's masks (RAS+, baseline grid)
    change: np.ndarray  # CHANGE_LABELS values on the baseline grid
    volumes_ml: Mapping[str, float | None] = field(default_factory=dict)
    titles: tuple[str, str] = ("Baseline", "Follow-up, registered to the baseline")

    def __post_init__(self) -> None:
        if next(iter(self.baseline.images.values())).shape != self.change.shape:
            raise ValueError("the change map must be on the baseline grid")
        if self.followup.box != self.baseline.box:
            raise ValueError("both panels must share the baseline's box (one geometry)")

    @property
    def sequences(self) -> list[str]:
        return [s for s in self.baseline.sequences if s in self.followup.images]

    def payload(self, *, seq: str, url: Any, center: Sequence[int] | None = None,
                focus: int = 0) -> dict[str, Any]:
        """The single viewer's payload for the baseline, plus ``panels`` (baseline, follow-up:
        per-plane background and mask sheets, and which layer list colours the mask) and
        ``change`` (the change classes)."""
        d = self.baseline.payload(seq=seq, masks=self.masks, volumes_ml=self.volumes_ml, center=center,
                                  focus=focus, url=url)
        classes = change_classes(self.change)
        bits = {c["code"]: c["bit"] for c in classes}
        bg = self.followup.background_sheets(seq, self.change > 0)
        sheets = self.followup.mask_sheets({c: self.change == v for c, v in CHANGE_LABELS.items()}, bits)
        planes = [p["name"] for p in d["planes"]]
        d["panels"] = [
            {"title": self.titles[0], "layers": "concepts",
             "bg": {p["name"]: p["bg"] for p in d["planes"]}, "mask": {p["name"]: p["mask"] for p in d["planes"]}},
            {"title": self.titles[1], "layers": "change", "bg": {n: url(bg[n]) for n in planes},
             "mask": {n: (url(sheets[n]) if sheets else None) for n in planes}},
        ]
        d["change"] = classes
        return d


def _save(img: Image.Image, path: Path, fmt: str, **kw: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        img.save(tmp, format=fmt, **kw)


__all__ = ["PLANE_ORDER", "SEQUENCE_BUTTONS", "PairView", "ViewerCase", "change_classes", "bitfield", "concept_bits", "head_box", "sprite"]
