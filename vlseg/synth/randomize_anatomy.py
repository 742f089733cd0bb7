"""Randomized anatomy: the cached template label map, a random spatial transform, random tumors.

The label map the engine renders from is a set of per-voxel fractions (partial volume) of
``LABELS``: four normal classes from the ICBM152 template (GM, WM, sulcal CSF, ventricles) and
four tumor classes (edema, necrosis, enhancing tumor, cyst; a cyst is labelled necrosis) and the
two tissues of a post-treatment scan's resection cavity (fluid and blood products, labelled RC).

One sample maps every output voxel (world mm, RAS) to template MNI mm through
``p = A w + b`` (scale, rotation, left/right flip), a smooth random displacement (lattice,
trilinear), a local zoom about the ventricles, and - for the normal anatomy only - the tumor's
mass-effect pull. Tumor fields are sampled at the same ``p``, so images and labels stay aligned
by construction: both come from one grid.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation

from vlseg.synth.anatomy import COARSE_MM, Template, affine_grid, index_to_grid, load_template, sample_grid
from vlseg.synth.params import DEFAULT_RANGES, SynthRanges
from vlseg.synth.randomize_params import RandomizeConfig
from vlseg.synth.tumor import (
    FAR,
    PostOp,
    TumorFields,
    TumorSpec,
    displace_normal,
    edema_fraction,
    hard_labels,
    postop_fractions,
    postop_labels,
    resected,
    sample_postop,
    sample_tumor,
    tumor_fields,
    tumor_fractions,
)

LABELS: tuple[str, ...] = ("GM", "WM", "CSF", "VENT", "ED", "NCR", "ET", "CYST", "FLUID", "BLOOD")
N_NORMAL = 4
# The hard labels a sample carries (concept codes); RC is empty unless the tumor was resected.
TUMOR_LABELS: tuple[str, ...] = ("NCR", "ED", "ET", "RC")
MARGIN_VOX = 2  # kept around the brain, as the preprocessing cache does


@dataclass(frozen=True)
class Anatomy:
    """The template's normal classes at one resolution (read-only, shared between samples)."""

    tissue: torch.Tensor          # (4, I, J, K) float32 GM, WM, CSF, VENT fractions
    affine: np.ndarray            # 4x4 voxel -> MNI mm of ``tissue``
    ventricle_centre_mm: np.ndarray   # (3,)
    callosal_mm: np.ndarray       # (N, 3) MNI mm: white matter of the corpus callosum body
    deep_mm: np.ndarray           # (M, 3) MNI mm: supratentorial points >= 25 mm inside the brain
    template: Template


@functools.lru_cache(maxsize=2)
def load_anatomy(fine: bool = False) -> Anatomy:
    """Template tissue + ventricle split, at 2 mm (or 1 mm when ``fine``); once per process."""
    tpl = load_template()
    coarse = tpl.coarse                                     # (3, i, j, k) GM WM CSF, 2 mm
    aff = tpl.coarse_affine
    ijk = np.indices(coarse.shape[1:], dtype=np.float32)
    mm = np.einsum("ab,bijk->aijk", aff[:3, :3].astype(np.float32), ijk) + aff[:3, 3, None, None, None]
    x, y, z = mm
    # Ventricles: CSF-dominant, deep, central; the connected pieces of at least 2 mL.
    central = (np.abs(x) < 30) & (y > -50) & (y < 35) & (z > -10) & (z < 40)
    vent = (coarse[2] > 0.5) & (tpl.depth_mm >= 10.0) & central
    lab, n = ndi.label(vent)
    sizes = ndi.sum(vent, lab, index=np.arange(1, n + 1)) * COARSE_MM ** 3 / 1000.0
    vent = np.isin(lab, 1 + np.flatnonzero(sizes >= 2.0))
    if not vent.any():  # pragma: no cover - the template has ventricles
        raise RuntimeError("no ventricles found in the ICBM152 template")
    centre = mm[:, vent].mean(axis=1)
    vent_soft = np.clip(ndi.gaussian_filter(vent.astype(np.float32), 0.7) * 1.6, 0, 1)
    callosal = (np.abs(x) < 5) & (y > -32) & (y < 22) & (z > 8) & (z < 30) & (coarse[1] > 0.7)
    callosal_mm = mm[:, callosal].T.astype(np.float32)
    deep_mm = mm[:, (tpl.depth_mm >= 25.0) & (z > -10) & ~vent].T.astype(np.float32)
    if fine:
        base = tpl.tissue.numpy()                           # (3, I, J, K) 1 mm
        affine = tpl.affine
        # Ventricle weight at 1 mm: trilinear from the 2 mm map.
        inv = np.linalg.inv(aff) @ affine
        idx = np.indices(base.shape[1:], dtype=np.float32)
        coords = np.einsum("ab,bijk->aijk", inv[:3, :3].astype(np.float32), idx) + inv[:3, 3, None, None, None]
        w = ndi.map_coordinates(vent_soft, coords, order=1, mode="constant").astype(np.float32)
    else:
        base, affine, w = coarse, aff, vent_soft
    csf = base[2]
    tissue = np.stack([base[0], base[1], csf * (1 - w), csf * w]).astype(np.float32)
    t = torch.from_numpy(np.ascontiguousarray(tissue))
    return Anatomy(tissue=t, affine=np.asarray(affine, np.float64), ventricle_centre_mm=centre.astype(np.float64),
                   callosal_mm=callosal_mm, deep_mm=deep_mm, template=tpl)


# --------------------------------------------------------------------------------------------
# spatial transform

@dataclass(frozen=True)
class SpatialDraw:
    """Output world -> template MNI: ``p = matrix @ w + offset`` plus the non-linear parts."""

    matrix: np.ndarray            # (3, 3)
    offset: np.ndarray            # (3,)
    flipped: bool
    elastic_nodes: np.ndarray     # (3, a, b, c) displacement (mm) on a lattice over the output grid
    ventricle_scale: float
    ventricle_sigma_mm: float


def sample_spatial(rng: np.random.Generator, cfg: RandomizeConfig, anatomy: Anatomy,
                   spacing_mm: float) -> tuple[SpatialDraw, tuple[int, int, int], np.ndarray]:
    """A random transform, the output grid's shape and its (index -> world mm) affine."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    rot = Rotation.from_rotvec(np.deg2rad(rng.uniform(*cfg.rotation_deg)) * axis).as_matrix()
    scale = rng.uniform(*cfg.scale) * rng.uniform(*cfg.scale_aniso, size=3)
    flipped = bool(rng.uniform() < cfg.flip_prob)
    flip = np.diag([-1.0 if flipped else 1.0, 1.0, 1.0])
    fwd = np.diag(scale) @ rot @ flip                       # template (about its centre) -> world
    surf = anatomy.template.surface_mm
    centre_t = (surf.min(0) + surf.max(0)) / 2
    matrix = np.linalg.inv(fwd)
    offset = centre_t.astype(np.float64)                    # world 0 = brain centre
    world = (surf - centre_t) @ fwd.T
    lo, hi = world.min(0), world.max(0)
    # Warp lattice over the brain's box; the grid is padded by the largest displacement it can
    # cause (trilinear interpolation never exceeds its nodes), so no brain is cut off.
    elastic_sd = float(rng.uniform(*cfg.elastic_mm))
    lattice = float(rng.uniform(*cfg.elastic_spacing_mm))
    nodes = tuple(max(2, int(round((h - l) / lattice)) + 2) for l, h in zip(lo, hi))
    elastic = (rng.standard_normal((3, *nodes)) * elastic_sd).astype(np.float32)
    reach = float(np.linalg.norm(elastic, axis=0).max()) * float(scale.max())
    pad = reach + (MARGIN_VOX + 1) * spacing_mm
    lo, hi = lo - pad, hi + pad
    shape = tuple(int(np.ceil((h - l) / spacing_mm)) + 1 for l, h in zip(lo, hi))
    out_aff = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    out_aff[:3, 3] = lo
    draw = SpatialDraw(matrix=matrix, offset=offset, flipped=flipped, elastic_nodes=elastic,
                       ventricle_scale=float(rng.uniform(*cfg.ventricle_scale)),
                       ventricle_sigma_mm=float(rng.uniform(18.0, 28.0)))
    return draw, shape, out_aff  # type: ignore[return-value]


def template_points(draw: SpatialDraw, shape: tuple[int, int, int], out_aff: np.ndarray,
                    anatomy: Anatomy) -> torch.Tensor:
    """(X, Y, Z, 3) float32 MNI mm of every output voxel (affine + warp + ventricle zoom)."""
    p = affine_grid(shape, draw.matrix @ out_aff[:3, :3], draw.matrix @ out_aff[:3, 3] + draw.offset)
    # Smooth non-linear warp: lattice displacement, trilinear over the grid.
    disp = F.interpolate(torch.from_numpy(draw.elastic_nodes)[None], size=shape, mode="trilinear",
                         align_corners=True)[0]
    p = p + disp.permute(1, 2, 3, 0)
    # Ventricle size: pull towards (enlarge) or push away from (shrink) the ventricle centre.
    a = 1.0 - 1.0 / draw.ventricle_scale
    if a != 0.0:
        c = torch.as_tensor(anatomy.ventricle_centre_mm, dtype=torch.float32)
        d = p - c
        g = torch.exp(-(d * d).sum(-1, keepdim=True) / (2 * draw.ventricle_sigma_mm ** 2))
        p = p - a * g * d
    return p


def sample_at(vol: torch.Tensor, affine: np.ndarray, points_mm: torch.Tensor, *, padding: str = "zeros") -> torch.Tensor:
    """Trilinear samples of ``vol`` (C, I, J, K) with voxel->mm ``affine`` at ``points_mm``
    (X, Y, Z, 3) -> (C, X, Y, Z)."""
    lin, off = index_to_grid(tuple(vol.shape), np.linalg.inv(affine))
    grid = points_mm @ torch.as_tensor(lin, dtype=torch.float32).T + torch.as_tensor(off, dtype=torch.float32)
    return sample_grid(vol, grid, padding=padding)


# --------------------------------------------------------------------------------------------
# tumors

@dataclass(frozen=True)
class TumorDraw:
    """One generated tumor in template space (fields on the coarse grid) and its morphology."""

    spec: TumorSpec | None            # None: healthy brain
    stack: np.ndarray | None          # (5, i, j, k) core, necrosis, gap, edema, texture
    stack_affine: np.ndarray | None
    pull: np.ndarray | None           # (3, i, j, k) mass-effect pull (mm)
    pull_affine: np.ndarray | None
    site: str                         # "supratentorial" | "infratentorial" | "callosal" | "none"
    size: str                         # "typical" | "small" | "large" | "multifocal"
    cyst_depth_mm: float | None       # None: no cyst
    post: PostOp | None = None        # None: untreated; else what surgery left (a cavity)

    def describe(self) -> dict:
        s = self.spec
        return {"site": self.site, "size": self.size, "enhancement": s.enhancement if s else None,
                "lesions": len(s.lesions) if s else 0, "cyst": self.cyst_depth_mm is not None,
                "timepoint": "post" if self.post is not None else "pre",
                **({"postop": self.post.describe()} if self.post is not None else {})}


def _ranges(cfg: RandomizeConfig, size: str, site: str) -> SynthRanges:
    base = DEFAULT_RANGES
    r = dataclasses.replace(
        base, p_no_enhancement=cfg.p_no_enhancement, p_no_necrosis=cfg.p_no_necrosis,
        p_multifocal=1.0 if size == "multifocal" else 0.0, p_small=1.0 if size == "small" else 0.0,
        p_infratentorial=1.0 if site == "infratentorial" else 0.0,
        small_radius_mm=cfg.small_radius_mm,
    )
    if size == "large":
        r = dataclasses.replace(r, core_radius_mm=cfg.large_radius_mm, mass_effect_max_mm=12.0)
    if size == "small":
        r = dataclasses.replace(r, p_little_edema=0.7, little_edema_mm=(0.0, 3.0), edema_extent_mm=(2.0, 8.0))
    if not cfg.mass_effect:
        r = dataclasses.replace(r, mass_effect_ratio=(0.0, 0.0))
    return r


def sample_tumor_draw(rng: np.random.Generator, cfg: RandomizeConfig, anatomy: Anatomy) -> TumorDraw:
    """Morphology first (site, size, enhancement, cyst), then the lesion fields."""
    if rng.uniform() < cfg.p_no_tumor:
        return TumorDraw(None, None, None, None, None, "none", "none", None)
    u = rng.uniform()
    size = ("multifocal" if u < cfg.p_multifocal else "small" if u < cfg.p_multifocal + cfg.p_small
            else "large" if u < cfg.p_multifocal + cfg.p_small + cfg.p_large else "typical")
    u = rng.uniform()
    site = ("callosal" if u < cfg.p_callosal else "infratentorial" if u < cfg.p_callosal + cfg.p_infratentorial
            else "supratentorial")
    r = _ranges(cfg, size, site)
    tpl = anatomy.template
    spec = sample_tumor(rng, tpl, r)
    # Drawn only when post-treatment samples are asked for (the pre-treatment stream stays put).
    post = sample_postop(rng, r) if cfg.p_post > 0 and rng.uniform() < cfg.p_post else None
    if site == "callosal":
        # Butterfly: centred on the callosal body, elongated left-right, not rotated.
        c = anatomy.callosal_mm[int(rng.integers(len(anatomy.callosal_mm)))]
        first = dataclasses.replace(
            spec.lesions[0], centre_mm=tuple(float(v) for v in c), rotation=(0.0, 0.0, 0.0),
            axes=(float(rng.uniform(1.4, 2.0)), float(rng.uniform(0.6, 0.9)), float(rng.uniform(0.55, 0.8))),
            radius_mm=float(min(spec.lesions[0].radius_mm, 18.0)))
        spec = dataclasses.replace(spec, lesions=(first, *spec.lesions[1:]))
    elif size == "large" and site == "supratentorial":
        # Deep enough that the lesion is not cut off by the brain's surface.
        c = anatomy.deep_mm[int(rng.integers(len(anatomy.deep_mm)))]
        first = dataclasses.replace(spec.lesions[0], centre_mm=tuple(float(v) for v in c))
        spec = dataclasses.replace(spec, lesions=(first, *spec.lesions[1:]))
    if post is not None:
        spec = resected(spec, post)
    fields: TumorFields = tumor_fields(rng, spec, tpl, r)
    stack, stack_aff = fields.tumor_stack()
    cyst = float(rng.uniform(*cfg.cyst_depth_mm)) if (rng.uniform() < cfg.p_cyst and spec.enhancement != "solid") else None
    if post is not None:
        cyst = None  # the cavity is the centre
    return TumorDraw(spec, stack, stack_aff, fields.pull, fields.affine, site, size, cyst, post)


# --------------------------------------------------------------------------------------------
# label fractions + hard labels on the output grid

@dataclass
class LabelMap:
    """A sample's anatomy on the output grid."""

    fractions: np.ndarray     # (10, X, Y, Z) float32 fractions of LABELS (sum 1 inside the brain)
    brain: np.ndarray         # (X, Y, Z) bool skull-strip mask
    labels: dict[str, np.ndarray]   # TUMOR_LABELS: bool hard labels at voxel centres
    texture: np.ndarray       # (X, Y, Z) unit-std tumor heterogeneity (0 outside the tumor box)
    affine: np.ndarray        # 4x4 index -> world mm


def _box_mask(points: torch.Tensor, affine: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    """(X, Y, Z) bool: points (mm) inside an axis-aligned voxel box (template grids are)."""
    if not np.allclose(affine[:3, :3], np.diag(np.diag(affine[:3, :3]))):
        raise ValueError("tumor field boxes must be axis-aligned")
    ends = affine[:3, :3] @ (np.asarray(shape, np.float64) - 1) + affine[:3, 3]
    lo = torch.as_tensor(np.minimum(affine[:3, 3], ends), dtype=torch.float32)
    hi = torch.as_tensor(np.maximum(affine[:3, 3], ends), dtype=torch.float32)
    inside = (points[..., 0] >= lo[0]) & (points[..., 0] <= hi[0])
    for a in (1, 2):
        inside &= (points[..., a] >= lo[a]) & (points[..., a] <= hi[a])
    return inside


def _bbox(mask: torch.Tensor) -> tuple[slice, slice, slice] | None:
    """Bounding box of a (X, Y, Z) bool mask, None when empty."""
    if not bool(mask.any()):
        return None
    box = []
    for axis in range(3):
        nz = torch.nonzero(mask.any(dim=tuple(a for a in range(3) if a != axis))).flatten()
        box.append(slice(int(nz[0]), int(nz[-1]) + 1))
    return tuple(box)  # type: ignore[return-value]


def render_labels(draw: SpatialDraw, tumor: TumorDraw, shape: tuple[int, int, int], out_aff: np.ndarray,
                  anatomy: Anatomy, spacing_mm: float) -> LabelMap:
    """Fractions of every label and the hard tumor labels on the output grid."""
    s = float(spacing_mm)
    p = template_points(draw, shape, out_aff, anatomy)                  # (X, Y, Z, 3) MNI mm
    # Tumor fields at p (no tumor outside their box).
    if tumor.stack is not None:
        # Only the output box whose points fall in the tumor's field box is sampled.
        inside = _box_mask(p, tumor.stack_affine, tumor.stack.shape[1:])
        sub = _bbox(inside)
        f = torch.zeros((5, *shape))
        f[0] = FAR
        f[3] = FAR
        if sub is not None:
            fs = sample_at(torch.from_numpy(tumor.stack), tumor.stack_affine, p[sub], padding="border")
            fs[:, ~inside[sub]] = torch.tensor([FAR, 0.0, 0.0, FAR, 0.0])[:, None]
            f[(slice(None), *sub)] = fs
        core, necrosis, gap, edema, texture = f.numpy()
        # Mass effect: the anatomy at p comes from p + pull(p) (zero outside the pull's box).
        inside = _box_mask(p, tumor.pull_affine, tumor.pull.shape[1:])
        sub = _bbox(inside)
        if sub is not None:
            pull = sample_at(torch.from_numpy(tumor.pull), tumor.pull_affine, p[sub], padding="zeros")
            p[sub] += pull.permute(1, 2, 3, 0)
    else:
        core = edema = necrosis = gap = None
        texture = np.zeros(shape, np.float32)
    tissue = sample_at(anatomy.tissue, anatomy.affine, p).numpy()      # (4, X, Y, Z)
    brain_frac = tissue.sum(0)
    brain = brain_frac >= 0.5
    tissue *= np.where(brain, 1.0 / np.maximum(brain_frac, 1e-3), 0.0).astype(np.float32)
    frac = np.zeros((len(LABELS), *shape), np.float32)
    frac[:N_NORMAL] = tissue
    labels = {k: np.zeros(shape, bool) for k in TUMOR_LABELS}
    if core is not None:
        spec = tumor.spec
        assert spec is not None
        gm, wm, csf, vent = frac[:N_NORMAL]
        # Partial volume (linear ramp over one voxel) and hard labels, as the phantom renderer does.
        ed_f = edema_fraction(edema, brain, s)
        if tumor.post is not None:  # the cavity (fluid, blood) and its wall (residual tumor, gliosis)
            pf = postop_fractions(core, necrosis, gap, texture, brain, tumor.post, s)
            ed = displace_normal(pf["tc"], ed_f, gm, wm, (csf, vent)) + pf["gliosis"]
            frac[4], frac[5], frac[6], frac[8], frac[9] = ed, pf["netc"], pf["et"], pf["fluid"], pf["blood"]
            labels = postop_labels(core, necrosis, gap, edema, brain, csf + vent, tumor.post)
        else:
            tc, ncr, et = tumor_fractions(core, necrosis, gap, brain, spec, s)
            if tumor.cyst_depth_mm is not None:
                cyst = np.minimum(np.clip(0.5 - (necrosis + tumor.cyst_depth_mm) / s, 0, 1), ncr)
                ncr = ncr - cyst
            else:
                cyst = np.zeros_like(ncr)
            ed = displace_normal(tc, ed_f, gm, wm, (csf, vent))        # edema replaces GM/WM, not CSF
            frac[4], frac[5], frac[6], frac[7] = ed, ncr, et, cyst
            labels = {**hard_labels(core, necrosis, gap, edema, brain, csf + vent, spec),
                      "RC": np.zeros(shape, bool)}
    return LabelMap(fractions=frac, brain=brain, labels=labels, texture=texture.astype(np.float32), affine=out_aff)
