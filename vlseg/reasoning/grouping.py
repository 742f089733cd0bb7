"""Lesions as a radiologist counts them: connected pieces merged into lesions.

A thresholded mask falls apart into pieces that are one lesion to a reader: a rim broken by a
non-enhancing gap, edema split by a sulcus, a fragment a voxel or two from the main mass. The
rules (docs/reasoning.md, "Lesion counting"):

1. Pieces are the 26-connected components of the mask.
2. Two pieces whose nearest voxel centres are at most ``merge_mm`` (``MERGE_MM`` = 5 mm) apart,
   measured in world millimetres (anisotropic spacing honoured), belong to one lesion; merging
   is transitive.
3. A sub-region inside a lesion (necrosis or enhancing tumor inside a core, edema around a
   tumor: ``lesion_parent``) is counted per lesion of its parent region: every parent lesion that
   holds some of it is one lesion of it ("necrosis within 1 lesion", not 12 specks).
4. For the outer region (WT), a lesion is a tumor core with its edema: a piece holding no core
   (``lesion_core``: TC) joins the nearest piece that holds one, however far, when the case has
   a core at all (an edema island is that tumor's edema, not another tumor).
5. A lesion smaller than ``min_lesion_ml`` (the same minimum the mask uses, 0.05 mL by default)
   is not counted; its voxels still count towards the volume. A present target always counts at
   least one lesion (its largest).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from scipy.spatial import cKDTree

from vlseg import vocab


def voxel_volume_ml(affine: np.ndarray) -> float:
    """Volume of one voxel of the grid ``affine``, in mL."""
    return float(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3])) / 1000.0)


def min_voxels(min_lesion_ml: float, affine: np.ndarray) -> int:
    """The smallest lesion, in voxels of the grid ``affine`` (at least 1)."""
    vml = voxel_volume_ml(affine)
    return max(1, math.ceil(min_lesion_ml / vml - 1e-9)) if vml > 0 else 1

MERGE_MM = 5.0  # pieces whose nearest voxel centres are <= this far apart are one lesion
_FULL = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class LesionGroups:
    """``labels``: int32 volume, 0 = background or an uncounted piece, 1..n = counted lesions
    (largest first); ``volumes_ml``: their volumes; ``uncounted_ml``: mask volume not counted."""

    labels: np.ndarray
    volumes_ml: tuple[float, ...]
    uncounted_ml: float = 0.0

    @property
    def n(self) -> int:
        return len(self.volumes_ml)


def lesion_parent(concept: str) -> str | None:
    """The region whose lesions a concept is counted in, or None when it counts its own.

    Single-class concepts (NCR, ED, ET) count per lesion of the smallest nested region that
    strictly contains them (NCR, ET -> TC; ED -> WT); composite regions (TC, WT) count their own.
    """
    try:
        me = vocab.concept(concept)
    except (KeyError, ValueError):
        return None
    mine = set(me.parts) or {concept}
    if len(mine) > 1:
        return None
    holders = [c for c in vocab.concepts() if c.region and c.code != concept
               and mine < set(c.parts)]
    if not holders:
        return None
    return min(holders, key=lambda c: len(c.parts)).code


def lesion_core(concept: str) -> str | None:
    """The core region whose pieces define a lesion of ``concept``'s lesion region: TC for WT
    and for ED (counted in WT); None for the others."""
    chain = vocab.region_chain()
    holder = lesion_parent(concept) or concept
    return chain[1] if len(chain) > 1 and holder == chain[0] else None


def lesion_masks(concept: str, masks: dict) -> dict:
    """``parent_mask`` / ``core_mask`` keyword arguments of ``measure_target`` for ``concept``
    from a case's final masks (``vlseg.reasoning.labelling.final_masks``)."""
    out = {}
    parent, core = lesion_parent(concept), lesion_core(concept)
    if parent is not None and masks.get(parent) is not None:
        out["parent_mask"] = masks[parent]
    if core is not None and masks.get(core) is not None:
        out["core_mask"] = masks[core]
    return out


def spacing_mm(affine: np.ndarray) -> np.ndarray:
    """Voxel size along each array axis (column norms of the affine)."""
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def merge_pieces(mask: np.ndarray, affine: np.ndarray, *, merge_mm: float = MERGE_MM) -> tuple[np.ndarray, int]:
    """Label volume (int32, 1..n) where pieces within ``merge_mm`` of each other share a label.

    Every pair of pieces involves at least one that is not the largest, so a distance map is
    only computed around each smaller piece (its box grown by ``merge_mm``): cheap when a big
    lesion comes with a few fragments.
    """
    comps, n = ndimage.label(np.asarray(mask, dtype=bool), structure=_FULL)
    if n <= 1 or merge_mm <= 0:
        return comps.astype(np.int32, copy=False), n
    sp = spacing_mm(affine)
    grow = np.ceil(merge_mm / sp).astype(int)
    sizes = np.bincount(comps.ravel())[1:]
    biggest = int(np.argmax(sizes)) + 1
    root = np.arange(n + 1)

    def find(a: int) -> int:
        while root[a] != a:
            root[a] = root[root[a]]
            a = root[a]
        return a

    for c, box in enumerate(ndimage.find_objects(comps), start=1):
        if c == biggest or box is None:
            continue
        big = tuple(slice(max(s.start - g, 0), min(s.stop + g, dim))
                    for s, g, dim in zip(box, grow, comps.shape))
        sub = comps[big]
        others = (sub > 0) & (sub != c)
        if not others.any():
            continue
        dist = ndimage.distance_transform_edt(sub != c, sampling=sp)
        for o in np.unique(sub[others & (dist <= merge_mm + 1e-6)]):
            ra, rb = find(c), find(int(o))
            if ra != rb:
                root[max(ra, rb)] = min(ra, rb)
    final = np.array([find(i) for i in range(n + 1)])
    _, dense = np.unique(final, return_inverse=True)  # 0 stays 0 (root of 0 is 0)
    return dense.astype(np.int32)[comps], int(dense.max())


def _attach_to_cores(groups: np.ndarray, n: int, core: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, int]:
    """Relabel groups holding no ``core`` voxel to the nearest group that holds one."""
    has = np.zeros(n + 1, bool)
    has[np.unique(groups[core & (groups > 0)])] = True
    has[0] = False
    if not has.any() or has[1:].all():
        return groups, n
    cored = np.isin(groups, np.flatnonzero(has))
    pts = np.argwhere(cored)
    tree = cKDTree(pts * spacing_mm(affine))
    target = np.arange(n + 1)
    for g in np.flatnonzero(~has[1:]) + 1:
        q = np.argwhere(groups == g)
        q = q[:: max(1, len(q) // 500)]
        dist, i = tree.query(q * spacing_mm(affine), k=1)
        near = pts[i[np.argmin(dist)]]
        target[g] = groups[tuple(near)]
    _, dense = np.unique(target, return_inverse=True)
    return dense.astype(np.int32)[groups], int(dense.max())


def group_lesions(mask: np.ndarray, affine: np.ndarray, *, min_lesion_ml: float = 0.05,
                  merge_mm: float = MERGE_MM, parent: np.ndarray | None = None,
                  core: np.ndarray | None = None) -> LesionGroups:
    """Count the lesions of ``mask`` (rules in the module doc). ``parent``: the mask of the
    region the concept is counted in (``lesion_parent``); ``core``: the core region's mask
    (``lesion_core``) for the outer region; both on the same grid."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return LesionGroups(np.zeros(mask.shape, np.int32), ())
    for name, m in (("parent", parent), ("core", core)):
        if m is not None and np.shape(m) != mask.shape:
            raise ValueError(f"{name} shape {np.shape(m)} differs from mask shape {mask.shape}")
    region = mask if parent is None else (np.asarray(parent, dtype=bool) | mask)
    groups, n = merge_pieces(region, affine, merge_mm=merge_mm)
    if core is not None and n > 1:
        groups, n = _attach_to_cores(groups, n, np.asarray(core, dtype=bool), affine)
    if parent is not None:
        groups = np.where(mask, groups, 0)
    sizes = np.bincount(groups.ravel(), minlength=n + 1)[1:]
    min_vox = min_voxels(min_lesion_ml, affine)
    keep = [i for i in np.argsort(-sizes, kind="stable") if sizes[i] >= min_vox and sizes[i] > 0]
    if not keep:
        keep = [int(np.argmax(sizes))]  # a present target is at least one lesion
    remap = np.zeros(n + 1, dtype=np.int32)
    remap[np.asarray(keep) + 1] = np.arange(1, len(keep) + 1)
    labels = remap[groups]
    counted = float(sizes[keep].sum())
    vml = voxel_volume_ml(affine)
    return LesionGroups(labels=labels, volumes_ml=tuple(float(sizes[i]) * vml for i in keep),
                        uncounted_ml=float(mask.sum() - counted) * vml)
