"""Find and load the label maps that ``vlseg evaluate`` compares, matched by case id.

A folder given to ``--pred`` or ``--gt`` may hold, per case, any of:

* a label file ``<case>.nii.gz``, ``<case>-seg.nii.gz`` or ``<case>_seg.nii.gz`` (image files
  such as ``<case>-t1c.nii.gz`` beside it are skipped);
* a case folder ``<case>/`` holding one such label file (BraTS layout), or the per-concept masks
  that ``vlseg segment`` writes (``NCR.nii.gz``, ``ET.nii.gz``, ... uint8 0/1).

Which file is what is decided by :func:`vlseg.io.classify` from its name (files are found by
name; a ``*_mask`` file is a label map, as everywhere in vlseg); this module adds only the
evaluate layout (a case id per file or folder, MSD ``labelsTr/``). Every file is then validated
through its reader (:func:`vlseg.io.read_volume`: missing/corrupt/unreadable files, 2D/4D, voxel
cap, NaN, bad affine) and :mod:`vlseg.io.labels`, and brought to RAS+ by :func:`vlseg.io.to_ras`
(axis permutation only), so a prediction stored in another orientation of the same grid still
matches.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vlseg import vocab
from vlseg.vocab.labels import labels_to_concepts
from vlseg.errors import InputError
from vlseg.io import (
    DEFAULT_MAX_VOXELS,
    Grid,
    check_binary_mask,
    check_label_map,
    classify,
    ras_grid,
    read_header,
    read_volume,
    reader_for,
    to_ras,
)


@dataclass(frozen=True)
class LabelSource:
    """Where one case's labels live: a label map file, or one mask file per concept."""

    case_id: str
    label_file: Path | None = None
    concept_files: dict[str, Path] = field(default_factory=dict)
    style: str = "other"  # the convention the layout implies (*_seg: brats2021, labelsTr/: msd) or "other"

    @property
    def where(self) -> str:
        return str(self.label_file or next(iter(self.concept_files.values())).parent)


@dataclass
class LoadedLabels:
    masks: dict[str, np.ndarray]  # concept -> bool (X, Y, Z) in RAS+
    grid: Grid                    # RAS+ grid of the masks
    path: Path                    # a file to name in messages
    convention: str = ""          # the convention the label map was read in ("" for masks)


def _style(path: Path, named_style: str) -> str:
    if path.parent.name.lower() in ("labelstr", "labelsts"):
        return "msd"
    return named_style if named_style != vocab.default_convention() else "other"


def _label_source(path: Path, *, in_folder: str | None = None) -> tuple[str, str] | None:
    """(case id, style) if ``path`` is a label map by name; None for images and concept masks.

    A name that says nothing (``<case>.nii.gz``) is a label map of case ``<case>``; inside a
    case folder only a ``*-seg``/``*_mask``-style name or ``<folder name>.nii.gz`` counts.
    """
    fc = classify(path, depth="name")
    if fc.role not in ("label", "unknown"):
        return None  # an image such as <case>-t1c.nii.gz, or a concept mask ET.nii.gz
    if in_folder is not None and fc.role != "label" and fc.stem != in_folder:
        return None
    return (fc.case_id if fc.role == "label" and fc.case_id else fc.stem), _style(path, fc.style)


def _readable(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file()
                  and reader_for(p) is not None)


def _from_case_folder(folder: Path) -> LabelSource | None:
    files = _readable(folder)
    # Label files inside a case folder: *-seg/*_seg/*-label/*_mask, or <folder name>.nii.gz.
    labels = [(p, c[1]) for p in files if (c := _label_source(p, in_folder=folder.name)) is not None]
    if len(labels) > 1:
        raise InputError(f"holds several label files ({', '.join(p.name for p, _ in labels)}); keep "
                         "one per case folder", str(folder))
    if labels:
        return LabelSource(case_id=folder.name, label_file=labels[0][0], style=labels[0][1])
    concepts = {fc.concept: p for p in files
                if (fc := classify(p, depth="name")).role == "concept_mask"}
    if concepts:
        return LabelSource(case_id=folder.name, concept_files=concepts)
    return None


def discover(root: str | os.PathLike, role: str) -> tuple[dict[str, LabelSource], list[str]]:
    """Map case id -> label source under ``root`` (a folder, or a single label file).

    Returns the sources and notes about folders skipped because they hold no labels.
    ``role`` ("prediction" / "ground truth") only words the messages.
    """
    root = Path(root)
    if not root.exists():
        raise InputError(f"{role} path not found; check the path", str(root))
    if root.is_file():
        if reader_for(root) is None:
            raise InputError(f"{role} must be a folder or a .nii/.nii.gz label file", str(root))
        c = _label_source(root)
        case_id, style = c if c is not None else (classify(root, depth="name").stem, "other")
        return {case_id: LabelSource(case_id=case_id, label_file=root, style=style)}, []
    try:
        entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    except OSError as e:
        raise InputError(f"cannot list the {role} folder ({e.strerror or e})", str(root)) from None

    found: dict[str, LabelSource] = {}
    skipped: list[str] = []

    def add(src: LabelSource) -> None:
        if src.case_id in found:
            raise InputError(f"case {src.case_id!r} has two {role} sources ({found[src.case_id].where} "
                             f"and {src.where}); keep one", str(root))
        found[src.case_id] = src

    for p in entries:
        if p.is_dir():
            src = _from_case_folder(p)
            if src is None:
                skipped.append(f"{p.name}/ (no label file)")
            else:
                add(src)
        elif p.is_file() and reader_for(p) is not None:
            c = _label_source(p)
            if c is not None:
                add(LabelSource(case_id=c[0], label_file=p, style=c[1]))
    if not found:
        raise InputError(f"no {role} label files found; expected <case>.nii.gz, <case>-seg.nii.gz, "
                         "or case folders holding a *-seg/*_seg file or NCR/ED/ET/TC/WT masks",
                         str(root))
    return found, skipped


def guess_convention(src: LabelSource) -> str:
    """Label convention implied by the file layout: MSD labelsTr/ -> msd, *_seg -> brats2021."""
    return src.style if src.style in vocab.convention_names() else vocab.default_convention()


def labels_fit(data: np.ndarray, named: str) -> str:
    """The convention a label map named like ``named`` holds: ``named`` itself when its values
    fit, else the first convention named alike (same separator and sequence names, e.g.
    BraTS 2024 beside 2023) whose values cover the map's; ``named`` when none does (the
    validation then names the stray label)."""
    present = set(np.unique(np.asarray(data)).tolist())
    ref = vocab.convention(named)

    def fits(name: str) -> bool:
        return present <= {0, *vocab.label_convention(name).values()}

    if fits(named):
        return named
    for c in vocab.conventions():
        if (c.separator, c.sequence_tokens, c.channels) == (ref.separator, ref.sequence_tokens, ref.channels) \
                and fits(c.name):
            return c.name
    return named


def _read_label_map(path: Path, convention: str, option: str, max_voxels: int,
                    detect: bool) -> tuple[np.ndarray, Grid, str]:
    vol = read_volume(path, max_voxels=max_voxels)
    if detect:
        convention = labels_fit(vol.data, convention)
    labels, grid = to_ras(check_label_map(vol.data, path, convention, option=option), vol.grid)
    return labels, grid, convention


def load_labels(src: LabelSource, convention: str, *, option: str, detect: bool = False,
                max_voxels: int = DEFAULT_MAX_VOXELS) -> LoadedLabels:
    """Read a source into RAS+ concept masks (label maps give every concept of the convention).

    ``option`` is how the caller's user sets ``convention`` (``gt_convention=``), named in
    error hints. ``detect=True`` (the convention was guessed from the layout) reads a label
    map in the convention its values fit among those named alike (:func:`labels_fit`); a
    convention the user gave is kept, and a label outside it is an error naming the label.
    """
    if src.label_file is not None:
        labels, grid, conv = _read_label_map(src.label_file, convention, option, max_voxels, detect)
        return LoadedLabels(masks=labels_to_concepts(labels, conv), grid=grid, path=src.label_file,
                            convention=conv)
    masks: dict[str, np.ndarray] = {}
    ref: tuple[Grid, Path] | None = None
    for concept, path in src.concept_files.items():
        vol = read_volume(path, max_voxels=max_voxels)
        ras, grid = to_ras(check_binary_mask(vol.data, path), vol.grid)
        if ref is None:
            ref = (grid, path)
        elif (problem := ref[0].mismatch(grid)) is not None:
            raise InputError(f"grid differs from {ref[1].name}: {problem}", str(path))
        masks[concept] = ras
    assert ref is not None
    return LoadedLabels(masks=masks, grid=ref[0], path=ref[1])


def _header_grid(path: Path) -> Grid | None:
    """RAS+ grid from the header alone (no voxel data); None if the header can't be read."""
    try:
        return ras_grid(read_header(path).grid)
    except InputError:  # full validation happens when the file is read
        return None


def precheck_grids(pairs: list[tuple[LabelSource, LabelSource]]) -> None:
    """Refuse a prediction whose grid differs from its ground truth, reading headers only.

    Catches the most common mistake (predictions resampled to another grid) before any metric
    is computed; unreadable files are left to the full validation in :func:`load_labels`.
    """
    for gt, pred in pairs:
        gt_file = gt.label_file or next(iter(gt.concept_files.values()))
        ref = _header_grid(gt_file)
        if ref is None:
            continue
        for path in [pred.label_file] if pred.label_file else list(pred.concept_files.values()):
            grid = _header_grid(path)
            if grid is not None and (problem := ref.mismatch(grid)) is not None:
                raise InputError(f"grid differs from the ground truth {gt_file.name}: {problem}; "
                                 "write predictions on the ground truth's grid", str(path))
