"""Which cases a cohort run covers: ``--cases PATH [PATH ...]`` -> case folders, in order (or
the studies a DICOMweb search finds: :func:`server_cases`).

A PATH is one of
  * a case folder: it holds sequence files directly (``<case>-t1c.nii.gz``, ``t1.nii.gz``, ...),
    or a registered reader reads the folder as one case (e.g. a DICOM study, flat or nested;
    asked through the reader seam, ``reader_for`` and the reader's ``is_one_case``);
  * a folder of case folders: every non-hidden sub-folder is a case (one that turns out not to
    be a readable case is a *failure* of the run, not an argument error);
  * a text file with one case folder per line (blank lines and ``#`` comments skipped; relative
    paths are relative to the text file's folder).

Only names are looked at here (``vlseg.io.classify`` at depth "name"; a reader that claims a
folder may read a header per sub-folder to tell a case from a folder of cases); each case is read and
validated when its turn comes, so one bad case never stops the others. The case id is the
folder's name: it names the output folder ``OUT/<case_id>/``, so two cases with one name are
refused before anything runs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from vlseg.errors import InputError
from vlseg.io import classify, reader_for

LIST_SUFFIXES = (".txt", ".lst", ".list", ".csv", ".tsv")


@dataclass(frozen=True)
class CaseRef:
    """One case of a cohort: its id (the folder name, or the Study Instance UID of a study on a
    DICOMweb server) and its folder (None for a server's study: retrieved when its turn comes)."""

    case_id: str
    folder: Path | None
    study_uid: str | None = None


def server_cases(study_uids: Iterable[str]) -> list[CaseRef]:
    """The studies a DICOMweb search found, as cases named by their UID, in UID order (every
    process of a run gets the same list)."""
    cases = [CaseRef(case_id=uid, folder=None, study_uid=uid) for uid in sorted(set(study_uids))]
    if not cases:
        raise InputError("the DICOMweb search found no study; check the query (e.g. "
                         "\"ModalitiesInStudy=MR&StudyDate=20240101-20241231\")")
    return cases


def _holds_sequences(folder: Path) -> bool:
    """True if ``folder`` holds scan files named as sequences directly."""
    try:
        entries = [p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file()]
    except OSError as e:
        raise InputError(f"cannot be listed ({e.strerror or e}); check its permissions",
                         str(folder)) from None
    return any(reader_for(p) is not None and classify(p, depth="name").role in ("sequence", "multi")
               for p in entries)


def _read_as_one_case(folder: Path) -> bool:
    """True if a registered reader claims ``folder`` as one case (e.g. a DICOM study), not as a
    folder of cases (anything with its files somewhere below): its ``is_one_case`` says which."""
    reader = reader_for(folder)
    return reader is not None and reader.is_one_case(folder)


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_list(path: Path) -> list[Path]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read the case list ({getattr(e, 'strerror', None) or e})", str(path)) from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(os.path.expanduser(line))
        p = p if p.is_absolute() else path.parent / p
        if not p.is_dir():
            raise InputError(f"line {n}: {line!r} is not a folder; list one case folder per line", str(path))
        out.append(p)
    return out


def _expand(path: Path) -> list[Path]:
    if not path.exists():
        raise InputError("not found; give a case folder, a folder of case folders or a text file "
                         "listing case folders", str(path))
    if path.is_file():
        if reader_for(path) is not None:
            raise InputError("is a scan file; --cases takes case folders (give its folder), or use "
                             "--case/--t1n/--t1c/--t2w/--t2f for one case", str(path))
        return _read_list(path)
    if _holds_sequences(path) or _read_as_one_case(path):
        return [path]
    subs = _subfolders(path)
    if not subs:
        raise InputError("holds neither sequence files nor case folders", str(path))
    return subs


def find_cases(paths: Iterable[str | os.PathLike]) -> list[CaseRef]:
    """Expand ``--cases`` arguments into case folders (in the order given; folders sorted)."""
    cases: list[CaseRef] = []
    seen: dict[str, Path] = {}
    for arg in paths:
        for folder in _expand(Path(arg)):
            ref = CaseRef(case_id=folder.name, folder=folder)
            if ref.case_id in seen:
                if seen[ref.case_id].resolve() == folder.resolve():
                    continue  # the same folder named twice: once is enough
                raise InputError(f"two cases are named {ref.case_id!r} ({seen[ref.case_id]} and {folder}); "
                                 "case folder names must be unique (they name the output folders)")
            seen[ref.case_id] = folder
            cases.append(ref)
    if not cases:
        raise InputError("--cases found no case folders")
    return cases


def shard(cases: list[CaseRef], rank: int, world_size: int) -> list[CaseRef]:
    """The cases process ``rank`` of ``world_size`` runs: every world_size-th, from ``rank``."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"bad rank {rank} of {world_size}")
    return cases[rank::world_size]
