"""The DICOM reader: MR series (single-frame or enhanced multi-frame) from a study folder.

A DICOM study is a folder of files, flat or nested, as a scanner or PACS exports it. The reader
claims such a folder; :meth:`DicomReader.study` splits it into series (by SeriesInstanceUID) and
maps them to sequences (``vlseg.io.dicom_study``), and ``load_case`` then reads each series like
a file. A *series path* is the folder that holds only that series, or else its first file (the
series is then gathered from that file's folder). Geometry (highdicom; tilt, gaps, multi-echo
refused) and resampling are in ``vlseg.io.dicom_geometry``.

Series on different grids (a 3D 1 mm T1c beside 2D 5 mm FLAIR/T2 on other fields of view, as
scanners export them) are put on one *reference series* grid: t1c, else t2f, t1n, t2w (or the
caller's ``reference``). :meth:`DicomReader.study` makes that plan when it maps the study
(every series must share the reference's FrameOfReferenceUID; a missing one counts as shared,
since a study holds one patient), and :meth:`DicomReader.read` then returns each other series
resampled onto the reference grid with SimpleITK linear interpolation in patient (LPS) space,
from the exact DICOM geometry.

The reader owns what it mapped: each series path's series, study and plan (at most ``series``
paths, least recently used out; the latest mapping of a study wins) beside the studies it
scanned (at most ``studies``). So ``load_case(folder)``, ``load_case({seq: series path})``
(uploads, ``resolve_study``) and ``read_header`` agree while a mapping is recent, and nothing
stays mapped for the life of the process. :meth:`DicomReader.study_of` tells which series a
case was read from, which was the reference and which were resampled (``Case.study``).

Nothing from the patient/study modules ever appears in a message.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from vlseg.vocab import SEQUENCES, canonical_sequence
from vlseg.errors import InputError
from vlseg.io.dicom_geometry import (
    NO_LIMIT,
    check_size,
    grid_from,
    hd_affine,
    native_grid,
    read_datasets,
    resample_onto,
)
from vlseg.io.dicom_study import (
    DICOM_NAME_SUFFIXES,
    NIFTI_NAME_SUFFIXES,
    Series,
    Study,
    StudyScans,
    first_study_uid,
    holds_dicom,
    holds_other_scans,
    is_dicom_file,
    map_sequences,
)
from vlseg.io.study import BoundedCache, StudySource
from vlseg.io.volume import DEFAULT_MAX_VOXELS, Grid, Header, Volume, ras_grid

DICOM_SUFFIXES: tuple[str, ...] = DICOM_NAME_SUFFIXES
# The series whose grid the others are resampled onto, in order of preference.
REFERENCE_ORDER: tuple[str, ...] = ("t1c", "t2f", "t1n", "t2w")


@dataclass(frozen=True)
class _Onto:
    """A series' place in its study's plan: resampled onto the reference series' grid."""

    sequence: str  # the reference series' sequence
    path: Path  # the reference series path
    files: tuple[Path, ...]  # its files
    grid: Grid  # its grid (vlseg order, RAS affine)
    label: str  # its label, for messages


@dataclass(frozen=True)
class _Mapped:
    """A series path as the reader last mapped it: its series, its study, where it is read onto."""

    series: Series
    study: Study
    onto: _Onto | None


def _key(path: Path) -> str:
    return str(Path(path).resolve())


def _mr_series(study: Study) -> list[Series]:
    mr = [s for s in study.series if s.is_mr_image]
    usable = [s for s in mr if not s.excluded]
    return usable or mr


# ----------------------------------------------------------------------------- the reader


class DicomReader:
    """DICOM MR series and studies: registered in ``vlseg.io.readers.READERS``.

    ``studies``: scanned studies kept (their headers are read once per load, not once per
    series); ``series``: mapped series paths kept, each with its grid plan."""

    name = "DICOM"
    suffixes = DICOM_SUFFIXES
    hint = "a DICOM study folder (MR series, flat or nested)"

    def __init__(self, *, studies: int = 8, series: int = 64) -> None:
        self._scans = StudyScans(studies)
        self._mapped: BoundedCache[str, _Mapped] = BoundedCache(series)

    def can_read(self, path: Path) -> bool:
        """A folder with DICOM files under it, or a DICOM file (by its DICM marker)."""
        try:
            if path.is_dir():  # a NIfTI case folder with a stray DICOM file stays a NIfTI case
                return not any(p.name.lower().endswith(NIFTI_NAME_SUFFIXES) for p in path.iterdir()
                               ) and holds_dicom(path)
            if path.name.lower().endswith(DICOM_SUFFIXES):
                return True
            return path.is_file() and is_dicom_file(path)
        except OSError:
            return False

    def read_header(self, path: Path, *, max_voxels: int = DEFAULT_MAX_VOXELS) -> Header:
        series, _ = self.series_of(path)
        grid = native_grid(series, path, max_voxels)
        onto = self._onto(path)
        if onto is not None:  # read onto its study's reference grid
            check_size(onto.grid.shape, path, max_voxels)
            grid = onto.grid
        return Header(grid=grid, channels=1, sequence=series.sequence)

    def read(self, path: Path, *, max_voxels: int = DEFAULT_MAX_VOXELS,
             channels: int | None = None) -> Volume:
        import highdicom as hd

        if channels is not None:
            raise InputError(f"is a DICOM series (one 3D volume); expected a 4D image with {channels} "
                             "channels", str(path))
        series, _ = self.series_of(path)
        native_grid(series, path, max_voxels)  # refuses bad geometry before pixels
        onto = self._onto(path)
        if onto is not None:
            check_size(onto.grid.shape, path, max_voxels)
        datasets = read_datasets(series.files, pixels=True)
        if any(not str(ds.get("FrameOfReferenceUID", "") or "").strip() for ds in datasets):
            # highdicom places slices only in a frame of reference. The position and orientation
            # tags give the geometry in full, so the in-memory copies get a stand-in UID; the
            # files are untouched and no DICOM-SEG is written for them (write_seg says why).
            stand_in = hd.UID()
            for ds in datasets:
                ds.FrameOfReferenceUID = stand_in
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
            raise _pixel_error(e, datasets, path) from None
        array = np.asarray(vol.array, dtype=np.float32)
        if array.ndim != 3:
            raise InputError(f"holds {array.ndim}D pixel data (colour or several channels); an MR "
                             "magnitude series is needed", str(path))
        if not np.isfinite(array).all():
            raise InputError("has non-finite voxel values", str(path))
        grid = grid_from(vol.affine, array.shape)
        data = np.ascontiguousarray(array.transpose(2, 1, 0))  # (col, row, slice) = (X, Y, Z)
        if onto is not None:
            data, grid = resample_onto(data, grid, onto.grid, path, onto.label), onto.grid
        return Volume(data=data, grid=grid, path=path)

    # -- the study seam: a folder that holds several series is split into sequences
    def study(self, path: Path, overrides: Mapping[str, str] | None = None, *,
              reference: str | None = None) -> StudySource | None:
        """The study a folder holds: ``{sequence: series path}`` (``overrides``: ``series=``
        choices) and its grid plan; None for a path that is not a folder.

        Series not on the reference series' grid (``reference``, else the first of
        :data:`REFERENCE_ORDER`) are read onto it from then on."""
        if not path.is_dir():
            return None
        study = self._scans.get(path)
        chosen = map_sequences(study, overrides)
        paths = {seq: series_path(s, study) for seq, s in chosen.items()}
        plan = _plan_grids(study, chosen, paths, reference)
        mapped = {seq: _Mapped(s, study, plan[seq]) for seq, s in chosen.items()}
        for seq, m in mapped.items():
            self._mapped.put(_key(paths[seq]), m)
        return _source({seq: (paths[seq], m) for seq, m in mapped.items()})

    def study_of(self, images: Mapping[str, Path]) -> StudySource | None:
        """The series a case's ``{sequence: series path}`` were read from: those this reader
        mapped from a study with their plan, others as the series they are (on the case grid)."""
        items: dict[str, tuple[Path, _Mapped]] = {}
        for seq, p in images.items():
            p = Path(p)
            hit = self._mapped.get(_key(p)) if p.exists() else None
            if hit is None:
                series, study = self.series_of(p)
                hit = _Mapped(series, study, None)
            items[seq] = (p, hit)
        return _source(items) if items else None

    def is_one_case(self, path: Path) -> bool:
        """Whether a folder this reader claims is *one* study (a case), not a folder of cases,
        decided from every entry of the folder, never from some of them: DICOM files directly
        in it, or sub-folders whose DICOM files all belong to one study (one folder per series),
        with no sub-folder of another case beside (a NIfTI case folder, another study, a folder
        that cannot be listed: then each sub-folder is a case). Reads one header per sub-folder."""
        try:
            if not path.is_dir():
                return False
            entries = sorted((p for p in path.iterdir() if not p.name.startswith(".")),
                             key=lambda p: p.name)
            direct = any(p.is_file() and not p.is_symlink() and is_dicom_file(p) for p in entries)
            studies: set[str] = set()
            n_dicom = 0
            for p in entries:
                if not p.is_dir() or p.is_symlink():
                    continue
                uid = first_study_uid(p)
                if uid is None:
                    if holds_other_scans(p):  # a NIfTI case (or an unlistable folder) beside
                        return False
                    continue  # notes, a viewer: neither a series nor a case
                studies.add(uid)
                n_dicom += 1
            if direct:
                return len(studies) <= 1
            return n_dicom > 1 and len(studies) == 1
        except OSError:
            return False

    def series_of(self, path: Path) -> tuple[Series, Study]:
        """The one MR series a series path names (a folder holding one series, or one of its
        files). A path :meth:`study` mapped is answered from that mapping, so the study's
        headers are not read again for each series."""
        known = self._mapped.get(_key(path)) if path.exists() else None
        if known is not None:
            return known.series, known.study
        if path.is_dir():
            study = self._scans.get(path)
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
        study = self._scans.get(path.parent)
        hit = next((s for s in study.series if s.uid == uid), None)
        if hit is None or not hit.is_mr_image:
            raise InputError("is not part of an MR image series", str(path))
        return hit, study

    def _onto(self, path: Path) -> _Onto | None:
        hit = self._mapped.get(_key(path))
        return hit.onto if hit is not None else None


def _pixel_error(error: Exception, datasets: list, path: Path) -> InputError:
    """One line for pixel data that could not be decoded, naming the first file whose own pixel
    data fails (a truncated slice) when there is one, else the series."""
    for ds in datasets:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds.pixel_array
        except Exception as e:  # noqa: BLE001 - the file whose pixels fail
            msg = str(e).splitlines()[0].split(" - ")[0][:120] if str(e) else type(e).__name__
            return InputError(f"pixel data could not be decoded ({msg}); replace the file if it "
                              "is truncated, or export the series uncompressed",
                              str(getattr(ds, "filename", "") or path))
    msg = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
    return InputError(f"pixel data could not be decoded ({msg}); export it uncompressed or "
                      "install the decoder pydicom names", str(path))


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


# ----------------------------------------------------------------------------- one grid per study


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
                reference: str | None) -> dict[str, _Onto | None]:
    """Check the chosen series share a frame of reference; say which are resampled, onto what."""
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
    ref_grid = native_grid(ref, paths[ref_seq], NO_LIMIT)
    target = ras_grid(ref_grid)
    onto = _Onto(ref_seq, paths[ref_seq], tuple(ref.files), ref_grid, ref.label())
    plan: dict[str, _Onto | None] = {}
    for seq, s in chosen.items():
        native = ref_grid if seq == ref_seq else native_grid(s, paths[seq], NO_LIMIT)
        plan[seq] = None if ras_grid(native).mismatch(target) is None else onto
    return plan


def _source(items: Mapping[str, tuple[Path, _Mapped]]) -> StudySource:
    """A case's StudySource from its series: the reference is the first of REFERENCE_ORDER read
    natively (the case's grid is its grid), else the plan's reference series."""
    native = [s for s in REFERENCE_ORDER if s in items and items[s][1].onto is None]
    if native:
        path, m = items[native[0]]
        ref, ref_path, ref_files = native[0], path, tuple(m.series.files)
    else:
        onto = next(m.onto for _, m in items.values() if m.onto is not None)
        ref, ref_path, ref_files = onto.sequence, onto.path, onto.files
    folders = {m.study.folder for _, m in items.values()}
    notes = {m.study.skipped_note() for _, m in items.values()}
    return StudySource(
        folder=folders.pop() if len(folders) == 1 else None,
        paths={seq: p for seq, (p, _) in items.items()},
        labels={seq: m.series.label() for seq, (_, m) in items.items()},
        reference=ref, reference_path=ref_path, reference_files=ref_files,
        resampled=tuple(s for s in SEQUENCES if s in items and items[s][1].onto is not None),
        warnings=tuple(sorted(n for n in notes if n)))


def is_dicom_source(path: str | os.PathLike) -> bool:
    """A case source (series path) that the DICOM reader reads."""
    p = Path(path)
    return (p.is_dir() and holds_dicom(p)) or (p.is_file() and is_dicom_file(p))


__all__ = ["DicomReader", "DICOM_SUFFIXES", "REFERENCE_ORDER", "series_path", "is_dicom_source",
           "hd_affine", "pick_reference", "resample_onto", "first_study_uid"]
