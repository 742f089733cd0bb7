"""Training data for the refinement stage: the ordinary mixture at 1 mm, plus a *simulated*
first-stage probability per prompt slot.

The refiner never sees a real first-stage model while it trains, so any first stage (a retrained
one included) can sit in front of it. A simulated stage-1 probability is the slot's target mask
degraded the way a coarse model degrades it:

    target (1 mm) ─► area fraction at 2 mm (kept soft, so thin rims survive as partial values)
    ─► grey erode / dilate a voxel ─► a piece missing (a ball cut out) ─► a false blob nearby
    ─► Gaussian blur ─► random operating point, sharpness and smooth logit noise ─► sigmoid
    ─► back to 1 mm (trilinear); now and then the concept is missed entirely

Partial labels are unchanged: slots with loss mask 0 get a simulation of an empty mask and add
no loss (``MixtureDataset`` decides the slots).
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from vlseg.training.config import Stage1SimConfig
from vlseg.training.sources import MixtureDataset


def _ball(shape: tuple[int, ...], centre: np.ndarray, radius: float) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    d2 = sum((g - c) ** 2 for g, c in zip(grids, centre))
    return d2 <= radius ** 2


def simulate_stage1(target: np.ndarray, rng: np.random.Generator, sim: Stage1SimConfig) -> np.ndarray:
    """A first-stage-like probability (D, H, W) float32 in [0, 1] for a binary ``target`` at 1 mm."""
    shape = target.shape
    t = torch.from_numpy(target.astype(np.float32))[None, None]                 # (1, 1, D, H, W)
    f = 1 if rng.uniform() < sim.p_fine else sim.factor
    coarse = F.avg_pool3d(t, f, ceil_mode=True)[0, 0].numpy()                  # area fraction at the coarse grid
    soft = coarse.copy()                                                        # kept soft: thin rims survive as < 1
    if rng.uniform() < sim.p_missed:
        soft[:] = 0.0
    if soft.any() and rng.uniform() < sim.p_erode_dilate:
        # The commonest coarse-model errors: a rim one coarse voxel too thin or too thick
        soft = (ndimage.grey_erosion if rng.uniform() < 0.5 else ndimage.grey_dilation)(soft, size=(2, 2, 2))
    if (soft > 0.5).any() and rng.uniform() < sim.p_missing_piece:
        idx = np.argwhere(soft > 0.5)
        centre = idx[int(rng.integers(len(idx)))]
        soft[_ball(soft.shape, centre, rng.uniform(*sim.piece_radius))] = 0.0
    if rng.uniform() < sim.p_false_blob:
        idx = np.argwhere(coarse > 0) if coarse.any() else np.argwhere(np.ones_like(soft, dtype=bool))
        centre = idx[int(rng.integers(len(idx)))] + rng.integers(-4, 5, size=3)
        soft = np.maximum(soft, _ball(soft.shape, centre, rng.uniform(*sim.blob_radius)).astype(np.float32))
    soft = ndimage.gaussian_filter(soft.astype(np.float32), rng.uniform(*sim.blur_sigma))
    noise = rng.normal(0.0, 1.0, size=tuple(max(1, n // 4) for n in soft.shape)).astype(np.float32)
    noise = F.interpolate(torch.from_numpy(noise)[None, None], size=soft.shape, mode="trilinear",
                          align_corners=False)[0, 0].numpy()
    # A random operating point (calibration) and sharpness, smooth noise on the logit
    level = rng.uniform(*sim.level)
    logit = (soft - level) * rng.uniform(*sim.sharpness) + noise * rng.uniform(0.0, sim.noise_std)
    prob = torch.sigmoid(torch.from_numpy(logit))[None, None]
    fine = F.interpolate(prob, size=shape, mode="trilinear", align_corners=False)[0, 0]
    return fine.clamp(0, 1).numpy().astype(np.float32)


class RefineMixture(torch.utils.data.IterableDataset):
    """``MixtureDataset`` samples with a ``stage1`` entry (P, D, H, W) float32 per slot."""

    def __init__(self, mixture: MixtureDataset, sim: Stage1SimConfig) -> None:
        super().__init__()
        self.mixture = mixture
        self.sim = sim

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        m = self.mixture
        rng = np.random.default_rng([m.seed, m.rank, worker, m.start_step, 7])
        for sample in m:
            targets = sample["targets"].numpy()
            sample["stage1"] = torch.from_numpy(np.stack([simulate_stage1(t, rng, self.sim) for t in targets]))
            yield sample


def collate_refine(samples: list[dict[str, Any]]) -> dict[str, Any]:
    from vlseg.training.sources import collate

    out = collate(samples)
    out["stage1"] = torch.stack([s["stage1"] for s in samples])  # (B, P, D, H, W)
    return out
