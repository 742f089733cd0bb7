"""Format-neutral voxel data: a file's ``Grid``, ``Header`` and ``Volume``, and RAS+ reorientation.

Every reader returns a :class:`Volume` in the file's own voxel order; :func:`to_ras` is the one
place that brings voxels to the closest canonical RAS+ order (axis permutation and flips only,
never resampling), so a mask maps back onto the input grid voxel-exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

DEFAULT_MAX_VOXELS: int = 64_000_000  # voxel cap every reader enforces: ~7x a 240x240x155 BraTS volume
GRID_TOL_MM: float = 1e-3  # origin and spacing tolerance between grids
GRID_TOL_DIR: float = 1e-4  # direction-cosine tolerance between grids


@dataclass(frozen=True, eq=False)
class Grid:
    """A file's own voxel grid: where masks are written back, voxel-exact."""

    shape: tuple[int, int, int]
    affine: np.ndarray  # (4, 4) float64, voxel -> world (RAS mm), as nibabel reports it
    qform_code: int = 1
    sform_code: int = 1
    xyz_units: str = "mm"

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"Grid shape must be 3 positive ints, got {self.shape}")
        affine = np.array(self.affine, dtype=np.float64)
        if affine.shape != (4, 4) or not np.isfinite(affine).all():
            raise ValueError("Grid affine must be a finite 4x4 matrix")
        affine.setflags(write=False)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "affine", affine)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    def mismatch(self, other: "Grid", *, tol_mm: float = GRID_TOL_MM,
                 tol_dir: float = GRID_TOL_DIR) -> str | None:
        """Describe how ``other`` differs from this grid beyond tolerance, or None if it matches."""
        if self.shape != other.shape:
            return f"shape {fmt_shape(other.shape)} != {fmt_shape(self.shape)}"
        sp_a, sp_b = np.array(self.spacing), np.array(other.spacing)
        if np.abs(sp_a - sp_b).max() > tol_mm:
            return f"spacing {fmt_vec(sp_b)} mm != {fmt_vec(sp_a)} mm"
        org_a, org_b = self.affine[:3, 3], other.affine[:3, 3]
        if np.abs(org_a - org_b).max() > tol_mm:
            return f"origin {fmt_vec(org_b)} mm != {fmt_vec(org_a)} mm"
        dir_a = self.affine[:3, :3] / sp_a
        dir_b = other.affine[:3, :3] / sp_b
        if np.abs(dir_a - dir_b).max() > tol_dir:
            return f"direction cosines differ by {np.abs(dir_a - dir_b).max():.2g}"
        return None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Grid):
            return NotImplemented
        return self.shape == other.shape and np.array_equal(self.affine, other.affine)

    def __hash__(self) -> int:
        return hash((self.shape, self.affine.tobytes()))


@dataclass
class Volume:
    """One validated file: float32 voxels in the file's own order, and its grid."""

    data: np.ndarray  # (X, Y, Z) or (X, Y, Z, C) float32
    grid: Grid
    path: Path


@dataclass(frozen=True)
class Header:
    """What a reader learns from a file before reading its voxels (see ``vlseg.io.readers``)."""

    grid: Grid  # the file's own grid
    channels: int = 1  # volumes along a 4th axis; 1 for a 3D file
    role: str | None = None  # what the format itself says: "label" (e.g. a NIfTI label intent)
    sequence: str | None = None  # a sequence the format records (e.g. a DICOM series description)


def fmt_shape(shape) -> str:
    return "x".join(str(int(s)) for s in shape)


def fmt_vec(v) -> str:
    return "(" + ", ".join(f"{float(x):.4g}" for x in v) + ")"


def to_ras(data: np.ndarray, grid: Grid) -> tuple[np.ndarray, Grid]:
    """Closest-canonical reorientation of (X, Y, Z[, ...]) voxels: permute/flip axes, adjust the
    affine; no resampling. Returns the RAS+ array and its grid."""
    ornt = io_orientation(grid.affine)
    ras = np.ascontiguousarray(apply_orientation(data, ornt))
    return ras, Grid(shape=ras.shape[:3], affine=grid.affine @ inv_ornt_aff(ornt, grid.shape))


def ras_grid(grid: Grid) -> Grid:
    """The grid :func:`to_ras` would give, computed from the grid alone (no voxel data)."""
    ornt = io_orientation(grid.affine)
    shape = tuple(int(grid.shape[int(ax)]) for ax in ornt[:, 0])
    return Grid(shape=shape, affine=grid.affine @ inv_ornt_aff(ornt, grid.shape))
