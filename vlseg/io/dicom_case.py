"""Load a DICOM study as a :class:`~vlseg.io.Case`, with ``series=`` overrides.

``load_case(folder)`` already reads a DICOM study (the reader maps its series to sequences);
this adds the user's choice of series (``{"t1c": "7"}``: series number, description or
SeriesInstanceUID) and of the reference series whose grid the others are resampled onto
(``reference="t2f"``; default t1c, else t2f, t1n, t2w) for the CLI, the MCP server and Python
callers.

    >>> case = load_study("study/", series={"t1c": "7", "t2f": "AX FLAIR"}, reference="t1c")
    >>> load_case(resolve_study("study/", {"t1c": "7"}))   # the same case, from its series paths

Both ask the registered DICOM reader (``reader_for``), which keeps the grid plan of the series
paths it mapped for the reads that follow.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

from vlseg.errors import InputError
from vlseg.io.case import Case, load_case
from vlseg.io.dicom_study import holds_dicom, parse_overrides
from vlseg.io.layout import CaseFiles
from vlseg.io.readers import reader_for
from vlseg.io.study import StudySource
from vlseg.io.volume import DEFAULT_MAX_VOXELS


def _study(folder: Path, overrides: Mapping[str, str] | None, reference: str | None) -> StudySource:
    reader = reader_for(folder) if folder.is_dir() and holds_dicom(folder) else None
    study = reader.study(folder, overrides, reference=reference) if reader is not None else None
    if study is None:
        raise InputError("is not a folder of DICOM files; series= overrides go with a DICOM study "
                         "folder", str(folder))
    return study


def resolve_study(folder: str | os.PathLike, overrides: Mapping[str, str] | None = None, *,
                  reference: str | None = None) -> dict[str, Path]:
    """``{sequence: series path}`` for a DICOM study folder, with ``series=`` overrides and the
    reference series (``reference``: a sequence); pass it to ``load_case`` / ``Segmenter.set_case``."""
    return dict(_study(Path(folder), overrides, reference).paths)


def load_study(folder: str | os.PathLike, *, series: Mapping[str, str] | Sequence[str] | None = None,
               reference: str | None = None, max_voxels: int = DEFAULT_MAX_VOXELS,
               force: bool = False) -> Case:
    """A DICOM study folder as a Case; ``series``: ``{seq: spec}`` or ``["seq=spec", ...]``;
    ``reference``: the sequence whose series grid the others are resampled onto; ``force``:
    as for ``load_case``."""
    folder = Path(folder)
    if not series and not reference:
        return load_case(folder, max_voxels=max_voxels, force=force)
    overrides = parse_overrides([f"{k}={v}" for k, v in series.items()]
                                if isinstance(series, Mapping) else list(series or ()))
    study = _study(folder, overrides, reference)
    return load_case(CaseFiles(images=dict(study.paths), layout="dicom", case_id=folder.name,
                               study=study), max_voxels=max_voxels, force=force)


__all__ = ["load_study", "resolve_study"]
