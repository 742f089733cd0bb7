"""Test-time distribution shifts for the robustness benchmark (``bench/robustness.py``).

Each shift takes its own ``numpy.random.Generator`` and works on one case's stored voxel arrays
(images ``(X, Y, Z)`` of any dtype, a BraTS 2023 label map ``(X, Y, Z)`` uint8) and affine, in
whatever orientation the case was stored; it returns new arrays (and, for thick slices, a new
affine). Nothing here is shared with the training-time randomizer (``vlseg/synth/randomize*``):
a test set must not reuse the code paths that augment training data.

Shifts (all deterministic for a given generator state):

* ``anatomy_warp``   smooth non-linear deformation (cubic lattice, ~6 mm), one sampling map for
                     images (trilinear) and labels (nearest), so both move identically;
* ``contrast_table`` per-tissue mean intensities for the phantom renderer, each entry scaled at
                     random but keeping the relations that define the labels; ``gamma`` a power
                     law per sequence on top;
* ``bias_field``     smooth multiplicative field spanning x0.7-1.4 over the brain, per sequence;
* ``thick_slices``   5 mm slices (boxcar slice profile) along a random voxel axis, **stored on the
                     coarse grid** with its own affine; labels on that grid by partial volume;
* ``rician_noise``   Rician noise inside the brain, a few % of the bright-tissue intensity.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
from scipy import ndimage as ndi

from vlseg import vocab

LABELS = vocab.label_convention("brats2023")  # NCR 1, ED 2, ET 3

WARP_MM: tuple[float, float] = (5.0, 7.0)          # 95th percentile of |displacement| in the brain
WARP_LATTICE_MM = 40.0                             # control-point spacing of the warp
GAMMA: tuple[float, float] = (0.6, 1.7)            # per sequence, log-uniform
TISSUE_SCALE: tuple[float, float] = (0.7, 1.4)     # per tissue and sequence, log-uniform
BIAS_RANGE: tuple[float, float] = (0.7, 1.4)       # min and max of the field over the brain
BIAS_LATTICE_MM = 60.0
THICK_MM = 5.0
NOISE_FRACTION: tuple[float, float] = (0.03, 0.05)  # Rician sigma / 99th percentile in the brain
CONTRAST_MARGIN = 1.2   # "brighter than": at least this ratio (survives the renderer's x0.92-1.08 jitter)


# ----------------------------------------------------------------------------- helpers
def brain_mask(images: Mapping[str, np.ndarray]) -> np.ndarray:
    """Voxels nonzero in any sequence (the phantoms are skull-stripped: zero outside the brain)."""
    out = np.zeros(next(iter(images.values())).shape, bool)
    for a in images.values():
        out |= a != 0
    return out


def _upsample(lattice: np.ndarray, shape: tuple[int, ...], order: int) -> np.ndarray:
    """Resize so the lattice corners land on the volume corners (spline of ``order``)."""
    scale = [(n_in - 1) / max(n_out - 1, 1) for n_in, n_out in zip(lattice.shape, shape)]
    return ndi.affine_transform(lattice, np.asarray(scale), output_shape=tuple(shape), order=order,
                                mode="nearest").astype(np.float32)


def smooth_field(rng: np.random.Generator, shape: tuple[int, int, int], spacing: tuple[float, ...],
                 lattice_mm: float) -> np.ndarray:
    """Smooth standard-normal-ish field (X, Y, Z) float32: random values on a lattice of control
    points ``lattice_mm`` apart, cubic to a ~4-voxel grid, then linear to full resolution."""
    nodes = tuple(max(3, int(np.ceil(n * s / lattice_mm)) + 1) for n, s in zip(shape, spacing))
    lattice = rng.standard_normal(nodes).astype(np.float32)
    mid = tuple(max(2, -(-n // 4)) for n in shape)
    return _upsample(_upsample(lattice, mid, order=3), shape, order=1)


def _store_like(values: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Cast back to the input's dtype (integers rounded and clipped to the dtype's range)."""
    if np.issubdtype(like.dtype, np.integer):
        info = np.iinfo(like.dtype)
        return np.clip(np.rint(values), max(info.min, 0), info.max).astype(like.dtype)
    return values.astype(like.dtype)


def _reference(img: np.ndarray, brain: np.ndarray) -> float:
    vals = img[brain]
    return float(np.percentile(vals, 99)) if vals.size else 1.0


# ----------------------------------------------------------------------------- anatomy
def warp_field(rng: np.random.Generator, shape: tuple[int, int, int], spacing: tuple[float, ...],
               brain: np.ndarray) -> tuple[np.ndarray, float]:
    """Displacement (3, X, Y, Z) in voxels along each axis and its drawn size in mm (the 95th
    percentile of the displacement length over the brain)."""
    size_mm = float(rng.uniform(*WARP_MM))
    disp_mm = np.stack([smooth_field(rng, shape, spacing, WARP_LATTICE_MM) for _ in range(3)])
    length = np.sqrt((disp_mm ** 2).sum(0))
    p95 = float(np.percentile(length[brain] if brain.any() else length, 95))
    disp_mm *= size_mm / max(p95, 1e-6)
    return disp_mm / np.asarray(spacing, np.float32)[:, None, None, None], size_mm


def anatomy_warp(rng: np.random.Generator, images: Mapping[str, np.ndarray], seg: np.ndarray,
                 spacing: tuple[float, ...]) -> tuple[dict[str, np.ndarray], np.ndarray, dict]:
    """Smooth non-linear deformation: each output voxel samples the input at x + u(x); the same
    map is used for every image (trilinear) and for the labels (nearest)."""
    shape = seg.shape
    disp, size_mm = warp_field(rng, shape, spacing, brain_mask(images))
    coords = np.indices(shape, dtype=np.float32)
    coords += disp                                                    # (3, X, Y, Z)
    del disp
    out = {k: _store_like(ndi.map_coordinates(v.astype(np.float32), coords, order=1, mode="constant",
                                              cval=0.0), v) for k, v in images.items()}
    seg_out = ndi.map_coordinates(seg, coords, order=0, mode="constant", cval=0).astype(seg.dtype)
    return out, seg_out, {"warp_p95_mm": round(size_mm, 3), "lattice_mm": WARP_LATTICE_MM}


VENTRICLE_SCALE = (1.3, 1.8)      # local zoom about the ventricles (enlarged: atrophy, hydrocephalus)
VENTRICLE_SIGMA_MM = (18.0, 28.0)  # reach of that zoom


def ventricle_zoom(rng: np.random.Generator, images: Mapping[str, np.ndarray], seg: np.ndarray,
                   spacing: tuple[float, ...]) -> tuple[dict[str, np.ndarray], np.ndarray, dict]:
    """Enlarged ventricles: a smooth local zoom about the ventricles' centre (the centroid of the
    brightest T2 voxels within 35 mm of the brain's centre), each output point sampling the input
    at ``p - a g(p) (p - c)``, ``a = 1 - 1/scale``, ``g`` a Gaussian of the distance to ``c``
    (images trilinear, labels nearest)."""
    shape = seg.shape
    brain = brain_mask(images)
    sp = np.asarray(spacing, np.float32)
    idx = np.argwhere(brain)
    centre = idx.mean(0) if idx.size else (np.asarray(shape, np.float32) - 1) / 2
    t2 = np.asarray(images.get("t2w", next(iter(images.values()))), np.float32)
    near = brain & (np.sqrt(sum(((np.indices(shape, dtype=np.float32)[i] - centre[i]) * sp[i]) ** 2
                                for i in range(3))) < 35.0)
    csf = near & (t2 >= np.percentile(t2[near], 95)) if near.any() else near
    c = np.argwhere(csf).mean(0) if csf.any() else centre
    scale = float(rng.uniform(*VENTRICLE_SCALE))
    sigma = float(rng.uniform(*VENTRICLE_SIGMA_MM))
    a = 1.0 - 1.0 / scale
    coords = np.indices(shape, dtype=np.float32)                                     # (3, X, Y, Z)
    d = (coords - np.asarray(c, np.float32)[:, None, None, None]) * sp[:, None, None, None]  # mm
    g = np.exp(-(d * d).sum(0) / (2 * sigma ** 2))
    coords -= a * g * d / sp[:, None, None, None]
    del d, g
    out = {k: _store_like(ndi.map_coordinates(v.astype(np.float32), coords, order=1, mode="constant",
                                              cval=0.0), v) for k, v in images.items()}
    seg_out = ndi.map_coordinates(seg, coords, order=0, mode="constant", cval=0).astype(seg.dtype)
    return out, seg_out, {"scale": round(scale, 3), "sigma_mm": round(sigma, 2),
                          "centre_vox": [round(float(v), 1) for v in c]}


# ----------------------------------------------------------------------------- contrast
def _contrast_ok(m: Mapping[str, Mapping[str, float]]) -> bool:
    """The relations that define the labels (with a margin): enhancing tumor brighter on T1c than
    on T1n and than everything around it; edema brighter than white matter on FLAIR and T2;
    necrosis darker than the enhancing rim on T1c."""
    k = CONTRAST_MARGIN
    t1c = m["t1c"]
    return (t1c["ET"] >= k * m["t1n"]["ET"]
            and all(t1c["ET"] >= k * t1c[t] for t in ("GM", "WM", "ED", "NCR"))
            and m["t2f"]["ED"] >= k * m["t2f"]["WM"] and m["t2w"]["ED"] >= k * m["t2w"]["WM"]
            and t1c["NCR"] * k <= t1c["ET"])


def contrast_table(rng: np.random.Generator, base: Mapping[str, Mapping[str, float]],
                   max_tries: int = 1000) -> dict[str, dict[str, float]]:
    """Per-tissue means for each sequence: every entry of ``base`` times a log-uniform factor in
    ``TISSUE_SCALE``, redrawn until the label-defining relations hold."""
    lo, hi = np.log(TISSUE_SCALE[0]), np.log(TISSUE_SCALE[1])
    for _ in range(max_tries):
        table = {s: {t: float(v * np.exp(rng.uniform(lo, hi))) for t, v in row.items()}
                 for s, row in base.items()}
        if _contrast_ok(table):
            return table
    raise RuntimeError("could not draw a contrast table that keeps the label-defining relations")


def gamma(rng: np.random.Generator, images: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict]:
    """Power law per sequence on intensities relative to the brain's 99th percentile."""
    brain = brain_mask(images)
    lo, hi = np.log(GAMMA[0]), np.log(GAMMA[1])
    out, info = {}, {}
    for k, v in images.items():
        g = float(np.exp(rng.uniform(lo, hi)))
        ref = _reference(v, brain)
        x = np.maximum(v.astype(np.float32), 0) / np.float32(ref)
        out[k] = _store_like(np.power(x, np.float32(g)) * np.float32(ref), v)
        info[k] = round(g, 4)
    return out, {"gamma": info}


# ----------------------------------------------------------------------------- artefacts
def bias_field(rng: np.random.Generator, images: Mapping[str, np.ndarray],
               spacing: tuple[float, ...]) -> tuple[dict[str, np.ndarray], dict]:
    """Multiply each sequence by its own smooth field whose range over the brain is exactly
    ``BIAS_RANGE`` (log-linear rescaling of a smooth random field)."""
    brain = brain_mask(images)
    lo, hi = np.log(BIAS_RANGE[0]), np.log(BIAS_RANGE[1])
    out = {}
    for k, v in images.items():
        f = smooth_field(rng, v.shape, spacing, BIAS_LATTICE_MM)
        inside = f[brain] if brain.any() else f
        fmin, fmax = float(inside.min()), float(inside.max())
        log_field = lo + (f - fmin) * np.float32((hi - lo) / max(fmax - fmin, 1e-6))
        out[k] = _store_like(v.astype(np.float32) * np.exp(log_field), v)
    return out, {"bias_range": list(BIAS_RANGE), "lattice_mm": BIAS_LATTICE_MM}


def rician_noise(rng: np.random.Generator, images: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict]:
    """Rician noise inside the brain: |x + sigma (n1 + i n2)|, sigma a few % of the 99th percentile
    of the brain's intensities (background stays zero, as in skull-stripped data)."""
    brain = brain_mask(images)
    idx = np.flatnonzero(brain)
    out, info = {}, {}
    for k, v in images.items():
        frac = float(rng.uniform(*NOISE_FRACTION))
        sigma = np.float32(frac * _reference(v, brain))
        x = v.astype(np.float32).ravel()[idx]
        n1 = rng.standard_normal(idx.size, dtype=np.float32)
        n2 = rng.standard_normal(idx.size, dtype=np.float32)
        noisy = np.array(v, dtype=np.float32, order="C")
        noisy.ravel()[idx] = np.sqrt((x + sigma * n1) ** 2 + (sigma * n2) ** 2)
        out[k] = _store_like(noisy, v)
        info[k] = round(frac, 4)
    return out, {"noise_fraction": info}


# ----------------------------------------------------------------------------- resolution
def _block_mean(a: np.ndarray, axis: int, f: int) -> np.ndarray:
    """Mean over consecutive blocks of ``f`` slices along ``axis`` (zero-padded at the far end)."""
    pad = [(0, 0)] * 3
    pad[axis] = (0, (-a.shape[axis]) % f)
    a = np.pad(a.astype(np.float32), pad)
    shape = list(a.shape)
    shape[axis:axis + 1] = [shape[axis] // f, f]
    return a.reshape(shape).mean(axis=axis + 1)


def thick_slices(rng: np.random.Generator, images: Mapping[str, np.ndarray], seg: np.ndarray,
                 affine: np.ndarray, thickness_mm: float = THICK_MM
                 ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, dict]:
    """Acquire ``thickness_mm`` slices along a random voxel axis (boxcar slice profile) and keep
    them on that coarse grid: the returned affine has the thick spacing along the axis and puts
    each slice's centre where its block of thin slices was centred. Ground truth on the same
    grid: a voxel belongs to WT / TC / ET when at least half of its thin voxels did (nested by
    construction), then ED = WT - TC, NCR = TC - ET."""
    spacing = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    axis = int(rng.integers(3))
    f = max(2, int(round(thickness_mm / spacing[axis])))
    out = {k: _store_like(_block_mean(v, axis, f), v) for k, v in images.items()}
    wt = _block_mean(seg > 0, axis, f) >= 0.5
    tc = _block_mean((seg == LABELS["NCR"]) | (seg == LABELS["ET"]), axis, f) >= 0.5
    et = _block_mean(seg == LABELS["ET"], axis, f) >= 0.5
    seg_out = np.zeros(wt.shape, np.uint8)
    seg_out[wt] = LABELS["ED"]
    seg_out[tc] = LABELS["NCR"]
    seg_out[et] = LABELS["ET"]
    aff = np.array(affine, dtype=np.float64)
    aff[:3, 3] += aff[:3, axis] * (f - 1) / 2.0                      # centre of the first block
    aff[:3, axis] *= f
    return out, seg_out, aff, {"axis": axis, "slice_mm": round(float(spacing[axis] * f), 4)}
