"""Preprocessing shared by the predictor and training, so both see identical inputs.

- ``normalize_case_images(case) -> (images, present)``: images (4, X, Y, Z) float32 in SEQUENCES
  order, each present sequence z-scored over its nonzero (brain) voxels and clipped to
  [-CLIP, CLIP], background and missing sequences 0; present (4,) bool. With
  ``bias_correction="n4"`` each sequence first has its smooth intensity bias divided out
  (``correct_bias_field``: N4 fitted on a coarse copy, a second or so per scan).
- ``model_grid_images(case, spacing_mm)``: the same, resampled to the model's spacing, with the
  work done on that grid (what the predictor uses: an eighth of the voxels of a 1 mm scan).
  ``model_grid_preprocess`` also returns ``CaseGridBoxes``: boxes of the case's own grid
  normalised from the bias fields and brain statistics measured on the model grid (what the
  refinement stage reads, without fitting N4 a second time at the case's resolution).
- ``resample_to_spacing`` / ``resample_to_shape``: torch interpolation between voxel grids.
- ``nonzero_bbox`` / ``pad_to_multiple``: the crop-and-pad the predictor uses.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vlseg.vocab import SEQUENCES
from vlseg.model.config import BIAS_CORRECTIONS

CLIP = 5.0


def normalize_volume(vol: np.ndarray, *, clip: float = CLIP) -> np.ndarray:
    """Z-score one volume over its nonzero voxels; background stays 0. Returns float32."""
    vol = np.nan_to_num(np.asarray(vol, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    brain = vol != 0
    out = np.zeros_like(vol, dtype=np.float32)
    if brain.sum() < 2:
        return out
    vals = vol[brain].astype(np.float64)
    std = vals.std()
    out[brain] = ((vals - vals.mean()) / (std if std > 1e-8 else 1.0)).astype(np.float32)
    return np.clip(out, -clip, clip, out=out)


BIAS_FIT_MM = 8.0            # N4 is fitted on a copy of the scan at this spacing (the field is smooth)
BIAS_ITERATIONS = (30, 30)   # per fitting level: two levels, the second on a twice finer control lattice
BIAS_MIN_VOXELS = 500        # brain voxels on the fitting grid below which no field is fitted


def correct_bias_field(vol: np.ndarray, spacing: Sequence[float], *, fit_mm: float = BIAS_FIT_MM,
                       iterations: Sequence[int] = BIAS_ITERATIONS, threads: int | None = None) -> np.ndarray:
    """Divide out a smooth multiplicative intensity bias (N4, SimpleITK) from one volume.

    N4 is fitted on a copy of the brain (nonzero voxels) averaged down to ``fit_mm`` voxels, which
    keeps it to a fraction of a second; the fitted log field is interpolated back to the volume's
    grid, shifted to mean 0 over the brain (intensities keep their overall scale) and divided out.
    Background stays 0. Volumes N4 cannot model -- negative intensities inside the brain (already
    normalised data), too few brain voxels -- are returned unchanged (as float32).
    """
    vol = np.nan_to_num(np.asarray(vol, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    brain = vol != 0
    values = vol[brain]
    if not values.size or (values < 0).mean() > 0.01:
        return vol
    log_field = fit_log_bias_field(torch.from_numpy(np.clip(vol, 0, None)),
                                   torch.from_numpy(brain.astype(np.float32)), spacing,
                                   fit_mm=fit_mm, iterations=iterations, threads=threads)
    if log_field is None:
        return vol
    out = np.zeros_like(vol)
    out[brain] = values / np.exp(log_field.numpy()[brain])  # the brain only: a fraction of the grid
    return out


def fit_log_bias_field(intensity: torch.Tensor, brain: torch.Tensor, spacing: Sequence[float], *,
                       fit_mm: float = BIAS_FIT_MM, iterations: Sequence[int] = BIAS_ITERATIONS,
                       threads: int | None = None) -> torch.Tensor | None:
    """N4's log bias field (X, Y, Z) float32 on the grid of ``intensity`` (X, Y, Z, >= 0, zero
    outside the brain), mean 0 over the brain; ``brain`` (X, Y, Z) is the brain's share of each
    voxel (0/1, or fractions on a resampled grid). Fitted on both averaged down to ``fit_mm``
    voxels; None when too few brain voxels remain there to fit a field."""
    import SimpleITK as sitk

    coarse = target_shape(intensity.shape, spacing, fit_mm)
    small = resample_to_shape(intensity[None], coarse, "area")[0].numpy()
    frac = resample_to_shape(brain[None], coarse, "area")[0].numpy()
    inside = (frac > 0.5) & (small > 0)  # coarse voxels mostly inside the brain
    if inside.sum() < BIAS_MIN_VOXELS:
        return None
    # Mean intensity of the brain part of each coarse voxel (edge voxels are partly background).
    small = np.where(inside, small / np.maximum(frac, 1e-6), 0).astype(np.float32)
    image = sitk.GetImageFromArray(np.ascontiguousarray(small.transpose(2, 1, 0)))  # ITK is z, y, x
    image.SetSpacing((fit_mm,) * 3)
    mask = sitk.GetImageFromArray(np.ascontiguousarray(inside.transpose(2, 1, 0)).astype(np.uint8))
    mask.CopyInformation(image)
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations([int(i) for i in iterations])
    n4.SetNumberOfThreads(max(1, int(threads or torch.get_num_threads())))
    n4.Execute(image, mask)
    log_field = sitk.GetArrayFromImage(n4.GetLogBiasFieldAsImage(image)).transpose(2, 1, 0).astype(np.float32)
    log_field -= float(log_field[inside].mean())
    return resample_to_shape(torch.from_numpy(np.ascontiguousarray(log_field))[None], intensity.shape,
                             "trilinear")[0]


def model_grid_images(case, spacing_mm: float, *, bias_correction: str = "none",
                      threads: int | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """A ``vlseg.io.Case`` -> (images (4, x, y, z) float32 at ``spacing_mm``, present (4,) bool):
    what ``normalize_case_images`` followed by ``resample_to_spacing`` gives, with the expensive
    work done on the model's grid instead of the case's (an eighth of the voxels of a 1 mm scan).

    Resampling is linear, so the z-scored-then-resampled image equals (R(v) - mean R(brain)) / std
    with R the resampling, the brain's mean and std taken from the resampled first and second
    moments (R(v), R(v^2), R(brain)); N4 is fitted on the resampled image and its (smooth) field
    divided out there. The differences from the case-grid path are the clip to +-CLIP applied
    after resampling instead of before, and the field applied to averages instead of voxels;
    on a case already at ``spacing_mm`` both paths are the same. The sequences run in ``threads``
    worker threads (default: torch's thread count; torch, numpy and N4 release the GIL).
    """
    images, present, _ = model_grid_preprocess(case, spacing_mm, bias_correction=bias_correction, threads=threads)
    return images, present


@dataclass(frozen=True)
class SequenceNorm:
    """How one sequence was normalised on the model grid: its N4 log field there (None: no field)
    and the corrected brain's mean and standard deviation."""

    log_field: torch.Tensor | None  # (x, y, z) on the model grid
    mean: float
    std: float


@dataclass(frozen=True)
class CaseGridBoxes:
    """Boxes of a case's own grid normalised as ``normalize_case_images`` normalises the whole
    grid (N4 field divided out, z-scored over the brain, clipped), with the field interpolated from
    the model grid and the brain's statistics measured there: the same N4 fit (both fit at
    ``BIAS_FIT_MM``), done once. Reading a box costs the box, not the scan."""

    images: Mapping[str, np.ndarray]  # the case's own images (not copied)
    shape: tuple[int, int, int]
    norms: Mapping[str, SequenceNorm]

    def crop(self, box: Sequence[slice]) -> torch.Tensor:
        """(4, bx, by, bz) float32 in SEQUENCES order, missing sequences 0."""
        box = tuple(slice(*b.indices(n)[:2]) for b, n in zip(box, self.shape))
        out = torch.zeros((len(SEQUENCES), *(b.stop - b.start for b in box)), dtype=torch.float32)
        for seq, norm in self.norms.items():
            v = torch.from_numpy(np.nan_to_num(np.asarray(self.images[seq][box], dtype=np.float32),
                                               nan=0.0, posinf=0.0, neginf=0.0))
            brain = v != 0
            if norm.log_field is not None:
                v = v * torch.exp(-_interpolate_box(norm.log_field, self.shape, box))
            z = ((v - norm.mean) / (norm.std if norm.std > 1e-8 else 1.0)).clamp_(-CLIP, CLIP)
            out[SEQUENCES.index(seq)] = torch.where(brain, z, torch.zeros(()))
        return out


def _linear_weights(n_out: int, n_in: int, start: int, stop: int) -> torch.Tensor:
    """(stop - start, n_in): rows ``start .. stop - 1`` of the linear interpolation from ``n_in``
    to ``n_out`` points as ``F.interpolate(..., align_corners=False)`` makes it."""
    i = torch.arange(start, stop, dtype=torch.float64)
    src = ((i + 0.5) * (n_in / n_out) - 0.5).clamp(min=0.0)
    lo = src.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    frac = (src - lo).clamp(0.0, 1.0)
    w = torch.zeros((stop - start, n_in), dtype=torch.float64)
    rows = torch.arange(stop - start)
    w.index_put_((rows, lo), 1.0 - frac, accumulate=True)
    w.index_put_((rows, hi), frac, accumulate=True)
    return w.float()


def _interpolate_box(field: torch.Tensor, shape: Sequence[int], box: Sequence[slice]) -> torch.Tensor:
    """``resample_to_shape(field[None], shape, "trilinear")[0][box]`` without the whole grid."""
    wx, wy, wz = (_linear_weights(int(n), int(m), b.start, b.stop) for n, m, b in zip(shape, field.shape, box))
    return torch.einsum("ai,ijk->ajk", wx, field.float()).matmul(wz.T).transpose(1, 2).matmul(wy.T).transpose(1, 2)


def model_grid_preprocess(case, spacing_mm: float, *, bias_correction: str = "none", threads: int | None = None
                          ) -> tuple[torch.Tensor, np.ndarray, CaseGridBoxes]:
    """``model_grid_images``' (images, present) and the case's own grid as ``CaseGridBoxes``."""
    if bias_correction not in BIAS_CORRECTIONS:
        raise ValueError(f"bias_correction must be one of {BIAS_CORRECTIONS}, got {bias_correction!r}")
    spacing_in = tuple(float(s) for s in case.spacing)
    shape = target_shape(case.shape, spacing_in, spacing_mm)
    out = torch.zeros((len(SEQUENCES), *shape), dtype=torch.float32)
    present = present_vector(case)
    seqs = [s for s in SEQUENCES if s in case.images]
    workers = max(1, min(len(seqs), int(threads or torch.get_num_threads())))
    n4_threads = max(1, int(threads or torch.get_num_threads()) // workers)
    norms: dict[str, SequenceNorm] = {}

    def one(seq: str) -> None:
        out[SEQUENCES.index(seq)], norms[seq] = _normalised_at(
            case.images[seq], spacing_in, spacing_mm, shape, bias_correction=bias_correction, n4_threads=n4_threads)

    if workers == 1:
        for seq in seqs:
            one(seq)
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vlseg-preprocess") as pool:
            list(pool.map(one, seqs))
    boxes = CaseGridBoxes(images=case.images, shape=tuple(int(n) for n in case.shape),  # type: ignore[arg-type]
                          norms={s: norms[s] for s in seqs})
    return out, present, boxes


def _normalised_at(vol: np.ndarray, spacing_in: Sequence[float], spacing_mm: float,
                   shape: Sequence[int], *, bias_correction: str, n4_threads: int
                   ) -> tuple[torch.Tensor, SequenceNorm]:
    """One sequence bias-corrected, z-scored over the brain and clipped, on the grid ``shape``,
    and how it was normalised."""
    arr = np.nan_to_num(np.asarray(vol, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    v = torch.from_numpy(arr)
    brain = v != 0
    n = int(torch.count_nonzero(brain))  # counts, not sums: ten times faster on a 1 mm volume
    if n < 2:
        return torch.zeros(tuple(int(s) for s in shape), dtype=torch.float32), SequenceNorm(None, 0.0, 1.0)
    fits_n4 = int(np.count_nonzero(arr < 0)) <= 0.01 * n  # N4 cannot model negative (normalised) data
    # Resample the brain's first and second moments and its share of each voxel (linear; one at
    # a time, so no more than two full-grid temporaries live at once)
    r = resample_to_shape(v[None], shape, "trilinear")[0]
    r2 = resample_to_shape((v * v)[None], shape, "trilinear")[0]
    b = resample_to_shape(brain.float()[None], shape, "trilinear")[0]
    del v
    log_field = None
    if bias_correction == "n4" and fits_n4:
        log_field = fit_log_bias_field(r.clamp(min=0), b, (spacing_mm,) * 3, threads=n4_threads)
        if log_field is not None:
            gain = torch.exp(-log_field)
            r, r2 = r * gain, r2 * gain * gain
    weight = float(b.double().sum())
    mean = float(r.double().sum()) / weight
    std = max(float(r2.double().sum()) / weight - mean * mean, 0.0) ** 0.5
    out = (r - mean * b) / (std if std > 1e-8 else 1.0)
    return out.clamp_(-CLIP, CLIP), SequenceNorm(log_field, mean, std)


def normalize_images(images: Mapping[str, np.ndarray], shape: Sequence[int] | None = None, *,
                     bias_correction: str = "none", spacing: Sequence[float] | None = None) -> np.ndarray:
    """{canonical seq: array} -> (4, X, Y, Z) float32, zeros for missing sequences.

    ``bias_correction``: "none", or "n4" (``correct_bias_field`` per sequence first; needs
    ``spacing``, the voxel size in mm).
    """
    if bias_correction not in BIAS_CORRECTIONS:
        raise ValueError(f"bias_correction must be one of {BIAS_CORRECTIONS}, got {bias_correction!r}")
    if bias_correction == "n4" and spacing is None:
        raise ValueError("bias_correction='n4' needs the voxel spacing")
    if shape is None:
        if not images:
            raise ValueError("no images to normalise")
        shape = next(iter(images.values())).shape
    out = np.zeros((len(SEQUENCES), *shape), dtype=np.float32)
    for i, seq in enumerate(SEQUENCES):
        if seq in images:
            vol = images[seq]
            if bias_correction == "n4":
                vol = correct_bias_field(vol, spacing)  # type: ignore[arg-type]
            out[i] = normalize_volume(vol)
    return out


def present_from_keys(keys) -> np.ndarray:
    keys = set(keys)
    return np.array([s in keys for s in SEQUENCES], dtype=bool)


def normalize_case_images(case, *, bias_correction: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """A ``vlseg.io.Case`` -> (images (4, X, Y, Z) float32 z-scored in the case's RAS+ grid,
    present (4,) bool)."""
    spacing = tuple(float(s) for s in case.spacing)
    return (normalize_images(case.images, tuple(case.shape), bias_correction=bias_correction, spacing=spacing),
            present_vector(case))


def present_vector(case) -> np.ndarray:
    """(4,) bool: which of SEQUENCES the case has."""
    return present_from_keys(case.images)


def _mode_kwargs(mode: str) -> dict:
    if mode in ("trilinear", "linear", "bilinear"):
        return {"mode": "trilinear", "align_corners": False}
    if mode in ("nearest", "nearest-exact"):
        return {"mode": "nearest-exact"}
    if mode == "area":
        return {"mode": "area"}
    raise ValueError(f"unknown resampling mode {mode!r}; use trilinear, nearest or area")


def target_shape(shape: Sequence[int], spacing_in: Sequence[float] | float,
                 spacing_out: Sequence[float] | float) -> tuple[int, int, int]:
    """Grid size that covers the same field of view at ``spacing_out``."""
    s_in = np.broadcast_to(np.asarray(spacing_in, dtype=float), (3,))
    s_out = np.broadcast_to(np.asarray(spacing_out, dtype=float), (3,))
    return tuple(max(1, int(round(n * a / b))) for n, a, b in zip(shape, s_in, s_out))


def resample_to_shape(vol: torch.Tensor, shape: Sequence[int], mode: str = "trilinear") -> torch.Tensor:
    """(C, X, Y, Z) -> (C, *shape). Integer/bool inputs must use mode='nearest'."""
    if vol.dim() != 4:
        raise ValueError(f"expected (C, X, Y, Z), got {tuple(vol.shape)}")
    shape = tuple(int(s) for s in shape)
    if tuple(vol.shape[1:]) == shape:
        return vol
    kw = _mode_kwargs(mode)
    dtype = vol.dtype
    x = vol.unsqueeze(0)
    if not x.is_floating_point():
        if kw["mode"] != "nearest-exact":
            raise ValueError("integer/bool volumes can only be resampled with mode='nearest'")
        x = x.float()
    out = F.interpolate(x, size=shape, **kw)[0]
    return out.to(dtype) if not vol.is_floating_point() else out


def resample_to_spacing(vol: torch.Tensor, spacing_in: Sequence[float] | float,
                        spacing_out: Sequence[float] | float, mode: str = "trilinear") -> torch.Tensor:
    """(C, X, Y, Z) at ``spacing_in`` mm -> same field of view at ``spacing_out`` mm."""
    return resample_to_shape(vol, target_shape(vol.shape[1:], spacing_in, spacing_out), mode)


def nonzero_bbox(vol: np.ndarray | torch.Tensor, margin: int = 0) -> tuple[slice, slice, slice]:
    """Bounding box of voxels nonzero in any channel of (C, X, Y, Z), grown by ``margin``.

    An all-zero volume gives the full extent.
    """
    arr = vol.detach().cpu().numpy() if isinstance(vol, torch.Tensor) else np.asarray(vol)
    any_nz = np.any(arr != 0, axis=0)
    if not any_nz.any():
        return tuple(slice(0, n) for n in any_nz.shape)  # type: ignore[return-value]
    sl = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(any_nz.any(axis=other))
        sl.append(slice(max(0, int(idx[0]) - margin), min(any_nz.shape[axis], int(idx[-1]) + 1 + margin)))
    return tuple(sl)  # type: ignore[return-value]


def pad_to_multiple(vol: torch.Tensor, k: int, *, min_size: Sequence[int] | None = None
                    ) -> tuple[torch.Tensor, tuple[slice, slice, slice]]:
    """Zero-pad (C, X, Y, Z) at the end of each axis to a multiple of ``k`` (and >= min_size).

    Returns the padded volume and the slices that recover the original region.
    """
    shape = vol.shape[1:]
    mins = tuple(min_size) if min_size is not None else (0, 0, 0)
    new = [max(-(-n // k) * k, -(-m // k) * k) for n, m in zip(shape, mins)]
    pad = []
    for n, t in reversed(list(zip(shape, new))):
        pad += [0, t - n]
    out = F.pad(vol, pad) if any(pad) else vol
    return out, tuple(slice(0, n) for n in shape)  # type: ignore[return-value]



def _aligned_span(lo: int, hi: int, n_in: int, n_out: int) -> tuple[int, int, int, int]:
    """Source span [a, b) covering [lo - 1, hi + 1) and output span [ja, jb) such that resizing
    [a, b) to jb - ja voxels reproduces exactly the full n_in -> n_out linear interpolation."""
    g = math.gcd(n_in, n_out)
    p_in, p_out = n_in // g, n_out // g
    a = max(0, (lo - 1) // p_in * p_in)
    b = min(n_in, -(-(hi + 1) // p_in) * p_in)
    ja = a // p_in * p_out
    jb = n_out if b == n_in else b // p_in * p_out
    return a, b, ja, jb


def uncrop_resample(block: torch.Tensor, crop: Sequence[slice], grid_shape: Sequence[int],
                    out_shape: Sequence[int]) -> np.ndarray:
    """Trilinear resampling of a volume that is zero outside ``crop``, computed near the crop only.

    ``block`` (C, *crop size) is the nonzero part of a (C, *grid_shape) volume; the result equals
    ``resample_to_shape(full_volume, out_shape, "trilinear")`` (same kernel on an aligned sub-box,
    which is the whole volume only when the size ratio has no common period). Returns a numpy
    array; its zero part is never written (calloc'd pages), which matters for 1 mm outputs.
    """
    out = np.zeros((block.shape[0], *[int(s) for s in out_shape]), dtype=np.float32)
    spans = [_aligned_span(int(sl.start), int(sl.stop), int(n_in), int(n_out))
             for sl, n_in, n_out in zip(crop, grid_shape, out_shape)]
    # Embed the crop in the aligned source box (zeros around it), resize, paste.
    src = torch.zeros((block.shape[0], *[b - a for a, b, _, _ in spans]), dtype=block.dtype)
    src[(slice(None), *[slice(sl.start - a, sl.stop - a) for sl, (a, _, _, _) in zip(crop, spans)])] = block
    resized = resample_to_shape(src, [jb - ja for _, _, ja, jb in spans], "trilinear")
    out[(slice(None), *[slice(ja, jb) for _, _, ja, jb in spans])] = resized.float().numpy()
    return out
