"""Randomized acquisition: bias field, k-space artefacts, noise, thick slices, gamma.

MONAI provides the bias field (``RandBiasField``), Gibbs ringing (``RandGibbsNoise``), Rician
noise (``RandRicianNoise``), k-space spikes (``RandKSpaceSpikeNoise``), gamma
(``RandAdjustContrast``) and isotropic low resolution (``RandSimulateLowResolution``); each is
seeded from the sample's ``np.random.Generator`` just before it runs. Written here because MONAI
lacks them: ghosting and motion (k-space line modulation / phase ramps) and thick slices along
one axis (slice-profile average at the slice positions, then linear interpolation back to the
model grid: partial volume between slices, output on the model grid).

Every function works on one sequence ``(X, Y, Z)`` float32 and returns the same shape.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from monai.transforms import (
    RandAdjustContrast,
    RandBiasField,
    RandGibbsNoise,
    RandKSpaceSpikeNoise,
    RandRicianNoise,
    RandSimulateLowResolution,
)
from monai.data import get_track_meta, set_track_meta
from monai.utils import convert_data_type

from vlseg.synth.randomize_params import RandomizeConfig


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31 - 1))


def run_monai(transform, vol: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Apply a MONAI randomizable transform to ``vol`` (X, Y, Z), seeded from ``rng``.

    MONAI's metadata tracking is switched off for the call (plain tensors: ~3x less overhead per
    operation) and restored afterwards.
    """
    transform.set_random_state(seed=_seed(rng))
    tracking = get_track_meta()
    set_track_meta(False)
    try:
        out = transform(vol[None])
    finally:
        set_track_meta(tracking)
    return np.ascontiguousarray(convert_data_type(out, np.ndarray)[0][0], dtype=np.float32)


# --------------------------------------------------------------------------------------------
# written here (MONAI lacks them)

def thick_slice_matrix(n: int, factor: float, offset: float) -> np.ndarray:
    """(n, n) operator along one axis: average over slices ``factor`` voxels thick, centred at
    ``offset + j * factor``, then linear interpolation back to every voxel."""
    if factor <= 1.0:
        return np.eye(n, dtype=np.float32)
    centres = np.arange(offset - factor, n - 1 + factor, factor)
    centres = centres[(centres > -factor / 2) & (centres < n - 1 + factor / 2)]   # slices that overlap the axis
    x = np.arange(n, dtype=np.float64)
    # Slice profile: box of width ``factor`` (voxel overlap weights, partial voxels at the edges).
    lo = centres[:, None] - factor / 2
    hi = centres[:, None] + factor / 2
    w = np.clip(np.minimum(hi, x + 0.5) - np.maximum(lo, x - 0.5), 0, None)     # (S, n)
    w /= np.maximum(w.sum(1, keepdims=True), 1e-6)
    # Back to the voxels: linear between slice centres (constant beyond the end slices).
    up = np.zeros((n, len(centres)))
    if len(centres) == 1:
        up[:, 0] = 1.0
    else:
        pos = np.clip(np.interp(x, centres, np.arange(len(centres))), 0, len(centres) - 1)
        i0 = np.minimum(np.floor(pos).astype(int), len(centres) - 2)
        t = pos - i0
        up[np.arange(n), i0] = 1 - t
        up[np.arange(n), i0 + 1] = t
    return (up @ w).astype(np.float32)


def thick_slices(vol: np.ndarray, *, axis: int, thickness_mm: float, spacing_mm: float,
                 offset: float = 0.0) -> np.ndarray:
    """A ``thickness_mm`` slice acquisition along ``axis``, back on the model grid (same shape)."""
    factor = float(thickness_mm) / float(spacing_mm)
    m = torch.from_numpy(thick_slice_matrix(vol.shape[axis], factor, offset * factor))
    v = torch.from_numpy(np.ascontiguousarray(vol, np.float32)).movedim(axis, -1)
    return np.ascontiguousarray((v @ m.T).movedim(-1, axis).numpy())


def ghosting(vol: np.ndarray, *, axis: int, period: int, strength: float) -> np.ndarray:
    """Ghosts along the phase-encoding ``axis``: every ``period``-th k-space line scaled by
    ``1 - strength`` (ghost copies at FOV / period)."""
    k = np.fft.fftn(vol)
    sl = [slice(None)] * 3
    sl[axis] = slice(0, None, period)
    k[tuple(sl)] *= 1.0 - strength
    return np.abs(np.fft.ifftn(k)).astype(np.float32)


def motion(vol: np.ndarray, *, axis: int, shift_vox: np.ndarray, start: float) -> np.ndarray:
    """Rigid head shift by ``shift_vox`` (3,) during the k-space lines after fraction ``start``
    of the phase-encoding ``axis`` (acquired centre-out, so late lines are the outer ones)."""
    k = np.fft.fftshift(np.fft.fftn(vol))
    freqs = [np.fft.fftshift(np.fft.fftfreq(n)) for n in vol.shape]
    ramp = np.exp(-2j * np.pi * (freqs[0][:, None, None] * shift_vox[0] + freqs[1][None, :, None] * shift_vox[1]
                                 + freqs[2][None, None, :] * shift_vox[2]))
    order = np.abs(freqs[axis])                          # centre-out acquisition order
    late = order >= np.quantile(order, start)
    shape = [1, 1, 1]
    shape[axis] = -1
    k = np.where(late.reshape(shape), k * ramp, k)
    return np.abs(np.fft.ifftn(np.fft.ifftshift(k))).astype(np.float32)


# --------------------------------------------------------------------------------------------
# one sequence's acquisition

@dataclass
class Acquisition:
    """What was applied to one sequence (JSON-able, for the sample's record)."""

    steps: list[str] = field(default_factory=list)
    thick: tuple[int, float] | None = None     # (axis, thickness mm)


def acquire(vol: np.ndarray, brain: np.ndarray, rng: np.random.Generator, cfg: RandomizeConfig, *,
            spacing_mm: float, thick: tuple[int, float] | None) -> tuple[np.ndarray, Acquisition]:
    """Artefacts and resolution for one sequence; skull-stripped again at the end (0 outside
    ``brain``, strictly positive inside). ``thick``: (axis, mm) slices, or None for none."""
    rec = Acquisition(thick=thick)
    if rng.uniform() < cfg.p_bias:
        c = float(rng.uniform(*cfg.bias_coeff))
        vol = run_monai(RandBiasField(degree=3, coeff_range=(-c, c), prob=1.0), vol, rng)
        rec.steps.append(f"bias({c:.2f})")
    if rng.uniform() < cfg.p_gibbs:
        a = float(rng.uniform(*cfg.gibbs_alpha))
        vol = run_monai(RandGibbsNoise(prob=1.0, alpha=(a, a)), vol, rng)
        rec.steps.append(f"gibbs({a:.2f})")
    if rng.uniform() < cfg.p_ghosting:
        axis, period = int(rng.integers(3)), int(rng.integers(cfg.ghost_period[0], cfg.ghost_period[1] + 1))
        strength = float(rng.uniform(*cfg.ghost_strength))
        vol = ghosting(vol, axis=axis, period=period, strength=strength)
        rec.steps.append(f"ghosting(axis={axis}, period={period}, {strength:.2f})")
    if rng.uniform() < cfg.p_motion:
        axis = int(rng.integers(3))
        d = rng.normal(size=3)
        shift = d / np.linalg.norm(d) * rng.uniform(*cfg.motion_mm) / spacing_mm
        vol = motion(vol, axis=axis, shift_vox=shift, start=float(rng.uniform(0.2, 0.8)))
        rec.steps.append(f"motion(axis={axis}, {np.linalg.norm(shift) * spacing_mm:.1f} mm)")
    if rng.uniform() < cfg.p_spike:
        vol = run_monai(RandKSpaceSpikeNoise(prob=1.0, channel_wise=True), vol, rng)
        rec.steps.append("spike")
    if rng.uniform() < cfg.p_noise:
        sd = float(rng.uniform(*cfg.noise_std))
        vol = run_monai(RandRicianNoise(prob=1.0, std=sd, relative=True, sample_std=False), vol, rng)
        rec.steps.append(f"rician({sd:.3f})")
    if thick is not None:
        vol = thick_slices(vol, axis=thick[0], thickness_mm=thick[1], spacing_mm=spacing_mm,
                           offset=float(rng.uniform()))
        rec.steps.append(f"thick(axis={thick[0]}, {thick[1]:.1f} mm)")
    if rng.uniform() < cfg.p_lowres:
        z = float(rng.uniform(*cfg.lowres_zoom))
        vol = run_monai(RandSimulateLowResolution(prob=1.0, downsample_mode="area", zoom_range=(z, z)), vol, rng)
        rec.steps.append(f"lowres({z:.2f})")
    if rng.uniform() < cfg.p_gamma:
        g = float(rng.uniform(*cfg.gamma))
        vol = run_monai(RandAdjustContrast(prob=1.0, gamma=(g, g)), vol, rng)
        rec.steps.append(f"gamma({g:.2f})")
    # Skull-strip again: artefacts spill outside the brain; keep brain voxels nonzero.
    vol = np.abs(vol, out=vol)
    floor = np.float32(1e-3) * max(float(vol.max()), 1e-3)
    vol = np.where(brain, np.maximum(vol, floor), np.float32(0.0)).astype(np.float32)
    return vol, rec
