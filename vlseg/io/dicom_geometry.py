"""DICOM series geometry: highdicom volume geometry, vlseg grids, and resampling onto a grid.

Geometry comes from highdicom (``get_volume_from_series`` / ``Image.get_volume``): slices
sorted along the normal of ImageOrientationPatient, spacing from ImagePositionPatient (never
SliceThickness), the LPS affine turned into RAS for ``vlseg.io``. A gantry-tilted (sheared)
stack, irregular slice spacing, several images per position (multi-echo) and mixed
orientations are refused with one line saying what to do. Voxels keep the series' own order
(columns, rows, slices), so masks map back voxel-exactly and a DICOM-SEG can reference them.

:func:`resample_onto` puts a series on another series' grid (SimpleITK linear interpolation in
patient space, from the exact DICOM geometry); ``vlseg.io.dicom`` decides which series are.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from vlseg.errors import InputError
from vlseg.io.dicom_study import Series
from vlseg.io.volume import Grid, fmt_shape

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# highdicom volumes index (slice, row, column); vlseg keeps (column, row, slice) like dcm2niix.
_SRC = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
MIN_COVERAGE = 0.10  # a resampled series must cover at least this share of the reference grid
NO_LIMIT = 2 ** 62  # grids planned before the caller's voxel limit is known (checked on reading)


def read_datasets(files: Sequence[Path], *, pixels: bool) -> list:
    """The pydicom datasets of ``files`` (headers only unless ``pixels``)."""
    from pydicom import dcmread

    out = []
    with warnings.catch_warnings():  # pydicom's warnings never add lines to a one-line error
        warnings.simplefilter("ignore")
        for f in files:
            try:
                out.append(dcmread(f, stop_before_pixels=not pixels))
            except Exception as e:  # noqa: BLE001
                raise InputError(f"could not be read as DICOM ({type(e).__name__}); the file is "
                                 "corrupt", str(f)) from None
    return out



# ----------------------------------------------------------------------------- geometry


def _diagnose(datasets, where: str) -> InputError:
    """Why a stack of single-frame images is not a regular volume, in one line."""
    iops = {tuple(round(float(v), 4) for v in ds.ImageOrientationPatient) for ds in datasets
            if "ImageOrientationPatient" in ds}
    if len(iops) > 1:
        return InputError(f"mixes {len(iops)} slice orientations (a localizer or reformat?); give a "
                          "series with one orientation", where)
    if not iops or any("ImagePositionPatient" not in ds for ds in datasets):
        return InputError("lacks ImageOrientationPatient/ImagePositionPatient; its geometry is "
                          "unknown", where)
    iop = np.array(next(iter(iops)), dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    pos = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])
    pos = pos[np.argsort(pos @ normal)]
    d = pos @ normal
    if len(np.unique(np.round(d, 3))) < len(d):
        return InputError(f"holds {len(d)} images at {len(np.unique(np.round(d, 3)))} slice positions "
                          "(several echoes or repeats in one series); export one image per "
                          "position", where)
    steps = np.diff(pos, axis=0)
    along = np.diff(d)
    cosines = along / np.maximum(np.linalg.norm(steps, axis=1), 1e-9)
    if len(steps) and float(np.min(cosines)) < 0.9995:
        angle = float(np.degrees(np.arccos(np.clip(np.min(cosines), -1, 1))))
        return InputError(f"has gantry tilt (slices sheared by {angle:.1f} degrees); resample it to "
                          "an orthogonal grid first (e.g. dcm2niix corrects tilt)", where)
    if len(along):
        return InputError(f"has irregular slice spacing ({along.min():.3g} to {along.max():.3g} mm; "
                          "missing slices?); give a complete series", where)
    return InputError("is not a regularly spaced volume", where)


def _series_geometry(series: Series, where: str):
    """:func:`_geometry` of a series from its headers, cached on the (cached) Series."""
    if series.geometry is None:
        try:
            series.geometry = _geometry(series, read_datasets(series.files, pixels=False), where)
        except InputError as e:
            if not series.unread:
                raise
            # A file beside the series that could not be read is the likely missing slice.
            f, why = series.unread[0]
            raise InputError(f"{why}: series {series.label()} is incomplete without it "
                             f"({e.problem.split(';')[0].split(' (')[0]}); replace the file",
                             str(f)) from None
    return series.geometry


def native_grid(series: Series, path: Path, max_voxels: int) -> Grid:
    """The series' own grid (vlseg order, RAS) from its headers; its size checked."""
    geo = _series_geometry(series, str(path))
    shape = tuple(int(s) for s in geo.spatial_shape)
    check_size(shape, path, max_voxels)
    return grid_from(geo.affine, shape)


def grid_from(hd_affine: np.ndarray, shape_src: tuple[int, int, int]) -> Grid:
    """highdicom (slice, row, col) LPS affine -> vlseg Grid on (col, row, slice) in RAS."""
    affine = _LPS_TO_RAS @ np.asarray(hd_affine, dtype=np.float64) @ _SRC
    return Grid(shape=(shape_src[2], shape_src[1], shape_src[0]), affine=affine)


def hd_affine(grid: Grid) -> np.ndarray:
    """The inverse of :func:`grid_from`: a vlseg Grid -> highdicom's LPS affine of (slice, row, col)."""
    return _LPS_TO_RAS @ grid.affine @ _SRC


def check_size(shape, path: Path, max_voxels: int) -> None:
    n = int(np.prod(shape))
    if n > max_voxels:
        raise InputError(f"holds {fmt_shape(shape)} = {n:,} voxels, above the limit of {max_voxels:,}; "
                         "crop or downsample the series", str(path))
    if min(shape) < 2:
        raise InputError(f"holds a single slice (shape {fmt_shape(shape)}); a 3D series is needed",
                         str(path))


def _geometry(series: Series, datasets, where: str):
    """highdicom VolumeGeometry of a series (headers only)."""
    import highdicom as hd

    try:
        if series.multiframe:
            if len(datasets) != 1:
                raise InputError(f"holds {len(datasets)} multi-frame files; give one enhanced MR "
                                 "file per series", where)
            geo = hd.Image.from_dataset(datasets[0], copy=False).get_volume_geometry()
            if geo is None:
                raise InputError("is a multi-frame image whose frames do not form a regular 3D "
                                 "volume (tilt, gaps or several echoes)", where)
            return geo
        spacing, positions = hd.spatial.get_series_volume_positions(datasets)
        if spacing is None:
            raise _diagnose(datasets, where)
        first = datasets[positions.index(0)]
        return hd.VolumeGeometry.from_attributes(
            image_position=first.ImagePositionPatient, image_orientation=first.ImageOrientationPatient,
            rows=int(first.Rows), columns=int(first.Columns), pixel_spacing=first.PixelSpacing,
            spacing_between_slices=spacing, number_of_frames=len(datasets),
            coordinate_system="PATIENT")
    except InputError:
        raise
    except (ValueError, AttributeError, KeyError, TypeError) as e:
        if not series.multiframe:
            raise _diagnose(datasets, where) from None
        raise InputError(f"has geometry highdicom cannot use ({str(e).splitlines()[0][:120]})",
                         where) from None


# ----------------------------------------------------------------------------- resampling


def _sitk_image(grid: Grid, data: np.ndarray | None = None):
    """A SimpleITK image on ``grid`` in LPS (exact spacing, direction and origin)."""
    import SimpleITK as sitk

    lps = _LPS_TO_RAS @ grid.affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    if data is None:
        img = sitk.Image([int(n) for n in grid.shape], sitk.sitkFloat32)
    else:  # numpy (z, y, x) is SimpleITK's (x, y, z)
        img = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0), dtype=np.float32))
    img.SetSpacing([float(v) for v in spacing])
    img.SetOrigin([float(v) for v in lps[:3, 3]])
    img.SetDirection([float(v) for v in (lps[:3, :3] / spacing).ravel()])
    return img


def resample_onto(data: np.ndarray, grid: Grid, target: Grid, path: Path, target_label: str = ""
                  ) -> np.ndarray:
    """``data`` (X, Y, Z on ``grid``) resampled onto ``target`` with SimpleITK linear
    interpolation in patient space; voxels outside the series are 0. Refuses a series that
    covers less than MIN_COVERAGE of the target."""
    import SimpleITK as sitk

    out = sitk.Resample(_sitk_image(grid, data), _sitk_image(target), sitk.Transform(),
                        sitk.sitkLinear, float("nan"), sitk.sitkFloat32)
    arr = np.ascontiguousarray(sitk.GetArrayFromImage(out).transpose(2, 1, 0), dtype=np.float32)
    inside = np.isfinite(arr)
    covered = float(inside.mean())
    if covered < MIN_COVERAGE:
        raise InputError(f"covers only {100 * covered:.0f}% of the reference series "
                         f"{target_label or ''} grid it is resampled onto; give series of the same "
                         "anatomy", str(path))
    arr[~inside] = 0.0
    return arr


__all__ = ["read_datasets", "native_grid", "grid_from", "hd_affine", "check_size", "resample_onto",
           "MIN_COVERAGE", "NO_LIMIT"]
