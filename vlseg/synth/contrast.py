"""MRI contrasts from tissue fractions: partial-volume mix, texture, bias field, Rician noise.

Every voxel's intensity is the fraction-weighted mean of its tissues' intensities for the
sequence (GM, WM, CSF, edema, necrosis, enhancing tumor), so boundaries show partial volume.
Then: multiplicative texture, a smooth multiplicative bias field, Rician noise, a random global
scale, and storage as int16 (zero outside the brain, as in skull-stripped BraTS).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vlseg.vocab import SEQUENCES
from vlseg.synth.params import TISSUES, SynthRanges


def sample_means(rng: np.random.Generator, r: SynthRanges) -> dict[str, dict[str, float]]:
    """Per-case tissue means: the base table times an independent jitter per entry."""
    return {s: {t: r.base_means[s][t] * float(rng.uniform(*r.tissue_jitter)) for t in TISSUES}
            for s in SEQUENCES}


def smooth_field(rng: np.random.Generator, shape: tuple[int, int, int], nodes: tuple[int, int, int]) -> np.ndarray:
    """Smooth random field: standard-normal values on a ``nodes`` lattice, trilinearly upsampled."""
    coarse = torch.from_numpy(rng.standard_normal(nodes, dtype=np.float32))[None, None]
    return F.interpolate(coarse, size=shape, mode="trilinear", align_corners=True)[0, 0].numpy()


def compose(
    rng: np.random.Generator,
    *,
    normal: tuple[np.ndarray, np.ndarray, np.ndarray],
    tumor: tuple[np.ndarray, np.ndarray, np.ndarray],
    texture: np.ndarray,
    sub: tuple[slice, ...],
    brain: np.ndarray,
    means: dict[str, dict[str, float]],
    r: SynthRanges,
    spacing_mm: float,
    extra: tuple[np.ndarray, ...] = (),
    extra_means: dict[str, tuple[float, ...]] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Images (int16, shaped like ``brain``) for the four sequences.

    normal: GM, WM, CSF fractions (X, Y, Z); tumor: ED, NCR, ET fractions on the ``sub`` box;
    texture: unit-std noise on the ``sub`` box (tumor heterogeneity); brain: bool skull-strip mask.
    extra: fractions of further homogeneous tissues on the ``sub`` box (a resection cavity's
    fluid and blood), with their means per sequence in ``extra_means``.
    Work is done on brain voxels only: (N, 6) tissue fractions times a 6-vector of means.
    """
    shape = brain.shape
    inside = np.flatnonzero(brain)
    frac = np.empty((inside.size, 6), np.float32)                     # (N, 6) GM WM CSF ED NCR ET
    for c, a in enumerate(normal):
        frac[:, c] = a.ravel()[inside]
    full = np.zeros(shape, np.float32)
    for c, a in enumerate(tumor, start=3):
        full[sub] = a
        frac[:, c] = full.ravel()[inside]
    ext = np.empty((inside.size, len(extra)), np.float32)
    for c, a in enumerate(extra):
        full[sub] = a
        ext[:, c] = full.ravel()[inside]
    full[sub] = texture
    tumor_tex = full.ravel()[inside]
    tumor_any = frac[:, 3:].sum(1) + ext.sum(1)
    # Tissue texture is anatomy: one field shared by all sequences (~6 mm grain).
    nodes_tex = tuple(max(2, int(n * spacing_mm / 6)) for n in shape)
    tissue_tex = smooth_field(rng, shape, nodes_tex).ravel()[inside] * (1 - tumor_any)
    nodes_bias = tuple(max(2, int(n * spacing_mm / 60)) for n in shape)  # ~60 mm bias lattice
    images: dict[str, np.ndarray] = {}
    info: dict[str, float] = {}
    for seq in SEQUENCES:
        mu = np.array([means[seq][t] for t in TISSUES], np.float32)
        # Partial-volume mix of tissue means, tumor heterogeneity, tissue texture.
        het = np.float32(rng.uniform(*r.tumor_texture))
        tex = np.float32(rng.uniform(*r.tissue_texture))
        v = frac[:, :3] @ mu[:3] + (frac[:, 3:] @ mu[3:]) * (1 + het * tumor_tex)
        if extra:
            v += ext @ np.asarray(extra_means[seq], np.float32)
        v *= 1 + tex * tissue_tex
        # Smooth multiplicative bias field.
        bias_amp = float(rng.uniform(*r.bias_amplitude))
        v *= np.exp(np.float32(bias_amp) * smooth_field(rng, shape, nodes_bias).ravel()[inside])
        # Rician noise, global scale; zero outside the brain (skull-stripped).
        sigma = np.float32(rng.uniform(*r.noise_sigma))
        n1 = rng.standard_normal(v.shape, dtype=np.float32)
        n2 = rng.standard_normal(v.shape, dtype=np.float32)
        v = np.sqrt((v + sigma * n1) ** 2 + (sigma * n2) ** 2)
        scale = float(rng.uniform(*r.global_scale))
        out = np.zeros(shape, np.int16)
        out.ravel()[inside] = np.clip(np.rint(v * scale), 1, 32767).astype(np.int16)
        images[seq] = out
        info[f"{seq}_scale"] = scale
        info[f"{seq}_noise_sigma"] = float(sigma)
        info[f"{seq}_bias_amplitude"] = bias_amp
    return images, info
