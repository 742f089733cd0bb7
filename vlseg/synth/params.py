"""Every random range the phantom generator draws from, in one frozen config.

`data/PHANTOMS.md` documents these values; keep the two in step. Lengths are in mm, angles in
degrees, probabilities in [0, 1]. A range is a ``(low, high)`` pair drawn uniformly.
"""
from __future__ import annotations

from dataclasses import dataclass, field

Range = tuple[float, float]

# Tissue classes whose mean intensity is set per sequence (partial volume = mix of these means).
TISSUES: tuple[str, ...] = ("GM", "WM", "CSF", "ED", "NCR", "ET")

# Base mean intensity per sequence and tissue (relative units, WM of t1n ~ 0.8). Chosen for the
# usual clinical appearance: t1n WM > GM > CSF, tumor hypointense; t1c the same plus a bright
# enhancing rim and dark necrosis; t2w CSF/necrosis/edema bright, WM dark; FLAIR CSF dark,
# edema bright, necrosis intermediate.
BASE_MEANS: dict[str, dict[str, float]] = {
    "t1n": {"GM": 0.62, "WM": 0.80, "CSF": 0.25, "ED": 0.55, "NCR": 0.36, "ET": 0.56},
    "t1c": {"GM": 0.62, "WM": 0.80, "CSF": 0.25, "ED": 0.55, "NCR": 0.33, "ET": 1.25},
    "t2w": {"GM": 0.55, "WM": 0.40, "CSF": 1.00, "ED": 0.82, "NCR": 0.95, "ET": 0.66},
    "t2f": {"GM": 0.62, "WM": 0.48, "CSF": 0.10, "ED": 0.95, "NCR": 0.55, "ET": 0.75},
}

# Tissues only post-treatment scans hold: the resection cavity's fluid (CSF-like; FLAIR from
# CSF-dark to intermediate when proteinaceous, see ``fluid_protein``) and blood products at the
# cavity wall (methaemoglobin: bright on T1n *and* T1c, so not enhancement).
POST_TISSUES: tuple[str, ...] = ("FLUID", "BLOOD")
POST_BASE_MEANS: dict[str, dict[str, float]] = {
    "t1n": {"FLUID": 0.22, "BLOOD": 1.05},
    "t1c": {"FLUID": 0.22, "BLOOD": 1.10},
    "t2w": {"FLUID": 1.05, "BLOOD": 0.50},
    "t2f": {"FLUID": 0.10, "BLOOD": 0.85},
}
PROTEIN_FLAIR = 0.45  # FLAIR of fully proteinaceous cavity fluid (relative units; WM ~ 0.48)


@dataclass(frozen=True)
class SynthRanges:
    """Ranges and probabilities of everything randomised in one phantom."""

    # --- field of view (fixed, BraTS-like) ---
    fov_mm: tuple[float, float, float] = (240.0, 240.0, 155.0)
    # --- pose of the head in the scanner (applied by resampling the template) ---
    rotation_deg: Range = (0.0, 15.0)          # angle about a uniformly random axis
    shift_mm: Range = (-10.0, 10.0)            # per axis, about the centred brain
    scale: Range = (0.9, 1.1)                  # isotropic head size
    scale_aniso: Range = (0.97, 1.03)          # extra per-axis factor
    # --- storage orientation ---
    p_non_ras: float = 0.25                    # stored LPS or LAS (axis flips), half each
    # --- lesions ---
    p_multifocal: float = 0.12                 # 2-3 lesions instead of 1
    n_multifocal: tuple[int, int] = (2, 3)
    multifocal_distance_mm: Range = (20.0, 60.0)
    # Fixed MNI centres of the lesions (first = main lesion), e.g. for tests of counting and of
    # midline shift; None: centres are drawn. Given: that many lesions, everything else drawn.
    lesion_centres_mm: tuple[tuple[float, float, float], ...] | None = None
    p_small: float = 0.15                      # single small lesion
    p_infratentorial: float = 0.08             # centre may lie in cerebellum / brainstem WM
    core_radius_mm: Range = (9.0, 28.0)        # tumor-core equivalent radius
    small_radius_mm: Range = (3.0, 8.0)
    satellite_radius_mm: Range = (4.0, 14.0)   # extra lesions of a multifocal case
    axis_ratio: Range = (0.75, 1.3)            # ellipsoid semi-axes / radius, per axis
    irregularity: Range = (0.06, 0.22)         # boundary noise amplitude / radius
    irregularity_scale_mm: Range = (3.0, 8.0)  # smoothing of that noise
    rim_thickness_mm: Range = (1.5, 5.0)       # enhancing rim; varies +-35 % along the rim
    p_rim_gaps: float = 0.35                   # rim partly non-enhancing
    rim_gap_threshold: Range = (0.4, 1.4)      # in noise std: higher -> fewer gaps
    p_no_enhancement: float = 0.10             # whole core label 1 (non-enhancing)
    p_no_necrosis: float = 0.15                # solid enhancing core (label 3 only)
    edema_extent_mm: Range = (5.0, 25.0)       # white-matter path length beyond the core
    p_little_edema: float = 0.10
    little_edema_mm: Range = (0.0, 4.0)
    edema_gm_speed: float = 0.25               # edema spreads 4x slower through GM than WM
    # --- mass effect ---
    mass_effect_ratio: Range = (0.1, 0.45)     # push at the core boundary / radius
    mass_effect_max_mm: float = 8.0
    mass_effect_decay_mm: Range = (12.0, 25.0)
    # --- post-treatment scans (``timepoint="post"``): the tumor's centre is resected ---
    p_no_residual: float = 0.3                 # a clean cavity: no residual enhancing or nodular tumor
    p_residual_rim: float = 0.6                # (else) part of the cavity wall enhances
    residual_rim_threshold: Range = (0.2, 1.1) # wall noise above this enhances: higher -> less rim
    p_residual_nodules: float = 0.5            # non-enhancing residual nodules on the wall
    nodule_threshold: Range = (0.5, 1.3)
    p_blood: float = 0.4                       # blood products lining part of the cavity
    blood_depth_mm: Range = (1.0, 3.0)
    blood_threshold: Range = (-0.3, 0.6)       # texture noise above this holds blood
    fluid_protein: Range = (0.0, 1.0)          # 0: FLAIR-dark like CSF, 1: intermediate
    cavity_push: Range = (0.0, 0.3)            # mass effect left after resection / the tumor's
    # --- intensities ---
    tissue_jitter: Range = (0.92, 1.08)        # multiplies each BASE_MEANS entry
    tumor_texture: Range = (0.03, 0.12)        # relative std of tumor heterogeneity
    tissue_texture: Range = (0.01, 0.03)       # relative std of normal-tissue texture
    bias_amplitude: Range = (0.05, 0.25)       # std of log bias field
    noise_sigma: Range = (0.01, 0.035)         # Rician sigma, relative units
    global_scale: Range = (200.0, 3000.0)      # stored int16 = relative intensity * this
    base_means: dict[str, dict[str, float]] = field(default_factory=lambda: BASE_MEANS)

    def __post_init__(self) -> None:
        for name in ("p_non_ras", "p_multifocal", "p_small", "p_infratentorial", "p_rim_gaps",
                     "p_no_enhancement", "p_no_necrosis", "p_little_edema", "p_no_residual",
                     "p_residual_rim", "p_residual_nodules", "p_blood"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {v}")
        if self.lesion_centres_mm is not None and (
                len(self.lesion_centres_mm) == 0
                or any(len(c) != 3 for c in self.lesion_centres_mm)):
            raise ValueError("lesion_centres_mm must be None or a non-empty tuple of (x, y, z) mm")
        if self.p_no_enhancement + self.p_no_necrosis > 1.0:
            raise ValueError("p_no_enhancement + p_no_necrosis must not exceed 1")


DEFAULT_RANGES = SynthRanges()
