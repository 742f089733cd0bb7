"""Load a DICOM study as a :class:`~vlseg.io.Case`, with ``series=`` overrides.

``load_case(folder)`` already reads a DICOM study (the reader maps its series to sequences);
this adds the user's choice of series (``{"t1c": "7"}``: series number, description or
SeriesInstanceUID) and of the reference series whose grid the others are resampled onto
(``reference="t2f"``; default t1c, else t2f, t1n, t2w) for the CLI, the MCP server and Python
callers.

    >>> case = load_study("study/", series={"t1c": "7", "t2f": "AX FLAIR"}, reference="t1c")
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

from vlseg.io.case import Case, load_case
from vlseg.io.dicom import resolve_study
from vlseg.io.dicom_study import parse_overrides
from vlseg.io.volume import DEFAULT_MAX_VOXELS


def load_study(folder: str | os.PathLike, *, series: Mapping[str, str] | Sequence[str] | None = None,
               reference: str | None = None, max_voxels: int = DEFAULT_MAX_VOXELS) -> Case:
    """A DICOM study folder as a Case; ``series``: ``{seq: spec}`` or ``["seq=spec", ...]``;
    ``reference``: the sequence whose series grid the others are resampled onto."""
    folder = Path(folder)
    if not series and not reference:
        return load_case(folder, max_voxels=max_voxels)
    overrides = parse_overrides([f"{k}={v}" for k, v in series.items()]
                                if isinstance(series, Mapping) else list(series or ()))
    case = load_case(resolve_study(folder, overrides, reference=reference), max_voxels=max_voxels)
    case.case_id, case.layout = folder.name, "dicom"
    return case


__all__ = ["load_study"]
