"""A loaded case (RAS+ float32 sequences, optional concept labels) and writing masks back.

Arrays are reoriented to the closest canonical RAS+ order by permuting/flipping axes only
(``nibabel.orientations``), never resampled, so ``Case.to_source`` maps a mask back onto the
input's own grid voxel-exactly.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

from vlseg import vocab
from vlseg.vocab import SEQUENCES
from vlseg.vocab.labels import concepts_to_labels, labels_to_concepts
from vlseg.errors import InputError
from vlseg.io.foreign import what_is
from vlseg.io.labels import check_label_map, named_like_convention
from vlseg.io.layout import MSD_CHANNELS, CaseFiles, find_case_files
from vlseg.io.nifti import check_output_path, write_float32, write_uint8
from vlseg.io.readers import read_volume, reader_for
from vlseg.io.study import StudySource
from vlseg.io.volume import DEFAULT_MAX_VOXELS, Grid, to_ras

READ_THREADS = 2  # sequence files read at once by load_case

_RAS = axcodes2ornt(("R", "A", "S"))


@dataclass
class Case:
    """One scan: 1-4 sequences in RAS+ voxel order, the source grid, and optional labels."""

    images: dict[str, np.ndarray]  # canonical sequence -> (X, Y, Z) float32, RAS+
    affine: np.ndarray  # (4, 4) affine of the RAS+ arrays
    source_grid: Grid  # the input file's own grid (masks are written back here)
    labels: dict[str, np.ndarray] | None  # concept -> (X, Y, Z) bool, RAS+ (all five)
    case_id: str
    label_convention: str | None = None  # convention the labels were read in
    layout: str = "files"  # how the case was found: brats2023 | brats2021 | folder | msd | files
    sources: dict[str, Path] = field(default_factory=dict)  # sequence / "seg" -> file read
    study: StudySource | None = None  # the study it was read from (DICOM: series, reference grid)
    warnings: tuple[str, ...] = ()  # what reading it found but let pass (``force=True``)

    def __post_init__(self) -> None:
        if not self.images:
            raise ValueError("a Case needs at least one sequence")
        unknown = set(self.images) - set(SEQUENCES)
        if unknown:
            raise ValueError(f"unknown sequence keys {sorted(unknown)}; use {SEQUENCES}")
        shapes = {a.shape for a in self.images.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 3:
            raise ValueError(f"sequences must share one 3D shape, got {sorted(shapes)}")
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError("affine must be 4x4")
        if tuple(sorted(self.source_grid.shape)) != tuple(sorted(self.shape)):
            raise ValueError(f"source grid {self.source_grid.shape} is not a reorientation of "
                             f"{self.shape}")

    @property
    def present(self) -> tuple[str, ...]:
        return tuple(s for s in SEQUENCES if s in self.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        return next(iter(self.images.values())).shape

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def _ornt(self) -> np.ndarray:
        return io_orientation(self.source_grid.affine)

    def to_source(self, arr_ras: np.ndarray) -> np.ndarray:
        """RAS+ array (X, Y, Z[, ...]) -> the same voxels in the source file's order."""
        arr_ras = np.asarray(arr_ras)
        if arr_ras.shape[:3] != self.shape:
            raise ValueError(f"array shape {arr_ras.shape} does not match the case {self.shape}")
        return np.ascontiguousarray(apply_orientation(arr_ras, ornt_transform(_RAS, self._ornt)))

    def from_source(self, arr: np.ndarray) -> np.ndarray:
        """Array in the source file's voxel order -> RAS+ order."""
        arr = np.asarray(arr)
        if arr.shape[:3] != self.source_grid.shape:
            raise ValueError(f"array shape {arr.shape} does not match the source grid "
                             f"{self.source_grid.shape}")
        return np.ascontiguousarray(apply_orientation(arr, self._ornt))


# ----------------------------------------------------------------------------- loading


def _check_image(data: np.ndarray, path: Path, what: str, *, force: bool = False) -> str | None:
    """Refuse what no MRI answer can come from: a constant image, and (unless ``force``) a
    foreign image (``vlseg.io.foreign``: label map, atlas, probability or statistical map).
    Returns the warning a forced foreign image carries, else None."""
    lo, hi = float(data.min()), float(data.max())
    if lo == hi:
        raise InputError(f"{what} is constant (every voxel = {lo:g}); it holds no image", str(path))
    found = what_is(data)
    if found is None:
        return None
    if force:
        return (f"{Path(path).name}: {what} {found.describe()}; it was read anyway (force=True), "
                "so treat the answer as unreliable.")
    hint = (" (give a label map as the label file, e.g. named *-seg.nii.gz)"
            if found.kind == "label map" else "")
    raise InputError(f"{what} {found.describe()}; give the MRI scan{hint}, or pass force=True "
                     "if it is one", str(path))


def _check_grid(ref: Grid, grid: Grid, path: Path, ref_path: Path, what: str) -> None:
    problem = ref.mismatch(grid)
    if problem is not None:
        raise InputError(f"{what} grid differs from {ref_path.name}: {problem}; resample it onto "
                         "the same grid", str(path))


def _study_of(images: Mapping[str, Path]) -> StudySource | None:
    """The study plain sequence files were read from, asked of the one reader that read them
    (None for plain files, or files of several formats)."""
    readers = {id(r): r for r in map(reader_for, images.values())}
    if len(readers) != 1 or None in readers.values():
        return None
    return next(iter(readers.values())).study_of(images)


def load_case(
    source: str | os.PathLike | Mapping[str, str | os.PathLike | None] | CaseFiles,
    *,
    label: str | os.PathLike | None = None,
    label_convention: str | None = None,
    max_voxels: int = DEFAULT_MAX_VOXELS,
    force: bool = False,
) -> Case:
    """Load and validate a case; raise :class:`InputError` on any bad input.

    ``source``: a case folder (BraTS 2023+, BraTS 2021, or any folder with named sequence files),
    an MSD Task01 4D image (its label is taken from a sibling ``labelsTr/`` when present), one
    named sequence file, a mapping ``{sequence (any alias) or "seg": path}``, or the
    :class:`CaseFiles` of a study a reader split (``Case.study`` is then its study).
    ``label`` overrides the layout's label file; ``label_convention`` overrides the layout's
    convention (BraTS 2023 -> brats2023, BraTS 2021 -> brats2021, MSD -> msd, else brats2023).
    ``force``: read images that look like a label map, atlas, probability or statistical map
    (``vlseg.io.foreign``) anyway; ``Case.warnings`` then says what each looked like.
    """
    if max_voxels < 1:
        raise ValueError("max_voxels must be positive")
    files = source if isinstance(source, CaseFiles) else find_case_files(source)
    label_path = Path(label) if label is not None else files.label
    convention = label_convention or files.convention
    try:
        vocab.label_convention(convention)
    except ValueError as e:
        raise InputError(str(e)) from None

    images: dict[str, np.ndarray] = {}
    sources: dict[str, Path] = {}
    warnings: list[str] = []
    if files.msd_image is not None:
        # One 4D file: reorient all channels together, then split them.
        vol = read_volume(files.msd_image, max_voxels=max_voxels, channels=len(MSD_CHANNELS))
        source_grid, ref_path = vol.grid, vol.path
        ras, ref = to_ras(vol.data, vol.grid)
        del vol
        for c, seq in enumerate(MSD_CHANNELS):
            warnings.append(_check_image(ras[..., c], files.msd_image, f"channel {c} ({seq})",
                                         force=force))
            images[seq] = np.ascontiguousarray(ras[..., c])
            sources[seq] = files.msd_image
        del ras
    else:
        ref = source_grid = ref_path = None
        for seq, (ras, grid, vol_grid, path, warning) in _read_sequences(files.images, max_voxels, force):
            warnings.append(warning)
            if ref is None:
                ref, source_grid, ref_path = grid, vol_grid, path
            else:
                _check_grid(ref, grid, path, ref_path, "its")
            images[seq], sources[seq] = ras, path

    labels = None
    if label_path is not None:
        vol = read_volume(label_path, max_voxels=max_voxels)
        if label_convention is None:  # only the naming said which: the values may say better
            named, convention = convention, named_like_convention(vol.data, convention)
            if convention != named:
                warnings.append(f"{vol.path.name}: named like {named} but its label values fit "
                                f"{convention} ({vocab.convention(convention).title}); read as "
                                f"{convention} (give label_convention= if they mean otherwise)")
        lab = check_label_map(vol.data, vol.path, convention)
        lab_ras, grid = to_ras(lab, vol.grid)
        _check_grid(ref, grid, vol.path, ref_path, "the label")
        labels = labels_to_concepts(lab_ras, convention)
        sources["seg"] = vol.path
        del vol, lab, lab_ras
    study = files.study
    if study is None and files.msd_image is None:
        study = _study_of(files.images)
    return Case(images={s: images[s] for s in SEQUENCES if s in images}, affine=ref.affine.copy(),
                source_grid=source_grid, labels=labels, case_id=files.case_id,
                label_convention=convention if labels is not None else None,
                layout=files.layout, sources=sources, study=study,
                warnings=tuple(w for w in warnings if w) + (study.warnings if study else ()))


def _read_sequences(paths: Mapping[str, Path], max_voxels: int, force: bool):
    """Each sequence read, checked and reoriented to RAS+, in :data:`SEQUENCES` order: (seq,
    (ras, ras grid, source grid, path, warning or None)). Two files are read at once (gzip
    inflation and the reorientation copy release the GIL); a file's error is raised in the order
    the files would have been read one by one."""
    from concurrent.futures import ThreadPoolExecutor

    def one(seq: str):
        vol = read_volume(paths[seq], max_voxels=max_voxels)
        warning = _check_image(vol.data, vol.path, "the image", force=force)
        ras, grid = to_ras(vol.data, vol.grid)
        return ras, grid, vol.grid, vol.path, warning

    seqs = [s for s in SEQUENCES if s in paths]
    if len(seqs) < 2:
        yield from ((seq, one(seq)) for seq in seqs)
        return
    with ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="vlseg-read") as pool:
        futures = [(seq, pool.submit(one, seq)) for seq in seqs]
        try:
            for seq, fut in futures:
                yield seq, fut.result()
        finally:
            for _, fut in futures:
                fut.cancel()


# ----------------------------------------------------------------------------- writing


def _refuse_inputs(path: Path, case: Case) -> None:
    target = path.resolve()
    for p in case.sources.values():
        if Path(p).resolve() == target:
            raise InputError("is one of the case's input files; choose another output path",
                             str(path))


def write_mask(mask_ras: np.ndarray, case: Case, path: str | os.PathLike) -> Path:
    """Write a binary RAS+ mask as uint8 0/1 on the case's source grid (atomic, clean header)."""
    path = check_output_path(path)
    mask = np.asarray(mask_ras)
    if mask.shape != case.shape:
        raise ValueError(f"mask shape {mask.shape} does not match the case {case.shape}")
    if mask.dtype != bool and not np.isin(mask, (0, 1)).all():
        raise ValueError("mask must be binary (bool or 0/1); threshold probabilities first")
    _refuse_inputs(path, case)
    return write_uint8(case.to_source(mask.astype(np.uint8)), case.source_grid, path)


def write_map(values_ras: np.ndarray, case: Case, path: str | os.PathLike) -> Path:
    """Write a float RAS+ map (a probability or uncertainty map, values in [0, 1]) as float32 on
    the case's source grid (atomic, clean header)."""
    path = check_output_path(path)
    values = np.asarray(values_ras, dtype=np.float32)
    if values.shape != case.shape:
        raise ValueError(f"map shape {values.shape} does not match the case {case.shape}")
    _refuse_inputs(path, case)
    return write_float32(case.to_source(values), case.source_grid, path)


def write_label_map(masks_ras: Mapping[str, np.ndarray], case: Case, path: str | os.PathLike,
                    convention: str = "brats2023") -> Path:
    """Write concept masks (any registered concepts) as one label map in ``convention``."""
    path = check_output_path(path)
    try:
        vocab.label_convention(convention)
    except ValueError as e:
        raise InputError(str(e)) from None
    for c in masks_ras:
        vocab.check_concept(c)
    for c, m in masks_ras.items():
        if np.shape(m) != case.shape:
            raise ValueError(f"{c} mask shape {np.shape(m)} does not match the case {case.shape}")
    _refuse_inputs(path, case)
    labels = concepts_to_labels(masks_ras, convention)  # (X, Y, Z) uint8, RAS+
    return write_uint8(case.to_source(labels), case.source_grid, path)
