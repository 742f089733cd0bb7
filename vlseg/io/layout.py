"""Find the files of one case: BraTS 2023+ / BraTS 2021 folders, MSD 4D images, explicit files.

Nothing here reads voxel data; it only decides which file holds which sequence and which label
convention the layout implies. Names are matched on the last token of the file stem, so
``*_t1.nii.gz`` and ``*_t1ce.nii.gz`` never clash.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from vlseg.concepts import SEQUENCES, canonical_sequence
from vlseg.errors import InputError

# MSD Task01_BrainTumour 4D channel order: FLAIR, T1w, T1gd, T2w.
MSD_CHANNELS: tuple[str, ...] = ("t2f", "t1n", "t1c", "t2w")
LABEL_TOKENS: frozenset[str] = frozenset({"seg", "label", "labels"})
_BRATS2023 = frozenset({"t1n", "t1c", "t2w", "t2f", "seg"})
_BRATS2021 = frozenset({"t1", "t1ce", "t2", "flair", "seg"})
_NII = re.compile(r"^(?P<stem>.+?)\.nii(?:\.gz)?$", re.IGNORECASE)
_EXPECTED = ("*-t1n.nii.gz, *-t1c.nii.gz, *-t2w.nii.gz, *-t2f.nii.gz (BraTS 2023+, optional "
             "*-seg.nii.gz) or *_t1, *_t1ce, *_t2, *_flair (BraTS 2021, optional *_seg)")


@dataclass(frozen=True)
class CaseFiles:
    """Which file holds what, for one case."""

    images: dict[str, Path] = field(default_factory=dict)  # canonical sequence -> 3D file
    msd_image: Path | None = None  # or one 4D file with channels MSD_CHANNELS
    label: Path | None = None
    layout: str = "files"  # "brats2023" | "brats2021" | "folder" | "msd" | "files"
    case_id: str = "case"
    convention: str = "brats2023"  # label convention the layout implies


@dataclass(frozen=True)
class ParsedName:
    case_id: str
    kind: str  # canonical sequence name, or "seg"
    style: str  # "brats2023" | "brats2021" | "other"


def parse_name(name: str) -> ParsedName | None:
    """``BraTS-GLI-00001-000-t1c.nii.gz`` -> (BraTS-GLI-00001-000, t1c, brats2023); None if no match."""
    m = _NII.match(name)
    if m is None:
        return None
    stem = m["stem"]
    cut = max(stem.rfind(sep) for sep in "-_.")
    case_id, sep, token = (stem[:cut], stem[cut], stem[cut + 1:]) if cut >= 0 else ("", "", stem)
    token = token.lower()
    if token in LABEL_TOKENS:
        kind = "seg"
    else:
        try:
            kind = canonical_sequence(token)
        except ValueError:
            return None
    if sep == "-" and token in _BRATS2023:
        style = "brats2023"
    elif sep == "_" and token in _BRATS2021:
        style = "brats2021"
    else:
        style = "other"
    return ParsedName(case_id=case_id, kind=kind, style=style)


def is_nifti_name(name: str) -> bool:
    return _NII.match(name) is not None


def find_case_files(source: str | os.PathLike | Mapping[str, str | os.PathLike | None]) -> CaseFiles:
    """Resolve a case folder, a single file (MSD 4D or one named sequence) or a mapping."""
    if isinstance(source, Mapping):
        return _from_mapping(source)
    path = Path(source)
    if not path.exists():
        raise InputError("not found; give a case folder, a NIfTI file or per-sequence files",
                         str(path))
    if path.is_dir():
        return _from_folder(path)
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
    first = images[next(s for s in SEQUENCES if s in images)]
    parsed = parse_name(first.name)
    case_id = parsed.case_id if parsed and parsed.case_id else _stem(first)
    return CaseFiles(images=images, label=label, layout="files", case_id=case_id)


def _from_file(path: Path) -> CaseFiles:
    parsed = parse_name(path.name)
    if parsed is not None and parsed.kind == "seg":
        raise InputError("is a label file; give the image files (or their folder) and pass the "
                         "labels separately", str(path))
    if parsed is not None:  # one named sequence, e.g. .../case-t1c.nii.gz
        convention = "brats2021" if parsed.style == "brats2021" else "brats2023"
        return CaseFiles(images={parsed.kind: path}, layout="files",
                         case_id=parsed.case_id or _stem(path), convention=convention)
    # Otherwise an MSD Task01 4D image; its label may sit in the sibling labelsTr/.
    label = None
    if path.parent.name.lower().startswith("images"):
        sibling = path.parent.parent / ("labels" + path.parent.name[len("images"):]) / path.name
        if sibling.is_file():
            label = sibling
    return CaseFiles(msd_image=path, label=label, layout="msd", case_id=_stem(path),
                     convention="msd")


def _from_folder(folder: Path) -> CaseFiles:
    try:
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as e:
        raise InputError(f"cannot be listed ({e.strerror or e}); check its permissions",
                         str(folder)) from None
    found: dict[str, list[tuple[Path, ParsedName]]] = {}
    niftis = [p for p in entries if p.is_file() and is_nifti_name(p.name)]
    for p in niftis:
        parsed = parse_name(p.name)
        if parsed is not None:
            found.setdefault(parsed.kind, []).append((p, parsed))
    seqs = [s for s in SEQUENCES if s in found]
    if not seqs:
        if (folder / "imagesTr").is_dir():
            raise InputError("looks like an MSD task folder; give one image file from imagesTr/",
                             str(folder))
        extra = f" (found {len(niftis)} NIfTI file(s) with other names)" if niftis else ""
        raise InputError(f"holds no MRI sequence files{extra}; expected {_EXPECTED}", str(folder))
    for kind, hits in found.items():
        if len(hits) > 1:
            names = ", ".join(p.name for p, _ in hits)
            raise InputError(f"has several files for {kind} ({names}); keep one case per folder",
                             str(folder))
    chosen = {kind: hits[0] for kind, hits in found.items()}
    ids = {pn.case_id for _, pn in chosen.values()}
    if len(ids) > 1 and all(pn.style != "other" for _, pn in chosen.values()):
        raise InputError(f"mixes files of different cases ({', '.join(sorted(ids))}); keep one "
                         "case per folder", str(folder))
    styles = {chosen[s][1].style for s in seqs}
    layout = styles.pop() if len(styles) == 1 and "other" not in styles else "folder"
    case_id = ids.pop() if len(ids) == 1 and "" not in ids else folder.name
    label = chosen["seg"][0] if "seg" in chosen else None
    return CaseFiles(images={s: chosen[s][0] for s in seqs}, label=label, layout=layout,
                     case_id=case_id or folder.name,
                     convention="brats2021" if layout == "brats2021" else "brats2023")


def _stem(path: Path) -> str:
    m = _NII.match(path.name)
    return m["stem"] if m else path.stem
