"""Every range the domain-randomization engine draws from, in one frozen config.

The engine (``vlseg.synth.randomize``) renders training samples from a label map of tissues and
tumor classes, with appearance drawn far beyond what scanners produce (SynthSeg-style), so the
network has to rely on what defines the labels. Lengths are in mm, angles in degrees,
probabilities in [0, 1]; a range is a ``(low, high)`` pair drawn uniformly. Artefact
probabilities are per sequence (each sequence is its own acquisition).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from vlseg.errors import InputError

Range = tuple[float, float]


@dataclass(frozen=True)
class RandomizeConfig:
    """Ranges and probabilities of one randomized training sample."""

    # --- anatomy: pose and shape of the template brain ---
    scale: Range = (0.85, 1.15)                 # isotropic head size
    scale_aniso: Range = (0.93, 1.07)           # extra per-axis factor
    rotation_deg: Range = (0.0, 15.0)           # about a uniformly random axis
    flip_prob: float = 0.5                      # left/right mirror
    elastic_mm: Range = (0.0, 4.0)              # std of the displacement at the lattice nodes
    elastic_spacing_mm: Range = (24.0, 48.0)    # lattice spacing (smoothness of the warp)
    ventricle_scale: Range = (0.75, 1.6)        # local zoom about the ventricles
    mass_effect: bool = True                    # anatomy pushed away from the tumor
    # --- tumor morphology (reuses vlseg.synth.tumor's lesion generator) ---
    p_no_tumor: float = 0.04                    # healthy brain: every concept empty
    p_multifocal: float = 0.15
    p_small: float = 0.12                       # single lesion, core < ~2 mL, little edema
    p_large: float = 0.12                       # core radius in large_radius_mm (> 150 mL whole tumor)
    p_callosal: float = 0.08                    # butterfly lesion across the corpus callosum
    p_infratentorial: float = 0.12              # cerebellum / brainstem
    p_no_enhancement: float = 0.2               # core all necrotic / non-enhancing (no ET)
    p_no_necrosis: float = 0.2                  # solid enhancing core (no NCR)
    p_cyst: float = 0.2                         # fluid-filled part of the necrotic core (label NCR)
    small_radius_mm: Range = (2.5, 7.0)
    large_radius_mm: Range = (31.0, 42.0)
    cyst_depth_mm: Range = (1.0, 6.0)           # cyst starts this far inside the necrosis
    p_post: float = 0.0                         # post-treatment: the tumor's centre resected (a cavity, RC)
    tumor_reuse: float = 3.0                    # mean samples per generated tumor (pool); 1: always new
    tumor_pool: int = 8
    # --- contrast: per-label Gaussian mixture, per sequence ---
    p_realistic_contrast: float = 0.5           # start from the phantom table (jittered) instead of free
    realistic_jitter: Range = (0.7, 1.4)
    free_mean: Range = (0.05, 1.0)              # free draw of every label's mean
    label_std: Range = (0.0, 0.12)              # within-label std / mean
    tumor_texture: Range = (0.0, 0.2)           # tumor heterogeneity std / mean
    et_margin: Range = (0.15, 0.8)              # ET on t1c >= (1 + m) x every other label on t1c
    enhancement_margin: Range = (0.1, 0.5)      # ET t1c/t1n, relative to GM/WM, >= (1 + m)
    ed_margin: Range = (0.25, 0.8)              # ED >= (1 + m) x WM on t2w, x max(GM, WM) on t2f
    fluid_margin: Range = (0.2, 1.0)            # CSF, ventricles <= min(GM, WM) / (1 + m) on t2f
    separation: float = 0.25                    # NCR vs ED relative difference, in >= 1 sequence
    # --- artefacts (probability per sequence) ---
    p_bias: float = 0.8
    bias_coeff: Range = (0.0, 0.3)              # MONAI RandBiasField polynomial coefficients
    p_gamma: float = 0.5
    gamma: Range = (0.6, 1.7)
    p_noise: float = 0.8
    noise_std: Range = (0.0, 0.12)              # Rician sigma / image std
    p_gibbs: float = 0.2
    gibbs_alpha: Range = (0.2, 0.6)             # fraction of k-space truncated
    p_ghosting: float = 0.12
    ghost_strength: Range = (0.1, 0.6)
    ghost_period: tuple[int, int] = (2, 6)      # every n-th k-space line modulated
    p_motion: float = 0.1
    motion_mm: Range = (1.0, 5.0)               # head shift partway through the acquisition
    p_spike: float = 0.05
    # --- resolution ---
    p_thick: float = 0.5                        # thick slices (then back to the model grid)
    thick_mm: Range = (3.0, 7.0)
    p_thick_shared: float = 0.5                 # one 2D protocol (axis, thickness) for every sequence
    p_lowres: float = 0.15                      # isotropic low resolution (MONAI)
    lowres_zoom: Range = (0.5, 0.9)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name.startswith("p_") or f.name == "flip_prob":
                if not 0.0 <= v <= 1.0:
                    raise InputError(f"randomize.{f.name} must be a probability in [0, 1], got {v}")
            elif isinstance(v, tuple):
                if len(v) != 2 or v[0] > v[1]:
                    raise InputError(f"randomize.{f.name} must be a (low, high) range, got {list(v)}")
        for name in ("scale", "scale_aniso", "gamma", "ventricle_scale", "elastic_spacing_mm", "thick_mm",
                     "lowres_zoom", "free_mean", "small_radius_mm", "large_radius_mm"):
            if getattr(self, name)[0] <= 0:
                raise InputError(f"randomize.{name} must be positive, got {list(getattr(self, name))}")
        if self.ventricle_scale[0] < 0.6 or self.ventricle_scale[1] > 2.0:
            raise InputError("randomize.ventricle_scale must lie within [0.6, 2.0] (larger folds the anatomy)")
        if self.p_no_enhancement + self.p_no_necrosis > 1.0:
            raise InputError("randomize.p_no_enhancement + p_no_necrosis must not exceed 1")
        if self.p_multifocal + self.p_small + self.p_large > 1.0:
            raise InputError("randomize.p_multifocal + p_small + p_large must not exceed 1")
        if self.p_callosal + self.p_infratentorial > 1.0:
            raise InputError("randomize.p_callosal + p_infratentorial must not exceed 1")
        if not 0.0 <= self.separation <= 1.0:
            raise InputError(f"randomize.separation must lie in [0, 1], got {self.separation}")
        if self.tumor_reuse < 1.0 or self.tumor_pool < 1:
            raise InputError("randomize.tumor_reuse must be >= 1 and tumor_pool >= 1")
        if self.ghost_period[0] < 2:
            raise InputError("randomize.ghost_period must start at 2 or more")


DEFAULT_RANDOMIZE = RandomizeConfig()
