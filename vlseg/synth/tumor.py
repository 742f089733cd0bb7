"""Tumor geometry in template (MNI) space, on the coarse 2 mm grid.

Each lesion is an irregular ellipsoid: a level set ``core(x) = |A (x - c)| - R + a R n(x)``
(negative inside, roughly a signed distance in mm) with smoothed noise ``n``. Inside it:

* the necrotic centre is where ``core + t(x) < 0`` - the enhancing rim is the shell of varying
  thickness ``t`` (1.5-5 mm) around it; noisy "gaps" turn parts of the rim non-enhancing;
* edema is where the white-matter path length from the core, ``T(x)``, is below an extent ``E``:
  ``T`` is a weighted geodesic distance (fast in WM, slow in GM, blocked by CSF), computed on the
  anatomy *after* the mass effect;
* the mass effect pushes anatomy radially away from each lesion; the field stored is the exact
  inverse of that radial push (where each output point pulls its anatomy from).

All fields are continuous so that trilinear upsampling and thresholding at 1 mm gives smooth,
sub-voxel boundaries.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation

from vlseg.synth.anatomy import COARSE_MM, Template, block_mean
from vlseg.synth.params import SynthRanges

FAR = 1.0e3  # "outside" value of the level-set fields (mm)


@dataclass(frozen=True)
class Lesion:
    centre_mm: tuple[float, float, float]   # MNI mm
    radius_mm: float
    axes: tuple[float, float, float]        # semi-axes / radius
    rotation: tuple[float, float, float]    # rotation vector (rad)
    irregularity: float
    rim_mm: float
    push_mm: float                          # radial displacement at the core boundary
    push_decay_mm: float


@dataclass(frozen=True)
class TumorSpec:
    variant: str                 # "typical" | "small" | "multifocal"
    enhancement: str             # "rim" | "none" (no ET) | "solid" (no necrosis)
    lesions: tuple[Lesion, ...]
    edema_mm: float
    rim_gap_threshold: float     # inf: no gaps
    noise_scale_mm: float


def _random_rotvec(rng: np.random.Generator) -> np.ndarray:
    axis = rng.normal(size=3)
    return axis / np.linalg.norm(axis) * rng.uniform(0, np.pi)


def sample_tumor(rng: np.random.Generator, tpl: Template, r: SynthRanges) -> TumorSpec:
    """Draw the lesion layout and its parameters."""
    u = rng.uniform()
    variant = "multifocal" if u < r.p_multifocal else "small" if u < r.p_multifocal + r.p_small else "typical"
    u = rng.uniform()
    enhancement = "none" if u < r.p_no_enhancement else "solid" if u < r.p_no_enhancement + r.p_no_necrosis else "rim"
    pool = tpl.centres_infra if rng.uniform() < r.p_infratentorial else tpl.centres_supra
    first = pool[rng.integers(len(pool))]
    n = 1 if variant != "multifocal" else int(rng.integers(r.n_multifocal[0], r.n_multifocal[1] + 1))
    centres = [first]
    allc = np.concatenate([tpl.centres_supra, tpl.centres_infra])
    for _ in range(n - 1):
        d = np.linalg.norm(allc - first, axis=1)
        near = allc[(d >= r.multifocal_distance_mm[0]) & (d <= r.multifocal_distance_mm[1])]
        centres.append(near[rng.integers(len(near))] if len(near) else first + rng.normal(0, 15, 3))
    if r.lesion_centres_mm is not None:  # fixed centres (tests): the draws above stay the same
        centres = [np.asarray(c, dtype=np.float64) for c in r.lesion_centres_mm]
        if len(centres) > 1:
            variant = "multifocal"
        elif variant == "multifocal":
            variant = "typical"
    lesions = []
    for i, c in enumerate(centres):
        rng_r = r.small_radius_mm if variant == "small" else r.core_radius_mm if i == 0 else r.satellite_radius_mm
        R = float(rng.uniform(*rng_r))
        push = min(float(rng.uniform(*r.mass_effect_ratio)) * R, r.mass_effect_max_mm)
        lesions.append(Lesion(
            centre_mm=tuple(float(v) for v in c), radius_mm=R,
            axes=tuple(float(v) for v in rng.uniform(*r.axis_ratio, size=3)),
            rotation=tuple(float(v) for v in _random_rotvec(rng)),
            irregularity=float(rng.uniform(*r.irregularity)),
            rim_mm=float(rng.uniform(*r.rim_thickness_mm)),
            push_mm=push, push_decay_mm=float(rng.uniform(*r.mass_effect_decay_mm)),
        ))
    edema = float(rng.uniform(*(r.little_edema_mm if rng.uniform() < r.p_little_edema else r.edema_extent_mm)))
    gap = float(rng.uniform(*r.rim_gap_threshold)) if rng.uniform() < r.p_rim_gaps else float("inf")
    return TumorSpec(variant=variant, enhancement=enhancement, lesions=tuple(lesions), edema_mm=edema,
                     rim_gap_threshold=gap, noise_scale_mm=float(rng.uniform(*r.irregularity_scale_mm)))


@dataclass
class TumorFields:
    """Continuous fields on a box of the coarse template grid (all (i, j, k) float32, mm units)."""

    affine: np.ndarray     # 4x4 voxel -> MNI mm of the box
    core: np.ndarray       # < 0 inside the tumor core
    necrosis: np.ndarray   # < 0 inside the necrotic centre (subset of core)
    gap: np.ndarray        # > spec.rim_gap_threshold where the rim is non-enhancing
    edema: np.ndarray      # < 0 inside the edema (outside the core)
    pull: np.ndarray       # (3, i, j, k) anatomy at x comes from x + pull(x)
    texture: np.ndarray    # unit-std smooth noise for tumor heterogeneity

    def tumor_stack(self) -> tuple[np.ndarray, np.ndarray]:
        """(5, ...) core, necrosis, gap, edema, texture on the tight box where any can matter,
        and that box's voxel -> MNI affine."""
        where = (self.core < 2 * COARSE_MM) | (self.edema < 2 * COARSE_MM)
        if where.any():
            nz = np.argwhere(where)
            lo = np.maximum(nz.min(0) - 2, 0)
            hi = np.minimum(nz.max(0) + 3, where.shape)
        else:
            lo, hi = np.zeros(3, int), np.full(3, 2)
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        aff = self.affine.copy()
        aff[:3, 3] = self.affine[:3, :3] @ lo + self.affine[:3, 3]
        stack = np.stack([self.core[box], self.necrosis[box], self.gap[box], self.edema[box], self.texture[box]])
        return np.ascontiguousarray(stack, np.float32), aff


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: float) -> np.ndarray:
    n = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma_vox, mode="wrap")
    return n / max(float(n.std()), 1e-6)


def _pull_field(pts: np.ndarray, les: Lesion, depth: np.ndarray) -> np.ndarray:
    """Exact inverse of the radial push r -> r + u(r), damped near the brain surface."""
    R, m, L = les.radius_mm, les.push_mm, les.push_decay_mm
    r = np.linspace(0.0, R + 6 * L + 50, 4000)
    u = np.where(r < R, m * r / R, m * np.exp(-(((r - R) / L) ** 2)))
    rho = r + u                                             # monotone: |du/dr| < 1
    d = pts - np.asarray(les.centre_mm, np.float32)         # (i, j, k, 3)
    dist = np.linalg.norm(d, axis=-1)
    src = np.interp(dist, rho, r)
    scale = (src - dist) / np.maximum(dist, 1e-3)           # <= 0: pull from closer to the centre
    scale *= np.clip(depth / 12.0, 0.0, 1.0)
    return np.moveaxis(d * scale[..., None], -1, 0).astype(np.float32)


_OFFSETS = [o for o in np.ndindex(3, 3, 3) if o != (1, 1, 1)]


def _geodesic(seed: np.ndarray, cost: np.ndarray, limit: float, h: float) -> np.ndarray:
    """Weighted distance (mm) from ``seed`` over 26 neighbours; exact below ``limit``, FAR beyond.

    Gauss-Seidel relaxation: each sweep applies the 26 neighbour offsets in turn, in place, on
    the bounding box the front can reach (the cost is >= 1 per mm, so it cannot get further).
    """
    T = np.full(seed.shape, FAR, np.float32)
    if not seed.any():
        return T
    pad = int(np.ceil(limit / h)) + 1
    nz = np.argwhere(seed)
    lo = np.maximum(nz.min(0) - pad, 0)
    hi = np.minimum(nz.max(0) + pad + 1, seed.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    t = np.where(seed[box], 0.0, FAR).astype(np.float32)
    c = cost[box].astype(np.float32)
    steps = {k: (h * np.sqrt(k) * c) for k in (1, 2, 3)}
    n = t.shape
    moves = []
    for o in _OFFSETS:
        d = [oi - 1 for oi in o]
        dst = tuple(slice(max(0, di), n[a] + min(0, di)) for a, di in enumerate(d))
        src = tuple(slice(max(0, -di), n[a] + min(0, -di)) for a, di in enumerate(d))
        moves.append((dst, src, steps[sum(abs(di) for di in d)][dst]))
    for _ in range(4 * pad):
        before = t.copy()
        for dst, src, step in moves:
            np.minimum(t[dst], t[src] + step, out=t[dst])
        if np.array_equal(before, t):
            break
    t[t > limit] = FAR
    T[box] = t
    return T


def tumor_fields(rng: np.random.Generator, spec: TumorSpec, tpl: Template, r: SynthRanges) -> TumorFields:
    """Build all tumor fields on the coarse-grid box that holds the lesions and their edema."""
    h = COARSE_MM
    inv = np.linalg.inv(tpl.coarse_affine)
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    for les in spec.lesions:
        reach = les.radius_mm * max(les.axes) * (1 + 3 * les.irregularity) + max(1.7 * spec.edema_mm, 2.2 * les.push_decay_mm) + 10
        c = inv[:3, :3] @ np.asarray(les.centre_mm) + inv[:3, 3]
        lo = np.minimum(lo, c - reach / h)
        hi = np.maximum(hi, c + reach / h)
    full = np.asarray(tpl.coarse.shape[1:])
    lo = np.clip(np.floor(lo), 0, full - 1).astype(int)
    hi = np.clip(np.ceil(hi) + 1, 1, full).astype(int)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    shape = tuple(int(b - a) for a, b in zip(lo, hi))
    affine = tpl.coarse_affine.copy()
    affine[:3, 3] = tpl.coarse_affine[:3, :3] @ lo + tpl.coarse_affine[:3, 3]
    idx = np.indices(shape, dtype=np.float32)
    pts = np.moveaxis(idx, 0, -1) @ affine[:3, :3].T.astype(np.float32) + affine[:3, 3].astype(np.float32)

    # Lesion level sets: irregular ellipsoids, union by min.
    sig = spec.noise_scale_mm / h
    core = np.full(shape, FAR, np.float32)
    necrosis = np.full(shape, FAR, np.float32)
    thick_noise = _smooth_noise(rng, shape, sig)
    depth = tpl.depth_mm[box]
    pull = np.zeros((3, *shape), np.float32)
    for les in spec.lesions:
        rot = Rotation.from_rotvec(les.rotation).as_matrix().astype(np.float32)
        q = ((pts - np.asarray(les.centre_mm, np.float32)) @ rot) / np.asarray(les.axes, np.float32)
        c = (np.linalg.norm(q, axis=-1) - les.radius_mm) + les.irregularity * les.radius_mm * _smooth_noise(rng, shape, sig)
        core = np.minimum(core, c)
        if spec.enhancement == "rim":
            t = np.clip(les.rim_mm * (1 + 0.35 * thick_noise), r.rim_thickness_mm[0], r.rim_thickness_mm[1])
            necrosis = np.minimum(necrosis, c + t)
        elif spec.enhancement == "none":
            necrosis = np.minimum(necrosis, c)
        pull += _pull_field(pts, les, depth)
    gap = _smooth_noise(rng, shape, max(sig / 2, 1.0))
    texture = _smooth_noise(rng, shape, 1.0)

    # Anatomy after the mass effect (coarse), then the edema path length on it.
    src = (pts + np.moveaxis(pull, 0, -1)) @ inv[:3, :3].T.astype(np.float32) + inv[:3, 3].astype(np.float32)
    gm, wm, csf = (ndi.map_coordinates(t, np.moveaxis(src, -1, 0), order=1, mode="constant") for t in tpl.coarse)
    brain = gm + wm + csf
    speed = wm + r.edema_gm_speed * gm
    speed[(csf > 0.4 * np.maximum(brain, 1e-3)) | (brain < 0.5)] = 0.0   # CSF blocks edema
    # Path length on a 2x coarser grid (fast), interpolated back; CSF is re-checked per voxel later.
    speed4 = block_mean(speed, 2)
    cost4 = np.where(speed4 < 0.1, FAR, 1.0 / np.maximum(speed4, 0.05)).astype(np.float32)
    seed4 = block_mean((core < 0).astype(np.float32), 2) > 0
    limit = spec.edema_mm * 1.7 + 4 * h
    T4 = _geodesic(seed4, cost4, limit, 2 * h)
    coords = (np.indices(shape, dtype=np.float32) - 0.5) / 2
    T = ndi.map_coordinates(T4, coords, order=1, mode="nearest")
    edema = T - spec.edema_mm * np.clip(1 + 0.3 * _smooth_noise(rng, shape, sig), 0.4, 1.6)
    edema[core < 0] = -1.0
    return TumorFields(affine=affine, core=core, necrosis=necrosis, gap=gap, edema=edema.astype(np.float32),
                       pull=pull, texture=texture)


# --------------------------------------------------------------------------------------------
# Fields -> fractions and labels on an output grid (shared by the phantom and randomized renderers)

def tumor_fractions(core: np.ndarray, necrosis: np.ndarray, gap: np.ndarray, brain: np.ndarray,
                    spec: TumorSpec, spacing_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Partial-volume fractions (a linear ramp over one voxel) of the tumor core, its necrotic /
    non-enhancing part and the enhancing tumor: ``(tc, ncr, et)``, ``ncr + et == tc``."""
    s = spacing_mm
    tc = np.clip(0.5 - core / s, 0, 1) * brain
    nin = np.minimum(np.clip(0.5 - necrosis / s, 0, 1), tc)
    thr = spec.rim_gap_threshold
    gap_soft = np.clip(0.5 + (gap - thr) / 0.3, 0, 1) if np.isfinite(thr) else 0.0
    et = (tc - nin) * (1 - gap_soft)
    return tc, tc - et, et


def edema_fraction(edema: np.ndarray, brain: np.ndarray, spacing_mm: float) -> np.ndarray:
    """Edema's partial-volume fraction; it fades towards its margin."""
    ed_f = np.clip(0.5 - edema / spacing_mm, 0, 1) * brain
    ed_f *= np.clip(0.35 - edema / 8.0, 0, 1)
    return ed_f


def displace_normal(tc: np.ndarray, ed_f: np.ndarray, gm: np.ndarray, wm: np.ndarray,
                    fluids: tuple[np.ndarray, ...]) -> np.ndarray:
    """Tumor core replaces every normal class, edema replaces GM/WM but not CSF: scales ``gm``,
    ``wm`` and ``fluids`` in place and returns the edema fraction."""
    ed = ed_f * (1 - tc) * (gm + wm)
    gm *= (1 - tc) * (1 - ed_f)
    wm *= (1 - tc) * (1 - ed_f)
    for t in fluids:
        t *= 1 - tc
    return ed


def hard_labels(core: np.ndarray, necrosis: np.ndarray, gap: np.ndarray, edema: np.ndarray,
                brain: np.ndarray, csf: np.ndarray, spec: TumorSpec) -> dict[str, np.ndarray]:
    """Disjoint hard labels at voxel centres, keyed by concept (``NCR``, ``ED``, ``ET``): the core
    is inside the level set, enhancing unless necrotic or in a rim gap; edema is outside the core,
    inside the edema set and not in CSF (``csf`` after the core displaced it)."""
    tc_h = (core < 0) & brain
    if spec.enhancement == "none":
        et_h = np.zeros_like(tc_h)
    else:
        et_h = tc_h & (necrosis >= 0) & ~(gap > spec.rim_gap_threshold)
    return {"NCR": tc_h & ~et_h, "ED": ~tc_h & (edema < 0) & brain & (csf < 0.5), "ET": et_h}


# --------------------------------------------------------------------------------------------
# Post-treatment: the tumor's centre resected, a cavity left behind (BraTS 2024 labels)

@dataclass(frozen=True)
class PostOp:
    """What surgery left of a tumor. The cavity is the necrosis level set of a rim tumor (the
    tumor's centre); the shell between it and the core boundary is residual tissue: enhancing
    where the wall noise (``gap``) is high, non-enhancing nodules where it is low, gliosis
    (labelled SNFH, as BraTS 2024 does) elsewhere."""

    rim_threshold: float | None      # None: no residual enhancing tumor
    nodule_threshold: float | None   # None: no non-enhancing residual nodules
    blood_mm: float | None           # None: no blood products
    blood_threshold: float
    protein: float                   # 0..1: FLAIR of the cavity fluid, CSF-dark to intermediate
    push: float                      # mass effect left / the tumor's

    def describe(self) -> dict:
        return {"residual_enhancing": self.rim_threshold is not None,
                "residual_nodules": self.nodule_threshold is not None,
                "blood_products": self.blood_mm is not None, "fluid_protein": round(self.protein, 3)}


def sample_postop(rng: np.random.Generator, r: SynthRanges) -> PostOp:
    clean = rng.uniform() < r.p_no_residual
    rim = None if clean or rng.uniform() >= r.p_residual_rim else float(rng.uniform(*r.residual_rim_threshold))
    nod = None if clean or rng.uniform() >= r.p_residual_nodules else float(rng.uniform(*r.nodule_threshold))
    blood = float(rng.uniform(*r.blood_depth_mm)) if rng.uniform() < r.p_blood else None
    return PostOp(rim_threshold=rim, nodule_threshold=nod, blood_mm=blood,
                  blood_threshold=float(rng.uniform(*r.blood_threshold)),
                  protein=float(rng.uniform(*r.fluid_protein)), push=float(rng.uniform(*r.cavity_push)))


def resected(spec: TumorSpec, post: PostOp) -> TumorSpec:
    """The tumor as surgery found it: a rim (the cavity is its centre), most mass effect gone."""
    lesions = tuple(replace(les, push_mm=les.push_mm * post.push) for les in spec.lesions)
    return replace(spec, enhancement="rim", lesions=lesions, rim_gap_threshold=float("inf"))


def _soft_above(x: np.ndarray, threshold: float | None) -> np.ndarray | float:
    return 0.0 if threshold is None else np.clip(0.5 + (x - threshold) / 0.3, 0, 1)


def postop_fractions(core: np.ndarray, necrosis: np.ndarray, gap: np.ndarray, texture: np.ndarray,
                     brain: np.ndarray, post: PostOp, spacing_mm: float) -> dict[str, np.ndarray]:
    """Partial-volume fractions of the post-treatment tissues: ``tc`` (everything inside the old
    tumor boundary), ``fluid`` and ``blood`` (the cavity), ``netc``, ``et`` and ``gliosis``
    (the wall); fluid + blood + netc + et + gliosis == tc."""
    s = spacing_mm
    tc = np.clip(0.5 - core / s, 0, 1) * brain
    cavity = np.minimum(np.clip(0.5 - necrosis / s, 0, 1), tc)
    wall = tc - cavity
    et_w = _soft_above(gap, post.rim_threshold)
    nod_w = _soft_above(-gap, post.nodule_threshold) * (1 - et_w)
    et, netc = wall * et_w, wall * nod_w
    if post.blood_mm is None:
        blood = np.zeros_like(cavity)
    else:  # a layer of the cavity along its wall, in patches
        layer = np.clip(0.5 + (necrosis + post.blood_mm) / s, 0, 1)
        blood = cavity * layer * _soft_above(texture, post.blood_threshold)
    return {"tc": tc, "fluid": cavity - blood, "blood": blood, "netc": netc, "et": et,
            "gliosis": wall - et - netc}


def postop_labels(core: np.ndarray, necrosis: np.ndarray, gap: np.ndarray, edema: np.ndarray,
                  brain: np.ndarray, csf: np.ndarray, post: PostOp) -> dict[str, np.ndarray]:
    """Disjoint hard labels at voxel centres, keyed by concept: ``RC`` the cavity (with its
    fluid and blood), ``ET`` residual enhancing wall, ``NCR`` non-enhancing residual tumor
    (BraTS 2024 NETC), ``ED`` gliosis of the wall and the surrounding FLAIR signal (SNFH)."""
    tc = (core < 0) & brain
    rc = tc & (necrosis < 0)
    wall = tc & ~rc
    et = wall & (gap > post.rim_threshold) if post.rim_threshold is not None else np.zeros_like(tc)
    netc = (wall & ~et & (-gap > post.nodule_threshold) if post.nodule_threshold is not None
            else np.zeros_like(tc))
    ed = (wall & ~et & ~netc) | (~tc & (edema < 0) & brain & (csf < 0.5))
    return {"NCR": netc, "ED": ed, "ET": et, "RC": rc}
