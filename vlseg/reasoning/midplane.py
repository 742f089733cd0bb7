"""The brain's own mid-sagittal plane, fitted to the scan by symmetry of the brain's outline.

A plane is ``n · p = offset`` in the case's world (scanner RAS) millimetres, with the unit normal
``n`` pointing to the patient's right, so ``signed_mm(p) > 0`` is the right hemisphere.

``fit_midplane`` starts from a guess (the atlas registration's MNI x = 0 plane, or world x
through the brain's centre) and adjusts the plane's tilt (two angles) and position so that the
brain's outline, mirrored through the plane, falls back onto itself: on a 3 mm grid the brain
mask is smoothed (Gaussian, 1 voxel) and the fit minimises the trimmed (best 80 %) RMS difference
between the smoothed mask and its mirror image over the outline band. The outline
is what a tumor and its mass effect change least (the skull holds it; mass effect moves the
structures inside), and trimming ignores the stretches a tumor at the surface does change, so the
plane is the "ideal midline" against which midline shift is measured.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, optimize

FIT_SPACING_MM = 3.0       # working grid of the fit
TRIM = 0.8                 # share of outline samples kept (the best-matching ones)
MAX_TILT_DEG = 20.0        # search range around the initial normal
MAX_MOVE_MM = 25.0         # search range around the initial offset
_FULL = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class MidPlane:
    normal: tuple[float, float, float]  # unit, world RAS, towards the patient's right
    offset_mm: float                    # plane: normal · p = offset_mm
    method: str                         # "symmetry" | "atlas" | "world-x" | "given"
    asymmetry: float | None = None      # trimmed RMS outline mismatch after mirroring, 0..1 (fit only)

    def signed_mm(self, points_ras_mm: np.ndarray) -> np.ndarray:
        """Signed distance (mm) of points (..., 3) from the plane; > 0 on the patient's right."""
        return np.asarray(points_ras_mm, dtype=np.float64) @ np.asarray(self.normal) - self.offset_mm

    def signed_affine(self, affine: np.ndarray) -> tuple[np.ndarray, float]:
        """(a, b) with signed distance = idx @ a + b for voxel indices of the grid ``affine``."""
        aff = np.asarray(affine, dtype=np.float64)
        n = np.asarray(self.normal)
        return aff[:3, :3].T @ n, float(aff[:3, 3] @ n - self.offset_mm)

    def mirror(self, points_ras_mm: np.ndarray) -> np.ndarray:
        p = np.asarray(points_ras_mm, dtype=np.float64)
        return p - 2.0 * self.signed_mm(p)[..., None] * np.asarray(self.normal)

    def to_json(self) -> dict:
        return {"normal": [round(float(v), 4) for v in self.normal],
                "offset_mm": round(float(self.offset_mm), 2), "method": self.method,
                "asymmetry": None if self.asymmetry is None else round(self.asymmetry, 2)}


def plane(normal, offset_mm: float, method: str = "given", asymmetry: float | None = None) -> MidPlane:
    """A MidPlane with a unit normal turned towards +x (the patient's right)."""
    n = np.asarray(normal, dtype=np.float64)
    norm = float(np.linalg.norm(n))
    if not np.isfinite(norm) or norm < 1e-9:
        raise ValueError("plane normal must be a finite non-zero vector")
    n, off = n / norm, float(offset_mm) / norm
    if n[0] < 0:
        n, off = -n, -off
    return MidPlane(tuple(float(v) for v in n), off, method, asymmetry)


def plane_from_ras_to_mni(ras_to_mni: np.ndarray) -> MidPlane:
    """The MNI x = 0 plane pulled back into the case's RAS space."""
    m = np.asarray(ras_to_mni, dtype=np.float64)
    return plane(m[0, :3], -m[0, 3], method="atlas")


def _block_mean(image: np.ndarray, affine: np.ndarray, spacing_mm: float):
    sp = np.linalg.norm(affine[:3, :3], axis=0)
    f = np.maximum(np.rint(spacing_mm / sp), 1).astype(int)
    if np.all(f == 1):
        return image.astype(np.float32), affine
    shape = (np.array(image.shape) // f) * f
    crop = image[: shape[0], : shape[1], : shape[2]].astype(np.float32)
    out = crop.reshape(shape[0] // f[0], f[0], shape[1] // f[1], f[1], shape[2] // f[2], f[2])
    out = out.mean(axis=(1, 3, 5))
    new = affine.copy()
    new[:3, :3] = affine[:3, :3] * f
    new[:3, 3] = affine[:3, :3] @ ((f - 1) / 2.0) + affine[:3, 3]
    return out, new


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``ndimage.binary_fill_holes`` with its default (face-connected) background: the same
    voxels, found by labelling the background once and keeping what touches the array's border,
    instead of dilating it in from the border step by step (0.33 s -> 0.13 s on a 240x240x155
    head)."""
    m = np.asarray(mask, dtype=bool)
    found = ndimage.find_objects(m.astype(np.uint8))
    if not found or found[0] is None:
        return m.copy()
    # Holes lie inside the mask's box; grown by a voxel, the box's border is all outside
    box = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(found[0], m.shape))
    background, count = ndimage.label(~m[box])  # face connectivity, as binary_fill_holes uses
    out = m.copy()
    if count == 0:
        return out
    edges = [np.take(background, i, axis=a).ravel() for a in range(m.ndim) for i in (0, -1)]
    reaches_border = np.zeros(count + 1, dtype=bool)
    reaches_border[np.concatenate(edges)] = True
    reaches_border[0] = False  # label 0 is the mask itself
    out[box] = ~reaches_border[background]
    return out


def brain_outline_mask(image: np.ndarray, brain_mask: np.ndarray | None = None) -> np.ndarray:
    """The head's brain region: ``brain_mask`` or image > 5 % of its 99th percentile (skull-
    stripped scans are 0 outside the brain), largest component, holes filled."""
    if brain_mask is not None:
        m = np.asarray(brain_mask, dtype=bool)
    else:
        img = np.nan_to_num(np.asarray(image, dtype=np.float32))
        pos = img[img > 0]
        if pos.size == 0:
            return np.zeros(img.shape, bool)
        m = img > 0.05 * float(np.percentile(pos[:: max(1, pos.size // 200_000)], 99))
    comps, n = ndimage.label(m, structure=_FULL)
    if n > 1:
        m = comps == (np.argmax(np.bincount(comps.ravel())[1:]) + 1)
    return fill_holes(m)


def _rotation(a: float, b: float, u: np.ndarray, v: np.ndarray, n0: np.ndarray) -> np.ndarray:
    """Normal tilted from n0 by angles a (towards u) and b (towards v), radians."""
    n = n0 * np.cos(a) * np.cos(b) + u * np.sin(a) * np.cos(b) + v * np.sin(b)
    return n / np.linalg.norm(n)


def fit_midplane(image: np.ndarray, affine: np.ndarray, *, initial: MidPlane | None = None,
                 brain_mask: np.ndarray | None = None,
                 spacing_mm: float = FIT_SPACING_MM) -> MidPlane:
    """Fit the mid-sagittal plane of a brain image (see module doc); ``initial`` is kept (with
    method unchanged) when the image has too little brain to fit."""
    affine = np.asarray(affine, dtype=np.float64)
    mask = brain_outline_mask(image, brain_mask)
    if mask.sum() < 1000:
        if initial is not None:
            return initial
        raise ValueError("too little brain in the image to fit a mid-sagittal plane")
    small, saff = _block_mean(mask.astype(np.float32), affine, spacing_mm)
    small = np.pad(small, 3)
    saff = saff.copy()
    saff[:3, 3] -= saff[:3, :3] @ np.full(3, 3.0)
    field = ndimage.gaussian_filter(small, 1.0).astype(np.float32)  # smooth: a smooth cost
    band = (field > 0.02) & (field < 0.98)
    idx = np.argwhere(band).astype(np.float64)
    vals = field[band].astype(np.float64)
    pts = idx @ saff[:3, :3].T + saff[:3, 3]
    inv = np.linalg.inv(saff)

    if initial is None:
        centre = pts.mean(axis=0)
        initial = plane((1.0, 0.0, 0.0), centre[0], method="world-x")
    n0 = np.asarray(initial.normal)
    # Two unit vectors spanning the plane, for the tilt angles.
    helper = np.array([0.0, 0.0, 1.0]) if abs(n0[2]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u = np.cross(n0, helper)
    u /= np.linalg.norm(u)
    v = np.cross(n0, u)
    # Offsets are measured from the outline centroid's projection, so tilt and shift decouple.
    c0 = pts.mean(axis=0)
    d0 = float(n0 @ c0 - initial.offset_mm)  # centroid's signed distance from the initial plane
    keep = max(1, int(TRIM * len(pts)))

    def cost(x: np.ndarray) -> float:
        n = _rotation(np.deg2rad(x[0]), np.deg2rad(x[1]), u, v, n0)
        off = n @ c0 - d0 + x[2]
        s = pts @ n - off
        mirrored = pts - 2.0 * s[:, None] * n
        vox = mirrored @ inv[:3, :3].T + inv[:3, 3]
        d = (ndimage.map_coordinates(field, vox.T, order=1, mode="constant") - vals) ** 2
        return float(np.sqrt(np.partition(d, keep - 1)[:keep].mean()))

    # Coarse search over the offset (the likeliest error of an affine fit), then Powell.
    grid = np.arange(-12.0, 12.01, 3.0)
    best = min((np.array([0.0, 0.0, g]) for g in grid), key=cost)
    res = optimize.minimize(cost, best, method="Powell",
                            bounds=[(-MAX_TILT_DEG, MAX_TILT_DEG)] * 2 + [(-MAX_MOVE_MM, MAX_MOVE_MM)],
                            options={"xtol": 1e-2, "ftol": 1e-4, "maxfev": 400})
    x = res.x if res.fun <= cost(best) else best
    n = _rotation(np.deg2rad(x[0]), np.deg2rad(x[1]), u, v, n0)
    return plane(n, n @ c0 - d0 + x[2], method="symmetry", asymmetry=float(cost(x)))
