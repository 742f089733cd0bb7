"""Find the files of one case: BraTS 2023+ / BraTS 2021 folders, MSD 4D images, explicit files.

Which file holds what is decided by :func:`vlseg.io.classify` (names, plus each file's header
through its reader); nothing here reads voxel data. This module only adds the *layout* rules:
one case per folder, MSD's ``imagesTr/``-``labelsTr/`` siblings, and the label convention a
layout implies.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from vlseg.vocab import SEQUENCES, canonical_sequence
from vlseg.errors import InputError
from vlseg.io.classify import LABEL_TOKENS, NAMING_HINT, FileClass, classify
from vlseg.io.nifti import is_nifti_name
from vlseg.io.readers import reader_for
from vlseg.io.study import StudySource

__all__ = ["MSD_CHANNELS", "CaseFiles", "find_case_files", "is_nifti_name"]

# MSD Task01_BrainTumour 4D channel order: FLAIR, T1w, T1gd, T2w.
MSD_CHANNELS: tuple[str, ...] = ("t2f", "t1n", "t1c", "t2w")


@dataclass(frozen=True)
class CaseFiles:
    """Which file holds what, for one case."""

    images: dict[str, Path] = field(default_factory=dict)  # canonical sequence -> 3D file
    msd_image: Path | None = None  # or one 4D file with channels MSD_CHANNELS
    label: Path | None = None
    layout: str = "files"  # "brats2023" | "brats2021" | "folder" | "msd" | "files"
    case_id: str = "case"
    convention: str = "brats2023"  # label convention the layout implies
    study: StudySource | None = None  # the study a reader split the folder into (DICOM)


def find_case_files(source: str | os.PathLike | Mapping[str, str | os.PathLike | None]) -> CaseFiles:
    """Resolve a case folder, a single file (a 4D MSD image or one named sequence) or a mapping
    ``{sequence (any alias) or "seg"/"label"/"mask": path}``."""
    if isinstance(source, Mapping):
        return _from_mapping(source)
    path = Path(source)
    if not path.exists():
        raise InputError("not found; give a case folder, a NIfTI file or per-sequence files",
                         str(path))
    if path.is_dir():
        reader = reader_for(path)  # a reader may claim a folder: a series, or a study it splits
        if reader is None:
            return _from_folder(path)
        study = reader.study(path)  # e.g. DICOM: {sequence: series path} and the grid plan
        if study is not None:
            return CaseFiles(images=dict(study.paths), layout=reader.name.lower(),
                             case_id=path.name, study=study)
    return _from_file(path)


def _from_mapping(source: Mapping) -> CaseFiles:
    images: dict[str, Path] = {}
    label: Path | None = None
    for key, value in source.items():
        if value is None:
            continue
        if str(key).strip().lower() in LABEL_TOKENS:
            label = Path(value)
            continue
        try:
            seq = canonical_sequence(str(key))
        except ValueError as e:
            raise InputError(str(e)) from None
        if seq in images:
            raise InputError(f"sequence {seq} given twice ({images[seq]} and {value}); give one file "
                             "per sequence")
        images[seq] = Path(value)
    if not images:
        raise InputError(f"no image files given; give at least one of {', '.join(SEQUENCES)}")
    named = classify(images[next(s for s in SEQUENCES if s in images)], depth="name")
    return CaseFiles(images=images, label=label, layout="files",
                     case_id=named.case_id or named.stem)


def _from_file(path: Path) -> CaseFiles:
    fc = classify(path, depth="header")
    if fc.role == "not_scan":
        raise InputError(fc.reason, str(path))
    if fc.role in ("label", "concept_mask"):
        raise InputError("is a label file; give the image files (or their folder) and pass the "
                         "labels separately", str(path))
    if fc.role == "sequence":  # one named sequence, e.g. .../case-t1c.nii.gz
        return CaseFiles(images={fc.sequence: path}, layout="files", case_id=fc.case_id or fc.stem,
                         convention="brats2021" if fc.style == "brats2021" else "brats2023")
    if fc.role == "unknown":
        raise InputError("is 3D and its name names no sequence (expected a 4D image with 4 channels, "
                         "or a name like case-t1c.nii.gz); rename it or give a mapping "
                         "{sequence: file}", str(path))
    # A 4D image: MSD Task01 channel order; its label may sit in the sibling labelsTr/.
    label = None
    if path.parent.name.lower().startswith("images"):
        sibling = path.parent.parent / ("labels" + path.parent.name[len("images"):]) / path.name
        if sibling.is_file():
            label = sibling
    return CaseFiles(msd_image=path, label=label, layout="msd", case_id=fc.stem, convention="msd")


def _from_folder(folder: Path) -> CaseFiles:
    try:
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as e:
        raise InputError(f"cannot be listed ({e.strerror or e}); check its permissions",
                         str(folder)) from None
    found: dict[str, list[tuple[Path, FileClass]]] = {}
    others = 0
    for p in entries:
        if reader_for(p) is None:
            continue
        fc = classify(p, depth="header")
        if fc.role == "not_scan" and fc.named != "unknown":  # named like a scan, unreadable
            raise InputError(fc.reason, str(p))
        if fc.role == "multi" and fc.named == "sequence":
            raise InputError(f"is {fc.reason}; give one 3D volume per sequence", str(p))
        if fc.role in ("sequence", "label"):
            found.setdefault(fc.sequence or "seg", []).append((p, fc))
        else:
            others += 1
    seqs = [s for s in SEQUENCES if s in found]
    if not seqs:
        if (folder / "imagesTr").is_dir():
            raise InputError("looks like an MSD task folder; give one image file from imagesTr/",
                             str(folder))
        extra = f" (found {others} other file(s))" if others else ""
        raise InputError(f"holds no MRI sequence files{extra}; {NAMING_HINT}", str(folder))
    for kind, hits in found.items():
        if len(hits) > 1:
            names = ", ".join(p.name for p, _ in hits)
            raise InputError(f"has several files for {kind} ({names}); keep one case per folder",
                             str(folder))
    chosen = {kind: hits[0] for kind, hits in found.items()}
    ids = {fc.case_id for _, fc in chosen.values()}
    if len(ids) > 1 and all(fc.style != "other" for _, fc in chosen.values()):
        raise InputError(f"mixes files of different cases ({', '.join(sorted(ids))}); keep one "
                         "case per folder", str(folder))
    styles = {chosen[s][1].style for s in seqs}
    layout = styles.pop() if len(styles) == 1 and "other" not in styles else "folder"
    case_id = ids.pop() if len(ids) == 1 and "" not in ids else folder.name
    label = chosen["seg"][0] if "seg" in chosen else None
    return CaseFiles(images={s: chosen[s][0] for s in seqs}, label=label, layout=layout,
                     case_id=case_id or folder.name,
                     convention="brats2021" if layout == "brats2021" else "brats2023")

