"""3D augmentation of one training sample (NumPy, channel-first, after the preprocessing cache).

A sample is ``images`` (4, X, Y, Z) float32 z-scored (zeros where a sequence is missing and
outside the brain), ``bits`` (X, Y, Z) uint8 with bit ``concept_bit(c)`` set where concept ``c`` is
present, and ``present`` (4,) bool. Steps: crop (biased to annotated foreground), flips,
intensity scale/shift, gamma, noise, random sequence dropout (at least one sequence stays;
optionally biased to the sequence sets clinics send).
"""
from __future__ import annotations

import numpy as np

from vlseg.vocab import SEQUENCES
from vlseg.training.config import AugmentConfig


def random_crop(
    images: np.ndarray,
    bits: np.ndarray,
    *,
    size: tuple[int, int, int],
    foreground: np.ndarray | None,
    foreground_prob: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Crop (and zero-pad where the volume is smaller) a ``size`` box.

    With probability ``foreground_prob`` the box is centred on a random voxel of ``foreground``
    (bool (X, Y, Z): the annotated tumor of this sample), otherwise placed uniformly.
    """
    shape = np.array(bits.shape)
    size_a = np.array(size)
    if foreground is not None and rng.random() < foreground_prob:
        idx = np.flatnonzero(foreground)
        if idx.size:
            centre = np.array(np.unravel_index(idx[int(rng.integers(idx.size))], bits.shape))
            start = centre - size_a // 2
        else:
            start = _uniform_start(shape, size_a, rng)
    else:
        start = _uniform_start(shape, size_a, rng)
    # Keep the box inside the volume where the volume is large enough; centre it otherwise.
    start = np.where(shape >= size_a, np.clip(start, 0, np.maximum(shape - size_a, 0)), (shape - size_a) // 2)
    out_img = np.zeros((images.shape[0], *size), dtype=images.dtype)
    out_bits = np.zeros(size, dtype=bits.dtype)
    src, dst = [], []
    for s, n, c in zip(start, shape, size_a):
        lo, hi = max(s, 0), min(s + c, n)
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out_img[(slice(None), *dst)] = images[(slice(None), *src)]
    out_bits[tuple(dst)] = bits[tuple(src)]
    return out_img, out_bits


def _uniform_start(shape: np.ndarray, size: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    hi = np.maximum(shape - size, 0)
    return np.array([int(rng.integers(h + 1)) for h in hi])


def augment(
    images: np.ndarray,
    bits: np.ndarray,
    present: np.ndarray,
    *,
    config: AugmentConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return augmented copies of (images (4, ...), bits (...), present (4,))."""
    images = images.astype(np.float32, copy=True)
    present = present.astype(bool, copy=True)
    brain = np.any(images != 0, axis=0)                      # (X, Y, Z) voxels that carry signal

    # Flips (same axes for image and labels; the model has no left/right prior to learn)
    for axis in range(3):
        if rng.random() < config.flip_prob:
            images = np.flip(images, axis=axis + 1)
            bits = np.flip(bits, axis=axis)
            brain = np.flip(brain, axis=axis)
    images = np.ascontiguousarray(images)
    bits = np.ascontiguousarray(bits)
    brain = np.ascontiguousarray(brain)

    for ch in np.flatnonzero(present):
        x = images[ch]
        vals = x[brain]
        if vals.size == 0:
            continue
        # Gamma on the brain's intensity range (nnU-Net style), range preserved
        if rng.random() < config.gamma_prob:
            lo, hi = float(vals.min()), float(vals.max())
            if hi > lo:
                gamma = rng.uniform(*config.gamma_range)
                vals = ((vals - lo) / (hi - lo)) ** gamma * (hi - lo) + lo
        # Intensity scale / shift
        vals = vals * rng.uniform(*config.scale_range) + rng.uniform(*config.shift_range)
        # Gaussian noise
        if rng.random() < config.noise_prob:
            vals = vals + rng.normal(0.0, config.noise_std * rng.random(), size=vals.shape)
        x[brain] = vals.astype(np.float32)

    # Sequence dropout: zero a proper subset of the present sequences
    idx = np.flatnonzero(present)
    if idx.size >= 2 and rng.random() < config.sequence_dropout_prob:
        drop = _dropped_sequences(present, config, rng)
        images[drop] = 0.0
        present[drop] = False
    return images, bits, present


def _dropped_sequences(present: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Indices to drop: all but one of ``config.sequence_keep_sets`` (with ``sequence_keep_prob``,
    among the sets that are a proper subset of ``present``), otherwise a uniformly random subset."""
    idx = np.flatnonzero(present)
    keeps = [k for k in (np.array([SEQUENCES.index(s) for s in ks]) for ks in config.sequence_keep_sets)
             if k.size < idx.size and np.all(present[k])]
    if keeps and rng.random() < config.sequence_keep_prob:
        keep = keeps[int(rng.integers(len(keeps)))]
        return np.setdiff1d(idx, keep)
    return rng.choice(idx, size=int(rng.integers(1, idx.size)), replace=False)
