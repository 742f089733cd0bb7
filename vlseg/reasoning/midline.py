"""Midline shift: how far the midline structures are pushed off the brain's own midline.

Radiologists measure midline shift as the displacement of the septum pellucidum (at the
foramen of Monro) from the ideal midline, the line joining the falx's front and back
attachments. Here:

1. The ideal midline is the case's mid-sagittal plane, fitted to the brain's outline by
   symmetry (``vlseg.reasoning.midplane``; ``AtlasLocator.midplane``). Mass effect moves the
   structures inside the brain, not its outline.
2. The midline structures are found by template matching: a box of the ICBM152 template around
   the septum pellucidum and the frontal horns' medial walls down to the foramen of Monro (MNI
   |x| <= 10, y -8..14, z 0..20 mm, weighted by a Gaussian of 6 mm across the midline) is slid
   left-right, in MNI x through the atlas registration, by up to 20 mm in 0.5 mm steps (refined
   parabolically); the case image is sampled there and the weighted normalised cross-correlation
   (NCC) picks the position. Voxels of a given ``exclude`` mask (the tumor) are left out, and a
   position where they take more than 40 % of the box's weight is not scored.
3. The shift is the signed distance of the found septum point (template MNI (0, 3, 10) moved by
   the match) from the mid-sagittal plane, in the case's millimetres; positive = towards the
   patient's right. ``reliable`` is False when the best NCC is below 0.3 or the match sits at the
   edge of the search range.

The template is a T1: CSF is dark. For a sequence with bright CSF (T2) pass ``csf_dark=False``;
``pick_sequence`` chooses among a case's images (t1n, t1c, then FLAIR, then T2).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Mapping

import nibabel as nib
import numpy as np
from scipy import ndimage

from vlseg.reasoning.atlas import AtlasLocator, apply_affine, template_path
from vlseg.reasoning.midplane import MidPlane

ROI_MNI = ((-10.0, 10.0), (-8.0, 14.0), (0.0, 20.0))
ROI_STEP_MM = (1.0, 2.0, 2.0)
SIGMA_X_MM = 6.0
SEARCH_MM = 20.0
STEP_MM = 0.5
SEPTUM_MNI = (0.0, 3.0, 10.0)
MIN_MATCH = 0.3
MIN_KEPT = 0.6     # a position is scored only where >= 60 % of the box's weight is not excluded
NO_SHIFT_MM = 0.5  # below this the direction is not named
_ORDER = ("t1n", "t1c", "t2f", "t2w")  # T1-like first (the template is a T1)


@dataclass(frozen=True)
class MidlineShift:
    shift_mm: float                              # |signed_mm|
    signed_mm: float                             # + towards the patient's right
    direction: str | None                        # "right" | "left" | None (< 0.5 mm)
    plane: MidPlane
    septum_ras_mm: tuple[float, float, float]    # where the midline structures were found
    match: float                                 # weighted NCC of the template match
    reliable: bool

    def to_json(self) -> dict:
        return {"midline_shift_mm": round(self.shift_mm, 1),
                "midline_shift_direction": self.direction,
                "midline_shift_signed_mm": round(self.signed_mm, 1),
                "midline_shift_reliable": bool(self.reliable),
                "midline_shift_match": round(self.match, 2),
                "midsagittal_plane": self.plane.to_json()}


@functools.lru_cache(maxsize=1)
def _template_roi() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROI points (N, 3) MNI mm, template values (N,), Gaussian weights (N,)."""
    axes = [np.arange(lo, hi + 1e-6, st) for (lo, hi), st in zip(ROI_MNI, ROI_STEP_MM)]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    tpl = nib.load(template_path())
    data = np.asarray(tpl.get_fdata(dtype=np.float32))
    vox = apply_affine(np.linalg.inv(tpl.affine), pts)
    vals = ndimage.map_coordinates(data, vox.T, order=1, mode="nearest").astype(np.float64)
    w = np.exp(-0.5 * (pts[:, 0] / SIGMA_X_MM) ** 2)
    return pts, vals, w


def pick_sequence(images: Mapping[str, np.ndarray]) -> tuple[str, bool]:
    """(sequence name, csf_dark) to measure midline shift on: t1n, t1c, t2f (dark CSF), t2w."""
    for name in _ORDER:
        if name in images and images[name] is not None:
            return name, name != "t2w"
    raise ValueError(f"no usable sequence among {sorted(images)}; need one of {', '.join(_ORDER)}")


def _wncc(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> float:
    sw = w.sum()
    if sw <= 0:
        return -1.0
    a = a - (w @ a) / sw
    b = b - (w @ b) / sw
    den = np.sqrt((w @ (a * a)) * (w @ (b * b)))
    return float((w @ (a * b)) / den) if den > 0 else -1.0


def midline_shift(image: np.ndarray, affine: np.ndarray, *, locator: AtlasLocator | None = None,
                  plane: MidPlane | None = None, csf_dark: bool = True,
                  exclude: np.ndarray | None = None) -> MidlineShift:
    """Midline shift of one case image (module doc). ``locator``: the case's registration
    (fitted here from ``image`` when None); ``plane``: the mid-sagittal plane (the locator's
    by default); ``exclude``: voxels to ignore in the match (e.g. the tumor), same grid."""
    image = np.asarray(image, dtype=np.float32)
    affine = np.asarray(affine, dtype=np.float64)
    if image.ndim != 3:
        raise ValueError(f"image must be 3D, got shape {image.shape}")
    if locator is None:
        locator = AtlasLocator.fit(image, affine)
    if plane is None:
        plane = locator.midplane
    pts, tvals, w = _template_roi()
    if not csf_dark:
        tvals = -tvals
    m2v = np.linalg.inv(affine) @ locator.mni_to_ras  # MNI mm -> case voxel
    ex = None if exclude is None else np.asarray(exclude, dtype=np.float32)
    shifts = np.arange(-SEARCH_MM, SEARCH_MM + 1e-6, STEP_MM)
    scores = np.empty(len(shifts))
    for i, s in enumerate(shifts):
        vox = apply_affine(m2v, pts + [s, 0.0, 0.0]).T
        vals = ndimage.map_coordinates(image, vox, order=1, mode="nearest")
        ww = w
        if ex is not None:
            ww = w * (1.0 - ndimage.map_coordinates(ex, vox, order=0, mode="constant"))
            if ww.sum() < MIN_KEPT * w.sum():  # mostly tumor there: a few voxels match anything
                scores[i] = -1.0
                continue
        scores[i] = _wncc(tvals, vals.astype(np.float64), ww)
    k = int(np.argmax(scores))
    best = float(shifts[k])
    if 0 < k < len(shifts) - 1:  # parabolic refinement
        y0, y1, y2 = scores[k - 1:k + 2]
        den = y0 - 2 * y1 + y2
        if den < 0:
            best += float(np.clip(0.5 * (y0 - y2) / den, -0.5, 0.5)) * STEP_MM
    septum = apply_affine(locator.mni_to_ras, np.array([SEPTUM_MNI]) + [best, 0.0, 0.0])[0]
    signed = float(plane.signed_mm(septum))
    reliable = bool(scores[k] >= MIN_MATCH and 0 < k < len(shifts) - 1 and locator.reliable)
    return MidlineShift(
        shift_mm=abs(signed), signed_mm=signed,
        direction=None if abs(signed) < NO_SHIFT_MM else ("right" if signed > 0 else "left"),
        plane=plane, septum_ras_mm=tuple(float(v) for v in septum), match=float(scores[k]),
        reliable=reliable)


def midline_shift_mm(image: np.ndarray, affine: np.ndarray, **kwargs) -> float:
    """The midline shift in mm (``midline_shift(...).shift_mm``)."""
    return midline_shift(image, affine, **kwargs).shift_mm


def case_midline_shift(images: Mapping[str, np.ndarray], affine: np.ndarray, *,
                       locator: AtlasLocator | None = None,
                       exclude: np.ndarray | None = None) -> MidlineShift:
    """Midline shift of a case given its sequences (``pick_sequence`` chooses the image)."""
    name, dark = pick_sequence(images)
    return midline_shift(images[name], affine, locator=locator, csf_dark=dark, exclude=exclude)
