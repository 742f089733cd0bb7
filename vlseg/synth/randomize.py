"""Domain-randomized training samples: random anatomy, tumor, contrast, artefacts, resolution.

    synth = RandomizedSynth(spacing_mm=2.0)
    sample = synth.sample(np.random.default_rng(seed))   # images (4, X, Y, Z), labels, record

One sample, each stage from its own child stream of the generator (so a stage's draws do not
shift another's):

1. anatomy (``randomize_anatomy``): the cached template label map (GM, WM, sulcal CSF,
   ventricles) under a random affine, left/right flip, smooth warp and ventricle zoom;
2. tumor: a lesion layout from the phantom generator's ``sample_tumor``/``tumor_fields`` with a
   morphology drawn first (rim / solid / non-enhancing, cystic, multifocal, small, large,
   callosal, infratentorial) and its mass effect; tumors are kept in a small pool and reused
   for ``tumor_reuse`` samples on average (each reuse gets a new pose, warp and contrast);
3. contrast (``randomize_contrast``): per-label Gaussian mixture, label-defining relations kept;
4. acquisition (``randomize_artefacts``): per sequence bias, Gibbs, ghosting, motion, spikes,
   Rician noise, thick slices (shared by all sequences with ``p_thick_shared``), low resolution,
   gamma; then z-scored exactly as the predictor does.

Output is the brain's bounding box at the model spacing (2 voxels margin), like a
preprocessing-cache entry, so the training mixture crops and augments it the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vlseg.vocab import SEQUENCES
from vlseg.model.preprocess import nonzero_bbox, normalize_images
from vlseg.synth.randomize_anatomy import (
    LABELS,
    MARGIN_VOX,
    TUMOR_LABELS,
    Anatomy,
    LabelMap,
    TumorDraw,
    load_anatomy,
    render_labels,
    sample_spatial,
    sample_tumor_draw,
)
from vlseg.synth.randomize_artefacts import acquire
from vlseg.synth.randomize_contrast import ContrastDraw, render_intensities, sample_contrast
from vlseg.synth.randomize_params import DEFAULT_RANDOMIZE, RandomizeConfig


@dataclass(frozen=True)
class RandomizedSample:
    images: np.ndarray               # (4, X, Y, Z) float32 z-scored, 0 outside the brain
    labels: dict[str, np.ndarray]    # TUMOR_LABELS ("NCR", "ED", "ET", "RC"): (X, Y, Z) bool
    brain: np.ndarray                # (X, Y, Z) bool
    raw: np.ndarray                  # (4, X, Y, Z) float32 intensities before normalization
    affine: np.ndarray               # 4x4 index -> world mm (RAS) of the arrays
    record: dict[str, Any]           # what was drawn (JSON-able)


class RandomizedSynth:
    """Renders randomized samples at ``spacing_mm``; holds the cached anatomy and a tumor pool.

    ``sample(rng)`` is deterministic for the generator's state and the pool's history; with
    ``pool=False`` (or ``tumor_reuse == 1``) every call draws a new tumor and a sample depends on
    the generator alone.
    """

    def __init__(self, *, spacing_mm: float, config: RandomizeConfig = DEFAULT_RANDOMIZE,
                 bias_correction: str = "none") -> None:
        if not (np.isfinite(spacing_mm) and 0.5 <= spacing_mm <= 8.0):
            raise ValueError(f"spacing_mm must lie within [0.5, 8] mm, got {spacing_mm}")
        self.spacing_mm = float(spacing_mm)
        self.config = config
        self.bias_correction = bias_correction  # the trained model's test-time correction, applied here too
        self.anatomy: Anatomy = load_anatomy(fine=self.spacing_mm < 2.0)
        self._pool: list[TumorDraw] = []

    def _tumor(self, rng: np.random.Generator, pool: bool) -> TumorDraw:
        cfg = self.config
        if not pool or cfg.tumor_reuse <= 1.0:
            return sample_tumor_draw(rng, cfg, self.anatomy)
        # Reuse a pooled tumor with probability 1 - 1/reuse (each lives ~reuse samples).
        if len(self._pool) >= cfg.tumor_pool and rng.uniform() >= 1.0 / cfg.tumor_reuse:
            return self._pool[int(rng.integers(len(self._pool)))]
        draw = sample_tumor_draw(rng, cfg, self.anatomy)
        if len(self._pool) < cfg.tumor_pool:
            self._pool.append(draw)
        else:
            self._pool[int(rng.integers(len(self._pool)))] = draw
        return draw

    def label_map(self, rng: np.random.Generator, *, pool: bool = True) -> tuple[LabelMap, TumorDraw, dict[str, Any]]:
        """Stages 1-2: the sample's label fractions and hard labels on the output grid."""
        rng_space, rng_tumor = _children(rng, 2)
        draw, shape, out_aff = sample_spatial(rng_space, self.config, self.anatomy, self.spacing_mm)
        tumor = self._tumor(rng_tumor, pool)
        lm = _crop(render_labels(draw, tumor, shape, out_aff, self.anatomy, self.spacing_mm))
        info = {"flipped": draw.flipped, "ventricle_scale": round(draw.ventricle_scale, 3),
                "elastic_max_mm": round(float(np.abs(draw.elastic_nodes).max()), 2), "tumor": tumor.describe()}
        return lm, tumor, info

    def sample(self, rng: np.random.Generator, *, pool: bool = True, artefacts: bool = True,
               contrast: ContrastDraw | None = None) -> RandomizedSample:
        """One randomized sample (see module docstring). ``artefacts=False`` skips stage 4's
        artefacts and resolution (the clean mixture image, for tests and figures); ``contrast``
        fixes stage 3's draw."""
        cfg = self.config
        rng_label, rng_contrast, rng_acq = _children(rng, 3)
        lm, _, info = self.label_map(rng_label, pool=pool)
        c = contrast if contrast is not None else sample_contrast(rng_contrast, cfg)
        raw = render_intensities(lm, c, rng_contrast)                   # (4, X, Y, Z)

        # Acquisition per sequence; a 2D protocol may share one slice axis and thickness.
        acq: dict[str, list[str]] = {}
        if artefacts:
            shared = None
            if rng_acq.uniform() < cfg.p_thick_shared and rng_acq.uniform() < cfg.p_thick:
                shared = (int(rng_acq.integers(3)), float(rng_acq.uniform(*cfg.thick_mm)))
            for i, seq in enumerate(SEQUENCES):
                thick = shared
                if shared is None and rng_acq.uniform() < cfg.p_thick:
                    thick = (int(rng_acq.integers(3)), float(rng_acq.uniform(*cfg.thick_mm)))
                raw[i], rec = acquire(raw[i], lm.brain, rng_acq, cfg, spacing_mm=self.spacing_mm, thick=thick)
                acq[seq] = rec.steps

        # Normalize as the predictor does (with the model's bias correction, if it has one).
        images = normalize_images(dict(zip(SEQUENCES, raw)), raw.shape[1:], bias_correction=self.bias_correction,
                                  spacing=(self.spacing_mm,) * 3)
        record = {"spacing_mm": self.spacing_mm, **info, "contrast": "realistic" if c.realistic else "free",
                  "means": {s: dict(zip(LABELS, map(float, c.means[i]))) for i, s in enumerate(SEQUENCES)},
                  "acquisition": acq, "shape": list(images.shape[1:])}
        return RandomizedSample(images=images, labels=lm.labels, brain=lm.brain, raw=raw, affine=lm.affine,
                                record=record)


def _children(rng: np.random.Generator, n: int) -> list[np.random.Generator]:
    """``n`` independent generators seeded from one draw of ``rng``."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(int(rng.integers(2**63))).spawn(n)]


def _crop(lm: LabelMap) -> LabelMap:
    """The label map on the brain's bounding box plus MARGIN_VOX (as the preprocessing cache)."""
    brain = lm.brain
    if not brain.any():
        raise RuntimeError("randomized sample has an empty brain mask")
    b = nonzero_bbox(brain[None], margin=MARGIN_VOX)
    affine = lm.affine.copy()
    affine[:3, 3] = lm.affine[:3, :3] @ [sl.start for sl in b] + lm.affine[:3, 3]
    return LabelMap(fractions=np.ascontiguousarray(lm.fractions[(slice(None), *b)]),
                    brain=np.ascontiguousarray(brain[b]),
                    labels={k: np.ascontiguousarray(v[b]) for k, v in lm.labels.items()},
                    texture=np.ascontiguousarray(lm.texture[b]), affine=affine)


__all__ = ["DEFAULT_RANDOMIZE", "TUMOR_LABELS", "RandomizeConfig", "RandomizedSample", "RandomizedSynth"]
