"""The reader seam: each file format is one :class:`Reader`; :data:`READERS` is the one list.

NIfTI is the first reader, DICOM the second. A new format is one module with a class that has
the members below, plus one line in :data:`READERS`; ``load_case``, :func:`vlseg.io.classify`,
the app's uploads, cohorts and ``vlseg evaluate`` reach it through :func:`reader_for` with no
other edit. A reader of single files answers None/False to the study members; a reader that
splits a folder into sequences (DICOM) answers a :class:`StudySource`, which ``load_case`` sets
as ``Case.study`` for the exporters.

    >>> reader_for(Path("case-t1c.nii.gz")).name
    'NIfTI'
    >>> vol = read_volume("case-t1c.nii.gz")      # Volume: float32 voxels in the file's order
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Protocol, runtime_checkable

from vlseg.errors import InputError
from vlseg.io.dicom import DicomReader
from vlseg.io.nifti import NiftiReader
from vlseg.io.study import StudySource
from vlseg.io.volume import DEFAULT_MAX_VOXELS, Header, Volume


@runtime_checkable
class Reader(Protocol):
    """One file format. Readers raise :class:`InputError` (one line, what to do) on bad input."""

    name: str  # shown in messages: "NIfTI"
    hint: str  # how a user should give such a file: "NIfTI (.nii or .nii.gz)"
    suffixes: tuple[str, ...]  # name endings stripped before a name is read for a sequence

    def can_read(self, path: Path) -> bool:
        """Cheap claim by name or first bytes (never raises); a reader may claim a folder."""
        ...

    def read_header(self, path: Path, *, max_voxels: int = DEFAULT_MAX_VOXELS) -> Header:
        """Validate the file from its header alone (3D or 4D accepted); no voxel data read."""
        ...

    def read(self, path: Path, *, max_voxels: int = DEFAULT_MAX_VOXELS,
             channels: int | None = None) -> Volume:
        """Validated float32 voxels in the file's own order. ``channels``: None for one 3D volume,
        else the exact number of volumes a 4D file must hold."""
        ...

    def study(self, path: Path, overrides: Mapping[str, str] | None = None, *,
              reference: str | None = None) -> StudySource | None:
        """A folder this reader reads as one study, split into ``{sequence: path}`` with its
        grid plan (``overrides``: sequence -> series choice; ``reference``: the sequence whose
        grid the others are read onto); None when the reader does not split folders."""
        ...

    def study_of(self, images: Mapping[str, Path]) -> StudySource | None:
        """The study a case's ``{sequence: path}`` (all claimed by this reader) were read from;
        None for plain files."""
        ...

    def is_one_case(self, path: Path) -> bool:
        """Whether a folder this reader claims is one case, not a folder of cases, decided from
        every entry of that folder, never from some of them (cheap, never raises; False for a
        reader that claims no folders)."""
        ...


# The registry: asked in order, the first reader whose ``can_read`` says yes reads the file.
READERS: list[Reader] = [NiftiReader(), DicomReader()]


def register_reader(reader: Reader, *, first: bool = True) -> None:
    """Add a reader (``first``: ahead of the others, so it may claim files they would)."""
    if not isinstance(reader, Reader):
        raise TypeError(f"{reader!r} lacks the Reader members (name, hint, suffixes, can_read, "
                        "read_header, read, study, study_of, is_one_case)")
    if first:
        READERS.insert(0, reader)
    else:
        READERS.append(reader)


def reader_for(path: str | os.PathLike) -> Reader | None:
    """The first registered reader that claims ``path``, or None."""
    path = Path(path)
    return next((r for r in READERS if r.can_read(path)), None)


def formats_hint() -> str:
    return " or ".join(r.hint for r in READERS)


def _claimed(path: Path) -> Reader:
    if not path.exists():
        raise InputError("file not found; check the path", str(path))
    reader = reader_for(path)
    if reader is None and path.is_dir():
        raise InputError(f"is a folder, expected a file: give {formats_hint()}", str(path))
    if reader is None:
        raise InputError(f"is not a file vlseg can read; give {formats_hint()}", str(path))
    return reader


def read_header(path: str | os.PathLike, *, max_voxels: int = DEFAULT_MAX_VOXELS) -> Header:
    """Validate a file's header through its reader (no voxel data read)."""
    path = Path(path)
    return _claimed(path).read_header(path, max_voxels=max_voxels)


def read_volume(path: str | os.PathLike, *, max_voxels: int = DEFAULT_MAX_VOXELS,
                channels: int | None = None) -> Volume:
    """Read and validate one file through its reader: float32 voxels in the file's own order.

    ``channels``: None for a 3D volume, or the exact number of volumes a 4D file must hold (4 for
    an MSD image). Image- or label-specific checks are left to the caller.
    """
    path = Path(path)
    return _claimed(path).read(path, max_voxels=max_voxels, channels=channels)


def split_suffix(name: str) -> tuple[str, str]:
    """``"a-t1c.nii.gz"`` -> ``("a-t1c", ".nii.gz")`` by the longest registered suffix; else (name, "")."""
    low = name.lower()
    hits = [s for r in READERS for s in r.suffixes if low.endswith(s.lower())]
    if not hits:
        return name, ""
    cut = len(max(hits, key=len))
    return name[:-cut], name[-cut:]


def has_reader_suffix(name: str) -> bool:
    return bool(split_suffix(name)[1])
