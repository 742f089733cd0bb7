"""One way to open a case, for every entry point (CLI, cohorts, MCP, the app, ``set_case``).

:func:`open_case` reads the source (a case folder, a file, ``{sequence: file}``, or a DICOM
study folder with the user's choice of series), validates it and checks that its geometry is
one the model answers (``check_geometry``), so every entry point refuses the same inputs with
the same one-line errors.

    case = open_case("BraTS-GLI-00001-000/")
    case = open_case("study/", series={"t1c": "7"}, reference="t1c")
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence, Union

from vlseg.io.case import Case, load_case
from vlseg.io.dicom_case import load_study
from vlseg.io.envelope import check_geometry
from vlseg.io.volume import DEFAULT_MAX_VOXELS

# A case folder or file, or {sequence (any alias) or "seg": file}.
CaseSource = Union[str, os.PathLike, Mapping[str, Union[str, os.PathLike, None]]]


def open_case(source: CaseSource | Case, *, series: Mapping[str, str] | Sequence[str] | None = None,
              reference: str | None = None, max_voxels: int = DEFAULT_MAX_VOXELS,
              force: bool = False) -> Case:
    """Read, validate and geometry-check a case (a :class:`Case` given is checked only).
    ``series``/``reference``: a DICOM study's series choice (``{seq: spec}`` or
    ``["seq=spec"]``) and the sequence whose grid the others are resampled onto. ``force``:
    read images that look like a label map, atlas, probability or statistical map anyway
    (refused otherwise, before any model runs); ``Case.warnings`` says what was found."""
    if isinstance(source, Case):
        case = source
    elif series or reference:
        case = load_study(source, series=series, reference=reference, max_voxels=max_voxels,
                          force=force)
    else:
        case = load_case(source, max_voxels=max_voxels, force=force)
    check_geometry(case.source_grid)  # too small a field of view or too coarse: refused
    return case


__all__ = ["CaseSource", "open_case"]
