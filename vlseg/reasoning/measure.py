"""Per-target measurements from a probability map: presence, volume (+ range), lesions,
RANO-style axial diameters, centroid, and (with an AtlasLocator) hemisphere / midline / lobes,
each lesion's size and place, and distances to named structures.

Every quantity is computed in world millimetres from the voxel grid's affine, so anisotropic,
oblique and LPS-stored grids give the same numbers as an isotropic RAS one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import pdist, squareform

from vlseg import vocab
from vlseg.reasoning.atlas import AtlasLocator, apply_affine
from vlseg.reasoning.grouping import MERGE_MM, group_lesions, min_voxels, spacing_mm, voxel_volume_ml
from vlseg.reasoning.structures import distances_and_overlaps
from vlseg.vocab.places import STRUCTURE_KEYS

# Probability levels bounding the volume range (see docs/reasoning.md).
RANGE_LOW_CONFIDENCE = 0.3   # volume at p >= 0.3: the generous end
RANGE_HIGH_CONFIDENCE = 0.7  # volume at p >= 0.7: the conservative end
_FULL = np.ones((3, 3, 3), dtype=bool)  # 26-connectivity for lesions
_ANGLES = np.arange(16) * np.pi / 16
_DIRS = np.stack([np.cos(_ANGLES), np.sin(_ANGLES)], axis=1)  # (16, 2) unit directions
_DIRS_COS = float(np.cos(np.pi / 32))  # max width over _DIRS >= diameter * _DIRS_COS
INVOLVED_FRACTION = 0.10  # lobes holding >= 10 % of the target are "involved"
# Specks are not lesions (issue 22; docs/reasoning.md, "Tiny separate foci"). A counted piece
# other than the largest that is smaller than FOCUS_MAX_ML is
#   * a fragment of the main lesion (merged into it) when it lies within FOCUS_NEAR_MM of it;
#   * else, when its probability mass is weak (mean p < FOCUS_MIN_MEAN_P), a tiny separate focus,
#     possibly spurious: not counted, not moving the hemisphere or lobes, said once;
#   * else (small but confidently predicted, far away) a lesion.
FOCUS_MAX_ML = 1.0
FOCUS_NEAR_MM = 10.0
FOCUS_MIN_MEAN_P = 0.85
MINOR_FRACTION = 0.01     # lobes holding 1-10 % are "minor extension"; less is not named


@dataclass(frozen=True)
class LesionDetail:
    """One counted lesion (vlseg.reasoning.grouping): its size and place."""

    volume_ml: float
    centroid_ras_mm: tuple[float, float, float]
    centroid_mni_mm: tuple[float, float, float] | None = None
    hemisphere: str | None = None  # "left" | "right" | "bilateral" (crosses the midline)
    crosses_midline: bool = False
    main_lobe: str | None = None


@dataclass(frozen=True)
class TargetMeasurement:
    concept: str
    present: bool
    presence_score: float  # highest p at which a lesion of the minimum size still exists
    volume_ml: float
    volume_ml_range: tuple[float, float]
    n_lesions: int
    centroid_ras_mm: tuple[float, float, float] | None
    max_diameter_mm: float | None
    perpendicular_diameter_mm: float | None
    hemisphere: str | None  # "left" | "right" | "bilateral" | None
    crosses_midline: bool
    lobes: tuple[str, ...]
    # Extras (beyond the shared contract).
    lesion_volumes_ml: tuple[float, ...] = ()
    lobe_fractions: tuple[tuple[str, float], ...] = ()
    centroid_mni_mm: tuple[float, float, float] | None = None
    location_reliable: bool | None = None  # None: no atlas registration was available
    min_lesion_ml: float = 0.05
    # Lesions as counted (n_lesions == len(lesion_details)), largest first.
    lesion_details: tuple[LesionDetail, ...] = ()
    merge_mm: float = MERGE_MM
    uncounted_ml: float = 0.0  # mask volume in pieces below the minimum (not counted)
    # Location, ranked: involved (>= 10 %) and minor (1-10 %) lobes; lobe -> (left, right) share.
    lobes_involved: tuple[str, ...] = ()
    lobes_minor: tuple[str, ...] = ()
    lobe_sides: tuple[tuple[str, float, float], ...] = ()
    left_fraction: float | None = None   # share of the target left / right of the midline plane
    right_fraction: float | None = None
    midline_method: str | None = None    # how the mid-sagittal plane was found
    distances_mm: tuple[tuple[str, float | None], ...] = ()  # structure key -> mm (0 = touching)
    structures_overlapping: tuple[str, ...] = ()  # keys of structures it overlaps (not just touches)
    # Tiny separate foci, possibly spurious (FOCUS_* rule): not in n_lesions nor in the location.
    foci: tuple[LesionDetail, ...] = ()


def _check_inputs(concept: str, prob: np.ndarray, affine: np.ndarray, threshold: float,
                  min_lesion_ml: float) -> tuple[np.ndarray, np.ndarray]:
    vocab.check_concept(concept)
    prob = np.asarray(prob)
    if prob.ndim != 3:
        raise ValueError(f"prob must be a 3D (X, Y, Z) array, got shape {prob.shape}")
    prob = prob.astype(np.float32, copy=False)
    if not np.all(np.isfinite(prob)):
        raise ValueError("prob contains NaN or infinite values")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)) \
            or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise ValueError("affine must be a finite, invertible 4x4 matrix")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if min_lesion_ml < 0:
        raise ValueError(f"min_lesion_ml must be >= 0, got {min_lesion_ml}")
    return prob, affine


def lesions(mask: np.ndarray, min_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Connected components (26-conn.) with >= ``min_size`` voxels: (label volume 1..n, sizes)."""
    comps, n = ndimage.label(mask, structure=_FULL)
    if n == 0:
        return comps, np.zeros(0, dtype=np.int64)
    sizes = np.bincount(comps.ravel())[1:]
    keep = np.flatnonzero(sizes >= min_size) + 1
    remap = np.zeros(n + 1, dtype=np.int32)
    remap[keep] = np.arange(1, len(keep) + 1)
    return remap[comps], sizes[keep - 1]


def clean_mask(prob: np.ndarray, affine: np.ndarray, *, threshold: float = 0.5,
               min_lesion_ml: float = 0.05) -> np.ndarray:
    """The mask measure_target measures: p >= threshold, components below the minimum removed."""
    min_vox = min_voxels(min_lesion_ml, affine)
    return lesions(np.asarray(prob) >= threshold, min_vox)[0] > 0


def _crop_box(mask: np.ndarray, margin: int = 1) -> tuple[slice, ...] | None:
    if not mask.any():
        return None
    box = []
    for ax in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))
        box.append(slice(max(hit[0] - margin, 0), min(hit[-1] + margin + 1, mask.shape[ax])))
    return tuple(box)


class _Levels:
    """Lesions of {p >= q}, memoised: the sets are nested, so equal voxel counts mean equal
    sets (a hard 0/1 map is labelled once for all levels)."""

    def __init__(self, prob: np.ndarray, min_vox: int) -> None:
        self.prob, self.min_vox, self._memo = prob, min_vox, {}

    def at(self, q: float) -> tuple[np.ndarray, np.ndarray]:
        mask = self.prob >= q
        n = int(mask.sum())
        if n not in self._memo:
            self._memo[n] = (lesions(mask, self.min_vox) if n >= self.min_vox
                             else (np.zeros(mask.shape, np.int32), np.zeros(0, np.int64)))
        return self._memo[n]

    def exists(self, q: float) -> bool:
        return len(self.at(q)[1]) > 0


def _presence_score(levels: _Levels, floor: float = 0.02, steps: int = 7) -> float:
    """Largest q (to 1/2**steps) such that {p >= q} holds a component of >= min_vox voxels."""
    if not levels.exists(floor):
        return 0.0
    if levels.exists(1.0):
        return 1.0
    lo, hi = floor, 1.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if levels.exists(mid) else (lo, mid)
    return float(lo)


def axial_axis(affine: np.ndarray) -> int:
    """Voxel axis whose direction is closest to world z (superior)."""
    cols = np.asarray(affine)[:3, :3]
    return int(np.argmax(np.abs(cols[2]) / np.linalg.norm(cols, axis=0)))


def _plane_coords(affine: np.ndarray, axis: int) -> tuple[np.ndarray, float]:
    """2x2 matrix mapping in-slice voxel indices (a, b) to orthonormal in-plane mm, and the
    smaller in-plane spacing."""
    a, b = [i for i in range(3) if i != axis]
    ca, cb = affine[:3, a], affine[:3, b]
    e1 = ca / np.linalg.norm(ca)
    cb_perp = cb - (cb @ e1) * e1
    e2 = cb_perp / np.linalg.norm(cb_perp)
    m = np.array([[ca @ e1, cb @ e1], [0.0, cb @ e2]])
    return m, float(min(np.linalg.norm(ca), np.linalg.norm(cb)))


def _longest_chord(pts: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Longest distance between points (N, 2) and its end points."""
    cand = pts
    if len(pts) > 3:
        try:
            cand = pts[ConvexHull(pts).vertices]
        except QhullError:  # collinear points: the extremes along a few directions are the ends
            dirs = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, -1.0]])
            proj = pts @ dirs.T  # (N, 4)
            cand = pts[np.unique(np.r_[proj.argmin(axis=0), proj.argmax(axis=0)])]
    d = squareform(pdist(cand))
    i, j = np.unravel_index(int(np.argmax(d)), d.shape)
    return float(d[i, j]), cand[i], cand[j]


def _perpendicular(pts: np.ndarray, p: np.ndarray, q: np.ndarray, bin_mm: float) -> float:
    """Longest chord perpendicular to p->q: extent across p->q within bins along it."""
    u = (q - p) / max(np.linalg.norm(q - p), 1e-9)
    v = np.array([-u[1], u[0]])
    s = (pts - p) @ u
    t = pts @ v
    bins = np.floor(s / bin_mm).astype(np.int64)
    order = np.argsort(bins, kind="stable")
    bins, t = bins[order], t[order]
    starts = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
    widths = np.maximum.reduceat(t, starts) - np.minimum.reduceat(t, starts)
    return float(widths.max()) if len(widths) else 0.0


def _voxel_extent(to_mm: np.ndarray, u: np.ndarray) -> float:
    """One in-plane voxel's extent along the unit direction ``u`` (mm): the length of ``u`` in
    voxel steps, sqrt((u . c1)^2 + (u . c2)^2) for the voxel's edge vectors c1, c2 (1 mm
    everywhere on a 1 mm grid)."""
    return float(np.hypot(u @ to_mm[:, 0], u @ to_mm[:, 1]))


def axial_diameters(labels: np.ndarray, affine: np.ndarray) -> tuple[float | None, float | None]:
    """RANO-style: the longest in-slice diameter of any lesion on any axial slice and the
    longest diameter perpendicular to it on that slice (mm, edge to edge: the chord between voxel
    centres plus one voxel's extent along it, so a rasterised shape measures within a voxel of its
    true size, not up to two voxels short as centre to centre would)."""
    axis = axial_axis(affine)
    to_mm, spacing = _plane_coords(affine, axis)
    best = (0.0, None)  # (diameter, (points, p, q))
    for lab, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        sub = labels[box] == lab
        area = sub.sum(axis=tuple(a for a in range(3) if a != axis))
        for k in np.argsort(-area, kind="stable"):  # big slices first: an early, tight bound
            if area[k] == 0:
                break
            sl = np.take(sub, k, axis=axis)
            pts = np.argwhere(sl) @ to_mm.T  # (N, 2) mm in the slice plane
            proj = pts @ _DIRS.T  # widths along 16 directions bound the diameter from above
            if (proj.max(axis=0) - proj.min(axis=0)).max() / _DIRS_COS <= best[0]:
                continue
            d, p, q = _longest_chord(pts)
            if d > best[0]:
                best = (d, (pts, p, q))
    if best[1] is None:
        # Single-voxel lesions (in plane): one voxel across
        return (spacing, spacing) if labels.any() else (None, None)
    pts, p, q = best[1]
    u = (q - p) / max(float(np.linalg.norm(q - p)), 1e-9)
    v = np.array([-u[1], u[0]])
    return best[0] + _voxel_extent(to_mm, u), _perpendicular(pts, p, q, spacing) + _voxel_extent(to_mm, v)


def _absent(concept: str, score: float, hi_ml: float, min_lesion_ml: float) -> TargetMeasurement:
    return TargetMeasurement(
        concept=concept, present=False, presence_score=score, volume_ml=0.0,
        volume_ml_range=(0.0, hi_ml), n_lesions=0, centroid_ras_mm=None, max_diameter_mm=None,
        perpendicular_diameter_mm=None, hemisphere=None, crosses_midline=False, lobes=(),
        min_lesion_ml=min_lesion_ml)


def measure_target(concept: str, prob: np.ndarray, affine: np.ndarray, *,
                   locator: AtlasLocator | None, threshold: float = 0.5,
                   min_lesion_ml: float = 0.05, mask: np.ndarray | None = None,
                   parent_mask: np.ndarray | None = None, core_mask: np.ndarray | None = None,
                   merge_mm: float = MERGE_MM, focus_rule: bool = True,
                   distances: bool | tuple[str, ...] | list[str] = True) -> TargetMeasurement:
    """Measure one target from its probability map (X, Y, Z) in [0, 1] on the grid ``affine``.

    ``mask``: the final mask of the target (``vlseg.reasoning.labelling.final_masks``); when
    given, volume, lesions, diameters and location are measured on it and the probabilities
    only give the presence score and the volume range. Without it, ``clean_mask(prob)``.
    ``parent_mask``: the final mask of the region the concept is counted in
    (``vlseg.reasoning.grouping.lesion_parent``: TC for NCR / ET, WT for ED), so a sub-region
    counts one lesion per lesion of its parent. ``core_mask``: the tumor core's final mask
    (``lesion_core``: TC for WT and ED), so edema islands join their tumor. ``merge_mm``: pieces
    this close are one lesion. ``**lesion_masks(concept, final_masks)`` gives both.
    ``focus_rule``: apply the tiny-focus rule (FOCUS_*; False: every counted piece is a lesion).
    ``distances``: with a locator, distances to all structures (True), none (False) or these.
    """
    prob, affine = _check_inputs(concept, prob, affine, threshold, min_lesion_ml)
    for name, m in (("mask", mask), ("parent_mask", parent_mask), ("core_mask", core_mask)):
        if m is not None and np.shape(m) != prob.shape:
            raise ValueError(f"{name} shape {np.shape(m)} differs from prob shape {prob.shape}")
    mask = None if mask is None else np.asarray(mask, dtype=bool)
    parent_mask = None if parent_mask is None else np.asarray(parent_mask, dtype=bool)
    vml = voxel_volume_ml(affine)
    min_vox = min_voxels(min_lesion_ml, affine)
    low_q = min(RANGE_LOW_CONFIDENCE, threshold)
    high_q = max(RANGE_HIGH_CONFIDENCE, threshold)

    # Work inside the box that holds everything above the lowest level used.
    support = prob >= min(low_q, 0.02)
    if mask is not None:
        support |= mask
    if parent_mask is not None:
        support |= parent_mask
    if core_mask is not None:
        core_mask = np.asarray(core_mask, dtype=bool)
        support |= core_mask
    box = _crop_box(support)
    if box is None:
        return _absent(concept, 0.0, 0.0, min_lesion_ml)
    p = prob[box]
    offset = np.array([s.start for s in box], dtype=np.float64)
    crop_affine = affine.copy()
    crop_affine[:3, 3] = apply_affine(affine, offset[None])[0]

    # Presence, volumes at the three levels.
    levels = _Levels(p, min_vox)
    score = _presence_score(levels)
    vol = {q: float(levels.at(q)[1].sum()) * vml for q in (low_q, high_q)}
    labels, sizes = levels.at(threshold) if mask is None else lesions(mask[box], 1)
    if len(sizes) == 0:
        return _absent(concept, min(score, threshold), vol[low_q], min_lesion_ml)
    volume = float(sizes.sum()) * vml
    target = labels > 0

    # Lesions as a radiologist counts them: pieces merged, sub-regions per parent lesion.
    groups = group_lesions(target, crop_affine, min_lesion_ml=min_lesion_ml, merge_mm=merge_mm,
                           parent=None if parent_mask is None else parent_mask[box],
                           core=None if core_mask is None else core_mask[box])

    # Specks are not lesions: small pieces near the main lesion join it, weak far ones are foci
    lesion_labels, focus_labels = (split_foci(groups.labels, p, crop_affine) if focus_rule
                                   else (groups.labels, np.zeros_like(groups.labels)))
    n_counted = int(lesion_labels.max())
    counted_ml = tuple(float(np.count_nonzero(lesion_labels == k)) * vml for k in range(1, n_counted + 1))

    # Centroid (world RAS mm) and RANO-style axial diameters.
    idx = np.argwhere(target).astype(np.float64)
    centroid = tuple(float(v) for v in apply_affine(crop_affine, idx.mean(axis=0)[None])[0])
    dmax, dperp = axial_diameters(labels, crop_affine)

    # Hemisphere / midline / lobes through the atlas registration: the counted lesions only
    # (specks below the minimum and tiny foci do not move the reading), per lesion and overall.
    where = (locator.locate(lesion_labels > 0, crop_affine, labels=lesion_labels)
             if locator is not None else None)
    foci_where = (locator.locate(focus_labels > 0, crop_affine, labels=focus_labels)
                  if locator is not None and focus_labels.any() else None)
    details = _details(lesion_labels, counted_ml, crop_affine, where)
    foci = _details(focus_labels, tuple(float(np.count_nonzero(focus_labels == k)) * vml
                                        for k in range(1, int(focus_labels.max()) + 1)),
                    crop_affine, foci_where)
    fractions = where["lobe_fractions"] if where else {}
    dist: dict[str, float | None] = {}
    overlapping: tuple[str, ...] = ()
    if locator is not None and distances:
        keys = STRUCTURE_KEYS if distances is True else tuple(distances)
        dist, overlapping = distances_and_overlaps(target, crop_affine, locator, keys)
    return TargetMeasurement(
        concept=concept, present=True, presence_score=max(score, threshold), volume_ml=volume,
        volume_ml_range=(min(vol[high_q], volume), max(vol[low_q], volume)),
        n_lesions=n_counted, centroid_ras_mm=centroid, max_diameter_mm=dmax,
        perpendicular_diameter_mm=dperp,
        hemisphere=where["hemisphere"] if where else None,
        crosses_midline=bool(where["crosses_midline"]) if where else False,
        lobes=tuple(where["lobes"]) if where else (),
        lesion_volumes_ml=counted_ml,
        lobe_fractions=tuple(fractions.items()),
        centroid_mni_mm=where["centroid_mni_mm"] if where else None,
        location_reliable=locator.reliable if locator is not None else None,
        min_lesion_ml=min_lesion_ml,
        lesion_details=tuple(details), merge_mm=merge_mm, uncounted_ml=groups.uncounted_ml,
        lobes_involved=tuple(k for k, f in fractions.items() if f >= INVOLVED_FRACTION),
        lobes_minor=tuple(k for k, f in fractions.items() if MINOR_FRACTION <= f < INVOLVED_FRACTION),
        lobe_sides=tuple((k, v["left"], v["right"]) for k, v in
                         sorted(where["lobe_sides"].items(), key=lambda kv: -fractions.get(kv[0], 0.0)))
        if where else (),
        left_fraction=where["left_fraction"] if where else None,
        right_fraction=where["right_fraction"] if where else None,
        midline_method=where.get("midplane") if where else None,
        distances_mm=tuple(dist.items()), structures_overlapping=overlapping, foci=foci,
    )


def split_foci(labels: np.ndarray, prob: np.ndarray, affine: np.ndarray, *,
               max_ml: float = FOCUS_MAX_ML, near_mm: float = FOCUS_NEAR_MM,
               min_mean_p: float = FOCUS_MIN_MEAN_P) -> tuple[np.ndarray, np.ndarray]:
    """(lesions, foci): two label volumes (1..n, largest first) from counted ``labels`` (1 =
    the largest), by the FOCUS_* rule above: a piece other than the largest, smaller than
    ``max_ml``, joins lesion 1 within ``near_mm`` of it, else is a focus when its mean
    probability is below ``min_mean_p``."""
    labels = np.asarray(labels)
    n = int(labels.max()) if labels.size else 0
    foci = np.zeros(labels.shape, np.int32)
    if n <= 1:
        return labels.astype(np.int32, copy=False), foci
    vml = voxel_volume_ml(affine)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    small = [k for k in range(2, n + 1) if sizes[k] * vml < max_ml]
    if not small:
        return labels.astype(np.int32, copy=False), foci
    dist = ndimage.distance_transform_edt(labels != 1, sampling=spacing_mm(affine))  # mm to lesion 1
    mean_p = ndimage.mean(np.asarray(prob, np.float64), labels, index=small)
    target = np.arange(n + 1)
    focus_ids = []
    for k, mp in zip(small, np.atleast_1d(mean_p)):
        if float(dist[labels == k].min()) <= near_mm:
            target[k] = 1  # a fragment of the main lesion
        elif mp < min_mean_p:
            target[k] = 0
            focus_ids.append(k)
    kept = np.unique(target[1:])
    kept = kept[kept > 0]
    order = sorted(kept, key=lambda k: -int(sizes[target == k].sum()))  # largest first after merging
    remap = np.zeros(n + 1, np.int32)
    for new, k in enumerate(order, start=1):
        remap[target == k] = new
    remap[0] = 0
    remap[focus_ids] = 0
    fmap = np.zeros(n + 1, np.int32)
    for new, k in enumerate(sorted(focus_ids, key=lambda k: -int(sizes[k])), start=1):
        fmap[k] = new
    return remap[labels], fmap[labels]


def _details(labels: np.ndarray, volumes: tuple[float, ...], affine: np.ndarray,
             where: dict | None) -> tuple[LesionDetail, ...]:
    """Each labelled piece's size and place (``where``: ``AtlasLocator.locate`` of them)."""
    per = {les["label"]: les for les in where["lesions"]} if where else {}
    out = []
    for k, v in enumerate(volumes, start=1):
        pts = np.argwhere(labels == k).astype(np.float64)
        c = tuple(float(x) for x in apply_affine(affine, pts.mean(axis=0)[None])[0])
        les = per.get(k, {})
        out.append(LesionDetail(
            volume_ml=v, centroid_ras_mm=c, centroid_mni_mm=les.get("centroid_mni_mm"),
            hemisphere=les.get("hemisphere"), crosses_midline=bool(les.get("crosses_midline", False)),
            main_lobe=les.get("main_lobe")))
    return tuple(out)
