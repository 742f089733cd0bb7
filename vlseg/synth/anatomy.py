"""Normal anatomy for the phantoms: the ICBM152 2009a template that ships inside nilearn.

The template (T1 + grey/white-matter probability maps, 1 mm, MNI space) is read once per process
and turned into tissue fractions GM / WM / CSF that sum to the skull-stripped brain mask.
CSF is whatever the brain mask holds that is neither GM nor WM (sulci, ventricles).
A head pose (rotation, shift, scale) maps the BraTS-like output grid into template space.
"""
from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation

from vlseg.errors import VlsegError
from vlseg.synth.params import SynthRanges

COARSE_MM = 2.0  # resolution of the template copy used for tumor growth


@dataclass(frozen=True)
class Template:
    """Tissue fractions in MNI space. Arrays are read-only and shared between cases."""

    tissue: torch.Tensor        # (3, I, J, K) float32 GM, WM, CSF fractions, 1 mm (do not modify)
    affine: np.ndarray          # 4x4 voxel -> MNI mm of `tissue`
    coarse: np.ndarray          # (3, i, j, k) float32 the same at COARSE_MM
    coarse_affine: np.ndarray   # 4x4 voxel -> MNI mm of `coarse`
    depth_mm: np.ndarray        # (i, j, k) float32 distance to outside the brain, coarse grid
    centres_supra: np.ndarray   # (N, 3) MNI mm: deep supratentorial white matter
    centres_infra: np.ndarray   # (M, 3) MNI mm: cerebellar / brainstem white matter
    surface_mm: np.ndarray      # (S, 3) MNI mm: points on the brain surface (for placing the FOV)


def _TEMPLATE_DIR() -> Path:
    """nilearn/datasets/data, found without importing nilearn (which is slow to import)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise VlsegError("nilearn is not installed; it ships the ICBM152 template the phantoms use")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data"


def block_mean(vol: np.ndarray, f: int) -> np.ndarray:
    """Mean over f x f x f blocks (zero-padded at the far edges)."""
    pad = [(0, (-n) % f) for n in vol.shape]
    v = np.pad(vol, pad)
    s = v.shape
    return v.reshape(s[0] // f, f, s[1] // f, f, s[2] // f, f).mean(axis=(1, 3, 5))


@functools.lru_cache(maxsize=1)
def load_template() -> Template:
    """Read the template from the nilearn wheel (once per process)."""
    files = {k: _TEMPLATE_DIR() / f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz" for k in ("t1", "gm", "wm")}
    try:
        imgs = {k: nib.load(f) for k, f in files.items()}
        t1, gm, wm = (np.asarray(imgs[k].dataobj, dtype=np.float32) / 255.0 for k in ("t1", "gm", "wm"))
    except Exception as e:  # pragma: no cover - depends on the installed wheel
        raise VlsegError(
            f"cannot read the ICBM152 template shipped with nilearn ({e}); reinstall nilearn"
        ) from e
    affine = np.asarray(imgs["t1"].affine, dtype=np.float64)
    brain = (t1 > 0).astype(np.float32)  # the template is skull-stripped (and has no holes)
    gm = np.clip(gm, 0, 1) * brain
    wm = np.clip(wm, 0, 1) * brain
    total = gm + wm
    over = total > 1
    gm[over] /= total[over]
    wm[over] /= total[over]
    csf = np.clip(brain - gm - wm, 0, 1)
    tissue = np.ascontiguousarray(np.stack([gm, wm, csf]))  # (3, I, J, K); nibabel gives F order

    f = int(COARSE_MM)
    coarse = np.stack([block_mean(t, f) for t in tissue]).astype(np.float32)
    coarse_affine = affine.copy()
    coarse_affine[:3, :3] *= f
    coarse_affine[:3, 3] += affine[:3, :3] @ np.full(3, (f - 1) / 2)
    coarse_brain = coarse.sum(0) > 0.5
    depth = ndi.distance_transform_edt(coarse_brain, sampling=COARSE_MM).astype(np.float32)

    # Candidate tumor centres: confidently white matter, at least 10 mm inside the brain.
    idx = np.argwhere((coarse[1] > 0.85) & (depth >= 10.0))
    mm = idx @ coarse_affine[:3, :3].T + coarse_affine[:3, 3]
    x, y, z = mm.T
    infra = (z < -20) | ((y < -45) & (z < 5))  # cerebellum, brainstem, lowest temporal poles
    surf = np.argwhere(coarse_brain & ~ndi.binary_erosion(coarse_brain))
    surf_mm = surf @ coarse_affine[:3, :3].T + coarse_affine[:3, 3]

    for a in (coarse, depth):
        a.setflags(write=False)
    return Template(
        tissue=torch.from_numpy(tissue), affine=affine, coarse=coarse, coarse_affine=coarse_affine, depth_mm=depth,
        centres_supra=mm[~infra].astype(np.float32), centres_infra=mm[infra].astype(np.float32),
        surface_mm=surf_mm[::7].astype(np.float32),
    )


@dataclass(frozen=True)
class Pose:
    """Output world (scanner mm) -> template MNI mm: ``p = matrix @ w + offset``."""

    matrix: np.ndarray   # (3, 3)
    offset: np.ndarray   # (3,)
    rotation_deg: float
    scale: tuple[float, float, float]
    shift_mm: tuple[float, float, float]

    def to_world(self, mni: np.ndarray) -> np.ndarray:
        return (mni - self.offset) @ np.linalg.inv(self.matrix).T


def output_geometry(spacing_mm: float, ranges: SynthRanges) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and RAS affine of the output grid: the fixed FOV at ``spacing_mm``, centred on 0."""
    if not (np.isfinite(spacing_mm) and 0.5 <= spacing_mm <= 8.0):
        raise ValueError(f"spacing_mm must be within [0.5, 8] mm, got {spacing_mm}")
    shape = tuple(int(np.ceil(f / spacing_mm - 1e-6)) for f in ranges.fov_mm)
    affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    affine[:3, 3] = -spacing_mm * (np.asarray(shape) - 1) / 2
    return shape, affine  # type: ignore[return-value]


def sample_pose(rng: np.random.Generator, tpl: Template, ranges: SynthRanges) -> Pose:
    """Random head pose; the brain is centred in the FOV (top of the brain kept inside)."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = float(rng.uniform(*ranges.rotation_deg))
    rot = Rotation.from_rotvec(np.deg2rad(angle) * axis).as_matrix()
    scale = rng.uniform(*ranges.scale) * rng.uniform(*ranges.scale_aniso, size=3)
    shift = rng.uniform(*ranges.shift_mm, size=3)
    # world = diag(scale) @ rot @ (p - t); find t so the brain's bounding box centre sits at `shift`.
    fwd = np.diag(scale) @ rot
    pts = tpl.surface_mm @ fwd.T
    lo, hi = pts.min(0), pts.max(0)
    half_fov = np.asarray(ranges.fov_mm) / 2
    centre = (lo + hi) / 2
    # Keep the vertex inside the FOV: if the brain is too tall, crop from the bottom instead.
    top_room = half_fov[2] - 3.0 - (hi[2] - centre[2])
    shift[2] = min(shift[2], top_room)
    t = np.linalg.solve(fwd, centre - shift)
    matrix = np.linalg.inv(fwd)
    return Pose(matrix=matrix, offset=t, rotation_deg=angle,
                scale=tuple(float(s) for s in scale), shift_mm=tuple(float(s) for s in shift))


def index_to_grid(vol_shape: tuple[int, ...], index_to_vox: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fold "output index -> volume voxel" (4x4) and grid_sample's normalisation into (3x3, 3).

    grid_sample wants coordinates in [-1, 1] ordered (k, j, i) for a (C, I, J, K) volume.
    """
    size = np.asarray(vol_shape[-3:], np.float64)
    norm = np.diag(2.0 / (size - 1))[::-1]          # rows reversed: (k, j, i)
    lin = norm @ index_to_vox[:3, :3]
    off = norm @ index_to_vox[:3, 3] - 1.0
    return lin, off


def affine_grid(shape: tuple[int, int, int], lin: np.ndarray, off: np.ndarray) -> torch.Tensor:
    """(X, Y, Z, 3) float32 grid ``lin @ (i, j, k) + off``, built by broadcasting (one pass)."""
    lin_t = torch.as_tensor(lin, dtype=torch.float32)
    ax = [torch.arange(n, dtype=torch.float32) for n in shape]
    g = (ax[0][:, None, None, None] * lin_t[:, 0] + torch.as_tensor(off, dtype=torch.float32))
    g = g + ax[1][None, :, None, None] * lin_t[:, 1]
    return g + ax[2][None, None, :, None] * lin_t[:, 2]


def sample_grid(vol: np.ndarray | torch.Tensor, grid: torch.Tensor, *, padding: str = "zeros") -> torch.Tensor:
    """Trilinear samples of ``vol`` (C, I, J, K) at a normalised ``grid`` (X, Y, Z, 3) -> (C, X, Y, Z)."""
    v = vol if isinstance(vol, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(vol, np.float32))
    if v.ndim == 3:
        v = v[None]
    if grid.numel() == 0:
        return torch.zeros((v.shape[0], *grid.shape[:-1]))
    out = F.grid_sample(v[None], grid[None], mode="bilinear", padding_mode=padding, align_corners=True)
    return out[0]


def pose_matrix(pose: Pose) -> np.ndarray:
    """4x4 world (scanner mm) -> MNI mm."""
    m = np.eye(4)
    m[:3, :3] = pose.matrix
    m[:3, 3] = pose.offset
    return m
