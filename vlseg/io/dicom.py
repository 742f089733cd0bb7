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

Series on different grids (a 3D 1 mm T1c beside 2D 5 mm FLAIR/T2 on other fields of view, as
scanners export them) are put on one *reference series* grid: t1c, else t2f, t1n, t2w (or the
caller's ``reference``). :meth:`DicomReader.study_files` makes that plan when it maps the study
(every series must share the reference's FrameOfReferenceUID; a missing one counts as shared,
since a study holds one patient), and :meth:`DicomReader.read` then returns each other series
resampled onto the reference grid with SimpleITK linear interpolation in patient (LPS) space,
from the exact DICOM geometry. The plan is kept in this process for the series paths
``study_files`` returned (the latest mapping of a study wins), so ``load_case(folder)``,
``load_case({seq: series path})`` (uploads, ``series=``) and ``read_header`` agree. Masks and
the DICOM-SEG are on that grid and reference that series; :func:`grid_plan` tells which series
was the reference and which were resampled.

Nothing from the patient/study modules ever appears in a message.
"""
from __future__ import annotations

import os
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlseg.vocab import canonical_sequence
from vlseg.errors import InputError
from vlseg.io.dicom_study import (
    Series,
    Study,
    cached_study,
    first_study_uid,
    holds_dicom,
    is_dicom_file,
    map_sequences,
)
from vlseg.io.volume import DEFAULT_MAX_VOXELS, Grid, Header, Volume, fmt_shape, ras_grid

DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".ima")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# highdicom volumes index (slice, row, column); vlseg keeps (column, row, slice) like dcm2niix.
_SRC = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
# The series whose grid the others are resampled onto, in order of preference.
REFERENCE_ORDER: tuple[str, ...] = ("t1c", "t2f", "t1n", "t2w")
MIN_COVERAGE = 0.10  # a resampled series must cover at least this share of the reference grid
_NO_LIMIT = 2 ** 62  # grids planned before the caller's voxel limit is known (checked on reading)


# ----------------------------------------------------------------------------- series lookup


def _mr_series(study: Study) -> list[Series]:
    mr = [s for s in study.series if s.is_mr_image]
    usable = [s for s in mr if not s.excluded]
    return usable or mr


def series_of(path: Path) -> tuple[Series, Study]:
    """The one MR series a series path names (a folder holding one series, or one of its files).

    A path :meth:`DicomReader.study_files` returned is answered from what it mapped, so the
    study's headers are not read again for each series."""
    known = _mapped(path)
    if known is not None and path.exists():
        return known
    if path.is_dir():
        study = cached_study(path)
        mr = _mr_series(study)
        if len(mr) == 1:
            return mr[0], study
        if not mr:
            raise InputError("holds no MR image series", str(path))
        raise InputError(f"holds {len(mr)} MR series ({study.listing()}); give the folder as "
                         "the case, so each series is mapped to a sequence", str(path))
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


def _series_geometry(series: Series, where: str):
    """:func:`_geometry` of a series from its headers, cached on the (cached) Series."""
    if series.geometry is None:
        series.geometry = _geometry(series, _datasets(series, pixels=False), where)
    return series.geometry


def _native_grid(series: Series, path: Path, max_voxels: int) -> Grid:
    geo = _series_geometry(series, str(path))
    shape = tuple(int(s) for s in geo.spatial_shape)
    _check_size(shape, path, max_voxels)
    return _grid_from(geo.affine, shape)


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
        grid = _native_grid(series, path, max_voxels)
        onto = _onto(path)
        if onto is not None:  # read onto its study's reference grid
            _check_size(onto.grid.shape, path, max_voxels)
            grid = onto.grid
        return Header(grid=grid, channels=1, sequence=series.sequence)

    def read(self, path: Path, *, max_voxels: int = DEFAULT_MAX_VOXELS,
             channels: int | None = None) -> Volume:
        import highdicom as hd

        if channels is not None:
            raise InputError(f"is a DICOM series (one 3D volume); expected a 4D image with {channels} "
                             "channels", str(path))
        series, _ = series_of(path)
        _native_grid(series, path, max_voxels)  # refuses bad geometry before pixels
        onto = _onto(path)
        if onto is not None:
            _check_size(onto.grid.shape, path, max_voxels)
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
        if onto is not None:
            data, grid = resample_onto(data, grid, onto.grid, path, onto.label), onto.grid
        return Volume(data=data, grid=grid, path=path)

    # -- the study seam: a folder that holds several series is split into sequences
    def study_files(self, path: Path, overrides: dict[str, str] | None = None, *,
                    reference: str | None = None) -> tuple[dict[str, Path], str]:
        """``{sequence: series path}`` and a case id (the folder name) for a study folder.

        Also plans the study's grid: series not on the reference series' grid (``reference``,
        else the first of :data:`REFERENCE_ORDER`) are read onto it from then on."""
        study = cached_study(path)
        chosen = map_sequences(study, overrides)
        paths = {seq: series_path(s, study) for seq, s in chosen.items()}
        _plan_grids(study, chosen, paths, reference)
        _remember(study, chosen, paths)
        return paths, path.name

    def is_one_case(self, path: Path) -> bool:
        """Whether a folder this reader claims is *one* study (a case), not a folder of studies:
        DICOM files directly in it (a flat export), or several sub-folders whose DICOM files
        all belong to one study (one folder per series). Reads one header per sub-folder."""
        try:
            if not path.is_dir():
                return False
            entries = sorted((p for p in path.iterdir() if not p.name.startswith(".")),
                             key=lambda p: p.name)
            if any(p.is_file() and not p.is_symlink() and is_dicom_file(p) for p in entries):
                return True
            studies = [first_study_uid(p) for p in entries if p.is_dir() and not p.is_symlink()]
            studies = [u for u in studies if u is not None]
            return len(studies) > 1 and len(set(studies)) == 1
        except OSError:
            return False


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


def resolve_study(folder: str | os.PathLike, overrides: dict[str, str] | None = None, *,
                  reference: str | None = None) -> dict[str, Path]:
    """``{sequence: series path}`` for a DICOM study folder, with ``series=`` overrides and the
    reference series (``reference``: a sequence); pass it to ``load_case`` / ``Segmenter.set_case``."""
    folder = Path(folder)
    if not folder.is_dir() or not holds_dicom(folder):
        raise InputError("is not a folder of DICOM files; series= overrides go with a DICOM study "
                         "folder", str(folder))
    return DicomReader().study_files(folder, overrides, reference=reference)[0]


# ----------------------------------------------------------------------------- one grid per study


@dataclass(frozen=True)
class _Onto:
    """A series' place in its study's plan: resampled onto the reference series' grid."""

    sequence: str  # the reference series' sequence
    path: Path  # the reference series path
    grid: Grid  # its grid (vlseg order, RAS affine)
    label: str  # its label, for messages


_PLAN: dict[str, _Onto] = {}  # resolved series path -> where it is read onto
_PLAN_LOCK = threading.Lock()
# resolved series path -> (its Series, its Study), as study_files last mapped them (a few
# studies' worth, newest last; an evicted path falls back to the cached study scan).
_MAPPED: "OrderedDict[str, tuple[Series, Study]]" = OrderedDict()
_MAPPED_SIZE = 64


def _key(path: Path) -> str:
    return str(Path(path).resolve())


def _onto(path: Path) -> _Onto | None:
    with _PLAN_LOCK:
        return _PLAN.get(_key(path))


def _mapped(path: Path) -> tuple[Series, Study] | None:
    key = _key(path)
    with _PLAN_LOCK:
        hit = _MAPPED.get(key)
        if hit is not None:
            _MAPPED.move_to_end(key)
        return hit


def _remember(study: Study, chosen: dict[str, Series], paths: dict[str, Path]) -> None:
    """Record each mapped series path's Series and Study beside the grid plan."""
    with _PLAN_LOCK:
        for seq, s in chosen.items():
            key = _key(paths[seq])
            _MAPPED[key] = (s, study)
            _MAPPED.move_to_end(key)
        while len(_MAPPED) > _MAPPED_SIZE:
            _MAPPED.popitem(last=False)


def pick_reference(sequences, reference: str | None = None) -> str:
    """The reference sequence among ``sequences``: ``reference`` if given, else REFERENCE_ORDER."""
    if reference:
        try:
            seq = canonical_sequence(str(reference).strip())
        except ValueError as e:
            raise InputError(f"reference={reference!r}: {e}") from None
        if seq not in sequences:
            raise InputError(f"reference={seq!r}: the study has no {seq} series (it has "
                             f"{', '.join(sequences)})")
        return seq
    return next(s for s in REFERENCE_ORDER if s in sequences)


def _plan_grids(study: Study, chosen: dict[str, Series], paths: dict[str, Path],
                reference: str | None) -> None:
    """Check the chosen series share a frame of reference; record which are resampled."""
    ref_seq = pick_reference(tuple(chosen), reference)
    ref = chosen[ref_seq]
    other = [f"{s.label()} ({seq})" for seq, s in chosen.items()
             if s.frame_of_reference and ref.frame_of_reference
             and s.frame_of_reference != ref.frame_of_reference]
    if other:
        raise InputError(f"series {', '.join(other)} {'is' if len(other) == 1 else 'are'} in another "
                         f"frame of reference than the reference series {ref.label()} ({ref_seq}), "
                         "so not registered to it; register them first or choose the series with "
                         "series=", str(study.folder))
    ref_grid = _native_grid(ref, paths[ref_seq], _NO_LIMIT)
    target = ras_grid(ref_grid)
    plan: dict[str, _Onto | None] = {}
    for seq, s in chosen.items():
        native = ref_grid if seq == ref_seq else _native_grid(s, paths[seq], _NO_LIMIT)
        plan[_key(paths[seq])] = (None if ras_grid(native).mismatch(target) is None else
                                  _Onto(ref_seq, paths[ref_seq], ref_grid, ref.label()))
    with _PLAN_LOCK:
        for key, onto in plan.items():
            if onto is None:
                _PLAN.pop(key, None)
            else:
                _PLAN[key] = onto


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


def grid_plan(case) -> tuple[str, Path, list[str]]:
    """A DICOM case's grid: (reference sequence, its series path, sequences resampled onto it).

    The reference is the first of REFERENCE_ORDER whose series is natively on the case's grid
    (the grid its masks and DICOM-SEG are on)."""
    target = Grid(shape=case.shape, affine=case.affine)
    sources = {k: Path(v) for k, v in case.sources.items() if k != "seg"}
    native = {}
    for seq, p in sources.items():
        series, _ = series_of(p)
        native[seq] = ras_grid(_native_grid(series, p, _NO_LIMIT)).mismatch(target) is None
    on_grid = [s for s in REFERENCE_ORDER if native.get(s)]
    resampled = [s for s in REFERENCE_ORDER if s in native and not native[s]]
    if on_grid:
        return on_grid[0], sources[on_grid[0]], [s for s in case.present if s in resampled]
    onto = next((o for o in map(_onto, sources.values()) if o is not None), None)
    if onto is None:
        raise InputError("no series of the case is on its grid; load the study again",
                         str(next(iter(sources.values()))))
    return onto.sequence, onto.path, [s for s in case.present if s in resampled]


def is_dicom_source(path: str | os.PathLike) -> bool:
    """A case source (series path) that the DICOM reader reads."""
    p = Path(path)
    return (p.is_dir() and holds_dicom(p)) or (p.is_file() and is_dicom_file(p))


__all__ = ["DicomReader", "DICOM_SUFFIXES", "REFERENCE_ORDER", "series_of", "series_path",
           "resolve_study", "is_dicom_source", "hd_affine", "grid_plan", "pick_reference",
           "resample_onto", "first_study_uid"]
