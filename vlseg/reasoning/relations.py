"""Relations between tumor sub-regions: fractions, enhancing rim around necrosis, edema extent.

Inputs are boolean masks on one grid (RAS+ or any grid: only the affine's spacing is used).
Missing parts are derived where the vocabulary allows (TC = NCR | ET, WT = TC | ED,
NCR = TC & ~ET, ED = WT & ~TC); a relation whose inputs are unknown is None.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from vlseg.concepts import CONCEPTS
from vlseg.reasoning.grouping import voxel_volume_ml

# (part, whole) pairs reported as "PART/WHOLE" fractions.
FRACTION_PAIRS: tuple[tuple[str, str], ...] = (
    ("NCR", "TC"), ("ET", "TC"), ("NCR", "WT"), ("ET", "WT"), ("ED", "WT"), ("TC", "WT"),
)
RIM_FRACTION = 0.75  # NCR counts as ringed by ET when >= 75 % of its outer border is ET
EDGE_PERCENTILE = 95.0


def _complete(masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    m = {c: np.asarray(v, dtype=bool) for c, v in masks.items() if v is not None}
    unknown = set(m) - set(CONCEPTS)
    if unknown:
        raise ValueError(f"unknown concept(s) {sorted(unknown)}; use {', '.join(CONCEPTS)}")
    shapes = {v.shape for v in m.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise ValueError(f"masks must be 3D and share one shape, got {sorted(shapes)}")
    for _ in range(2):  # two passes resolve chains such as WT, ET, NCR -> TC -> ED
        if "TC" not in m and {"NCR", "ET"} <= set(m):
            m["TC"] = m["NCR"] | m["ET"]
        if "WT" not in m and {"TC", "ED"} <= set(m):
            m["WT"] = m["TC"] | m["ED"]
        if "NCR" not in m and {"TC", "ET"} <= set(m):
            m["NCR"] = m["TC"] & ~m["ET"]
        if "ET" not in m and {"TC", "NCR"} <= set(m):
            m["ET"] = m["TC"] & ~m["NCR"]
        if "ED" not in m and {"WT", "TC"} <= set(m):
            m["ED"] = m["WT"] & ~m["TC"]
        if "TC" not in m and {"WT", "ED"} <= set(m):
            m["TC"] = m["WT"] & ~m["ED"]
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
    for part, whole in FRACTION_PAIRS:
        if part in m and whole in m and m[whole].any():
            fractions[f"{part}/{whole}"] = float((m[part] & m[whole]).sum() / m[whole].sum())

    # Enhancing rim: the 6-connected shell just outside NCR, share of it that is ET.
    rim = None
    if "NCR" in m and "ET" in m and m["NCR"].any():
        shell = ndimage.binary_dilation(m["NCR"]) & ~m["NCR"]
        rim = float((shell & m["ET"]).sum() / max(shell.sum(), 1))

    # Edema extent: distance (mm) from each ED voxel to the nearest core voxel.
    p95 = dmax = None
    if "ED" in m and "TC" in m and m["ED"].any() and m["TC"].any():
        dist = ndimage.distance_transform_edt(~m["TC"], sampling=spacing)
        d = dist[m["ED"] & ~m["TC"]]
        if d.size:
            p95, dmax = float(np.percentile(d, EDGE_PERCENTILE)), float(d.max())
    return Relations(
        volumes_ml=volumes, fractions=fractions,
        necrotic_fraction_of_core=fractions.get("NCR/TC"),
        enhancing_fraction_of_core=fractions.get("ET/TC"),
        edema_fraction_of_whole=fractions.get("ED/WT"),
        necrosis_rim_fraction=rim,
        necrosis_surrounded_by_enhancing_rim=None if rim is None else rim >= RIM_FRACTION,
        edema_extent_beyond_core_mm=p95, edema_max_extent_beyond_core_mm=dmax,
    )
