"""The DICOM reader: MR series (single-frame or enhanced multi-frame) from a study folder.

A DICOM study is a folder of files, flat or nested, as a scanner or PACS exports it. The reader
claims such a folder; :meth:`DicomReader.study_files` splits it into series (by
SeriesInstanceUID) and maps them to sequences (``vlseg.io.dicom_study``), and ``load_case``
then reads each series like a file. A *series path* is the folder that holds only that series,
or else its first file (the series is then gathered from that file's folder).

Geometry comes from highdicom (``get_volume_from_series`` / ``Image.get_volume``): slices
sorted along the normal of ImageOrientationPatient, spacing from ImagePositionPatient (never
SliceThickness), the LPS affine turned into RAS for ``vlseg.io``. A gantry-tilted (sheared)
stack, irregular slice spacing, several images per position (multi-echo) and mixed
orientations are refused with one line saying what to do. Voxels keep the series' own order
(columns, rows, slices), so masks map back voxel-exactly and a DICOM-SEG can reference them.

Nothing from the patient/study modules ever appears in a message.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from vlseg.errors import InputError
from vlseg.io.dicom_study import (
    Series,
    Study,
    cached_study,
    holds_dicom,
    is_dicom_file,
    map_sequences,
)
from vlseg.io.volume import DEFAULT_MAX_VOXELS, Grid, Header, Volume, fmt_shape

DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".ima")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# highdicom volumes index (slice, row, column); vlseg keeps (column, row, slice) like dcm2niix.
_SRC = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)


# ----------------------------------------------------------------------------- series lookup


def _mr_series(study: Study) -> list[Series]:
    mr = [s for s in study.series if s.is_mr_image]
    usable = [s for s in mr if not s.excluded]
    return usable or mr


def series_of(path: Path) -> tuple[Series, Study]:
    """The one MR series a series path names (a folder holding one series, or one of its files)."""
    if path.is_dir():
        study = cached_study(path)
        mr = _mr_series(study)
        if len(mr) == 1:
            return mr[0], study
        if not mr:
            raise InputError("holds no MR image series", str(path))
        raise InputError(f"holds {len(mr)} MR series ({study.listing()}); give it as a case folder "
                         "(--case) so each series is mapped to a sequence", str(path))
    if not is_dicom_file(path):
        raise InputError("is not a DICOM file (no DICM marker after the 128-byte preamble)", str(path))
    from pydicom import dcmread

    try:
        uid = str(dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
                  .get("SeriesInstanceUID", ""))
    except Exception as e:  # noqa: BLE001 - pydicom raises many kinds on a corrupt file
        raise InputError(f"could not be read as DICOM ({type(e).__name__}); the file is corrupt",
                         str(path)) from None
    study = cached_study(path.parent)
    hit = next((s for s in study.series if s.uid == uid), None)
    if hit is None or not hit.is_mr_image:
        raise InputError("is not part of an MR image series", str(path))
    return hit, study


def _datasets(series: Series, *, pixels: bool):
    from pydicom import dcmread

    out = []
    for f in series.files:
        try:
            out.append(dcmread(f, stop_before_pixels=not pixels))
        except Exception as e:  # noqa: BLE001
            raise InputError(f"could not be read as DICOM ({type(e).__name__}); the file is corrupt",
                             str(f)) from None
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


def _grid_from(hd_affine: np.ndarray, shape_src: tuple[int, int, int]) -> Grid:
    """highdicom (slice, row, col) LPS affine -> vlseg Grid on (col, row, slice) in RAS."""
    affine = _LPS_TO_RAS @ np.asarray(hd_affine, dtype=np.float64) @ _SRC
    return Grid(shape=(shape_src[2], shape_src[1], shape_src[0]), affine=affine)


def hd_affine(grid: Grid) -> np.ndarray:
    """The inverse of :func:`_grid_from`: a vlseg Grid -> highdicom's LPS affine of (slice, row, col)."""
    return _LPS_TO_RAS @ grid.affine @ _SRC


def _check_size(shape, path: Path, max_voxels: int) -> None:
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


# ----------------------------------------------------------------------------- the reader


class DicomReader:
    """DICOM MR series and studies: registered in ``vlseg.io.readers.READERS``."""

    name = "DICOM"
    suffixes = DICOM_SUFFIXES
    hint = "a DICOM study folder (MR series, flat or nested)"

    def can_read(self, path: Path) -> bool:
        """A folder with DICOM files under it, or a DICOM file (by its DICM marker)."""
        try:
            if path.is_dir():  # a NIfTI case folder with a stray DICOM file stays a NIfTI case
                return not any(p.name.lower().endswith((".nii", ".nii.gz")) for p in path.iterdir()
                               ) and holds_dicom(path)
            if path.name.lower().endswith(DICOM_SUFFIXES):
                return True
            return path.is_file() and is_dicom_file(path)
        except OSError:
            return False

    def read_header(self, path: Path, *, max_voxels: int = DEFAULT_MAX_VOXELS) -> Header:
        series, _ = series_of(path)
        geo = _geometry(series, _datasets(series, pixels=False), str(path))
        shape = tuple(int(s) for s in geo.spatial_shape)
        _check_size(shape, path, max_voxels)
        return Header(grid=_grid_from(geo.affine, shape), channels=1, sequence=series.sequence)

    def read(self, path: Path, *, max_voxels: int = DEFAULT_MAX_VOXELS,
             channels: int | None = None) -> Volume:
        import highdicom as hd

        if channels is not None:
            raise InputError(f"is a DICOM series (one 3D volume); expected a 4D image with {channels} "
                             "channels", str(path))
        series, _ = series_of(path)
        header_sets = _datasets(series, pixels=False)
        geo = _geometry(series, header_sets, str(path))  # refuses bad geometry before pixels
        _check_size(tuple(int(s) for s in geo.spatial_shape), path, max_voxels)
        datasets = _datasets(series, pixels=True)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if series.multiframe:
                    vol = hd.Image.from_dataset(datasets[0], copy=False).get_volume(dtype=np.float32)
                else:
                    vol = hd.get_volume_from_series(datasets, dtype=np.float32)
        except MemoryError:
            raise InputError("is too large to load", str(path)) from None
        except Exception as e:  # noqa: BLE001 - pixel decoding: compressed syntaxes, corrupt data
            msg = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            raise InputError(f"pixel data could not be decoded ({msg}); export it uncompressed "
                             "or install the decoder pydicom names", str(path)) from None
        array = np.asarray(vol.array, dtype=np.float32)
        if array.ndim != 3:
            raise InputError(f"holds {array.ndim}D pixel data (colour or several channels); an MR "
                             "magnitude series is needed", str(path))
        if not np.isfinite(array).all():
            raise InputError("has non-finite voxel values", str(path))
        grid = _grid_from(vol.affine, array.shape)
        data = np.ascontiguousarray(array.transpose(2, 1, 0))  # (col, row, slice) = (X, Y, Z)
        return Volume(data=data, grid=grid, path=path)

    # -- the study seam: a folder that holds several series is split into sequences
    def study_files(self, path: Path, overrides: dict[str, str] | None = None
                    ) -> tuple[dict[str, Path], str]:
        """``{sequence: series path}`` and a case id (the folder name) for a study folder."""
        study = cached_study(path)
        chosen = map_sequences(study, overrides)
        return {seq: series_path(s, study) for seq, s in chosen.items()}, path.name


def series_path(series: Series, study: Study) -> Path:
    """A path that names one series: its own folder when no other series shares it, else its
    first file (the series is then gathered from that file's folder)."""
    parents = {f.parent for f in series.files}
    if len(parents) != 1:
        raise InputError(f"series {series.label()} is split over {len(parents)} folders; copy it "
                         "into one folder", str(study.folder))
    parent = parents.pop()
    others = [s for s in study.series if s is not series and any(f.parent == parent for f in s.files)]
    return parent if not others else series.files[0]


def resolve_study(folder: str | os.PathLike, overrides: dict[str, str] | None = None) -> dict[str, Path]:
    """``{sequence: series path}`` for a DICOM study folder, with ``--series`` overrides; pass
    it to ``load_case`` / ``Segmenter.set_case``."""
    folder = Path(folder)
    if not folder.is_dir() or not holds_dicom(folder):
        raise InputError("is not a folder of DICOM files; --series goes with a DICOM study given "
                         "as --case", str(folder))
    return DicomReader().study_files(folder, overrides)[0]


def is_dicom_source(path: str | os.PathLike) -> bool:
    """A case source (series path) that the DICOM reader reads."""
    p = Path(path)
    return (p.is_dir() and holds_dicom(p)) or (p.is_file() and is_dicom_file(p))


__all__ = ["DicomReader", "DICOM_SUFFIXES", "series_of", "series_path", "resolve_study",
           "is_dicom_source", "hd_affine"]
