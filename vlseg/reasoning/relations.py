"""Relations between tumor sub-regions: fractions, enhancing rim around necrosis, edema extent.

Inputs are boolean masks on one grid (RAS+ or any grid: only the affine's spacing is used).
Missing parts are derived where the vocabulary allows (TC = NCR | ET, WT = TC | ED,
NCR = TC & ~ET, ED = WT & ~TC); a relation whose inputs are unknown is None.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from vlseg import vocab
from vlseg.reasoning.grouping import voxel_volume_ml

RIM_FRACTION = 0.75  # NCR counts as ringed by ET when >= 75 % of its outer border is ET
EDGE_PERCENTILE = 95.0


def fraction_pairs() -> tuple[tuple[str, str], ...]:
    """(part, whole) pairs reported as "PART/WHOLE" fractions: every concept inside a larger
    composite, the innermost wholes first (NCR/TC, ET/TC, NCR/WT, ...)."""
    cs = vocab.concepts()
    wholes = sorted((w for w in cs if not w.is_base), key=lambda w: len(w.parts))
    return tuple((p.code, w.code) for w in wholes for p in cs
                 if p.code != w.code and set(p.parts) < set(w.parts))


def _complete(masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Derive the missing concepts the vocabulary's parts determine: a composite from pieces
    that tile it (TC = NCR | ET, WT = TC | ED), a piece as a whole minus its complement
    (NCR = TC & ~ET, ED = WT & ~TC)."""
    m = {c: np.asarray(v, dtype=bool) for c, v in masks.items() if v is not None}
    for c in m:
        vocab.check_concept(c)
    shapes = {v.shape for v in m.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise ValueError(f"masks must be 3D and share one shape, got {sorted(shapes)}")
    parts = {c.code: frozenset(c.parts) for c in vocab.concepts()}
    by_parts = {v: k for k, v in parts.items()}
    for _ in range(2):  # two passes resolve chains such as WT, ET, NCR -> TC -> ED
        for c, want in parts.items():
            if c in m:
                continue
            for a in list(m):
                rest = want - parts[a]
                b = by_parts.get(rest)
                if parts[a] < want and b in m and not (parts[b] & parts[a]):
                    m[c] = m[a] | m[b]
                    break
                whole = by_parts.get(parts[a] | want)
                if parts[a] & want or whole is None or whole not in m:
                    continue
                if (parts[a] | want) == parts[whole] and a != whole:
                    m[c] = m[whole] & ~m[a]
                    break
    return m


@dataclass(frozen=True)
class Relations:
    """How the sub-regions of one case relate (see docs/reasoning.md). Unknown values are None.

    ``fractions``: {"PART/WHOLE": |PART & WHOLE| / |WHOLE|}; ``necrosis_rim_fraction``: share of
    the voxels just outside NCR that are ET (ringed when >= RIM_FRACTION); edema extent: 95th
    percentile and maximum distance (mm) of ED voxels to the nearest TC voxel.
    """

    volumes_ml: dict[str, float] = field(default_factory=dict)
    fractions: dict[str, float] = field(default_factory=dict)
    necrotic_fraction_of_core: float | None = None
    enhancing_fraction_of_core: float | None = None
    edema_fraction_of_whole: float | None = None
    necrosis_rim_fraction: float | None = None
    necrosis_surrounded_by_enhancing_rim: bool | None = None
    edema_extent_beyond_core_mm: float | None = None
    edema_max_extent_beyond_core_mm: float | None = None


def relations(masks: dict[str, np.ndarray], affine: np.ndarray) -> Relations:
    """Fractions, enhancing rim and edema extent for the given masks (see :class:`Relations`)."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)) \
            or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise ValueError("affine must be a finite, invertible 4x4 matrix")
    m = _complete(masks)
    vml = voxel_volume_ml(affine)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)

    # Crop everything to the union's box (+ margin) so distance maps stay small.
    union = np.zeros(next(iter(m.values())).shape, dtype=bool)
    for v in m.values():
        union |= v
    if union.any():
        lo = np.argwhere(union).min(axis=0) - 2
        hi = np.argwhere(union).max(axis=0) + 3
        box = tuple(slice(max(a, 0), b) for a, b in zip(lo, hi))
        m = {c: v[box] for c, v in m.items()}

    volumes = {c: float(v.sum()) * vml for c, v in m.items()}
    fractions: dict[str, float] = {}
    for part, whole in fraction_pairs():
        if part in m and whole in m and m[whole].any():
            fractions[f"{part}/{whole}"] = float((m[part] & m[whole]).sum() / m[whole].sum())
    ratios = {name: fractions.get(f"{part}/{whole}")
              for name, (part, whole, _) in vocab.ratios().items()}
    necrosis, enhancing = vocab.by_role("necrosis"), vocab.by_role("enhancing")
    edema, core = vocab.by_role("edema"), vocab.by_role("core")

    # Enhancing rim: the 6-connected shell just outside the necrosis, share of it that enhances.
    rim = None
    if necrosis in m and enhancing in m and m[necrosis].any():
        shell = ndimage.binary_dilation(m[necrosis]) & ~m[necrosis]
        rim = float((shell & m[enhancing]).sum() / max(shell.sum(), 1))

    # Edema extent: distance (mm) from each edema voxel to the nearest core voxel.
    p95 = dmax = None
    if edema in m and core in m and m[edema].any() and m[core].any():
        dist = ndimage.distance_transform_edt(~m[core], sampling=spacing)
        d = dist[m[edema] & ~m[core]]
        if d.size:
            p95, dmax = float(np.percentile(d, EDGE_PERCENTILE)), float(d.max())
    return Relations(
        volumes_ml=volumes, fractions=fractions,
        necrotic_fraction_of_core=ratios.get("necrotic_fraction_of_core"),
        enhancing_fraction_of_core=ratios.get("enhancing_fraction_of_core"),
        edema_fraction_of_whole=ratios.get("edema_fraction_of_whole"),
        necrosis_rim_fraction=rim,
        necrosis_surrounded_by_enhancing_rim=None if rim is None else rim >= RIM_FRACTION,
        edema_extent_beyond_core_mm=p95, edema_max_extent_beyond_core_mm=dmax,
    )
