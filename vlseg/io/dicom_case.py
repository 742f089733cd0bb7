"""Load a DICOM study as a :class:`~vlseg.io.Case`, with ``--series`` overrides.

``load_case(folder)`` already reads a DICOM study (the reader maps its series to sequences);
this adds the user's choice of series (``{"t1c": "7"}``: series number, description or
SeriesInstanceUID) for the CLI, the MCP server and Python callers.

    >>> case = load_study("study/", series={"t1c": "7", "t2f": "AX FLAIR"})
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
               max_voxels: int = DEFAULT_MAX_VOXELS) -> Case:
    """A DICOM study folder as a Case; ``series``: ``{seq: spec}`` or ``["seq=spec", ...]``."""
    folder = Path(folder)
    if not series:
        return load_case(folder, max_voxels=max_voxels)
    overrides = parse_overrides([f"{k}={v}" for k, v in series.items()]
                                if isinstance(series, Mapping) else list(series))
    case = load_case(resolve_study(folder, overrides), max_voxels=max_voxels)
    case.case_id, case.layout = folder.name, "dicom"
    return case


__all__ = ["load_study"]
