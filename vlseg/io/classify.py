"""The one file classifier: which sequence a file holds, a label map, or not a scan.

Every input-format rule about *names* lives here (sequence tokens, label tokens, BraTS naming
styles), and every rule about *content* is asked of the file's reader (``vlseg.io.readers``) or
decided by :func:`vlseg.io.foreign.label_values`. ``load_case``'s layouts, the app's uploads and ``vlseg evaluate``
all call :func:`classify`, so they agree on every file.

    >>> fc = classify("BraTS-GLI-00001-000-t1c.nii.gz", depth="name")
    >>> fc.role, fc.sequence, fc.case_id, fc.style
    ('sequence', 't1c', 'BraTS-GLI-00001-000', 'brats2023')
    >>> classify("upload_mask.nii.gz", depth="name").role       # *_seg, *_label, *_mask
    'label'

Roles: ``sequence`` (one 3D MRI sequence, :attr:`FileClass.sequence` says which), ``label``
(a label map), ``concept_mask`` (``ET.nii.gz``: one concept's 0/1 mask, as ``vlseg segment``
writes them), ``multi`` (a 4D image holding several sequences, e.g. MSD), ``unknown`` (a readable
scan whose name names no sequence), ``not_scan`` (no reader can read it; :attr:`FileClass.reason`
says why).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from vlseg import vocab
from vlseg.vocab import canonical_sequence
from vlseg.errors import InputError
from vlseg.io.foreign import label_values
from vlseg.io.readers import formats_hint, reader_for, split_suffix
from vlseg.io.volume import DEFAULT_MAX_VOXELS

Role = Literal["sequence", "label", "concept_mask", "multi", "unknown", "not_scan"]
# The label convention whose file naming a name follows (``vocab.naming_convention``), or "other".
Style = str
Depth = Literal["name", "header", "voxels"]

# Last name token of a label map: BraTS ``-seg``/``_seg``, ``_label(s)``, and a user's ``_mask``.
LABEL_TOKENS: frozenset[str] = frozenset({"seg", "label", "labels", "mask"})
NAMING_HINT = "name files like BraTS: " + " or ".join(
    f"{c.naming_example('.nii.gz' if i == 0 else '')} ({c.title.split(' (')[0]})"
    for i, c in enumerate(c for c in vocab.conventions() if c.implied_by_naming and c.separator))
_SEPARATORS = re.compile(r"[-_.\s]")


@dataclass(frozen=True)
class FileClass:
    """What one file is, with the evidence: what its name says and what its content says."""

    role: Role
    sequence: str | None = None  # t1n | t1c | t2w | t2f when role is "sequence"
    concept: str | None = None  # NCR | ED | ET | TC | WT when role is "concept_mask"
    case_id: str = ""  # the name before its last token ("" for a one-token name)
    stem: str = ""  # the name without its format suffix
    style: Style = "other"  # the convention the naming follows (-t1c: brats2023) or "other"
    named: Role = "unknown"  # what the name alone says
    channels: int = 1  # volumes in the file (content depths only)
    reason: str = ""  # one line: why this role (empty when the name alone decided)


def classify(path: str | os.PathLike, *, depth: Depth = "voxels",
             max_voxels: int = DEFAULT_MAX_VOXELS) -> FileClass:
    """Classify a file by its name and, unless ``depth="name"``, its content. Never raises for bad
    input: an unreadable file is ``not_scan`` with the reader's one-line problem as ``reason``.

    ``depth``: ``"name"`` reads nothing; ``"header"`` reads the header only (readable? 4D? label
    intent?); ``"voxels"`` also reads the voxels, so an integer label volume named like a
    sequence is found out (see :func:`label_values`).
    """
    path = Path(path)
    by_name = _by_name(path.name)
    if depth == "name":
        return by_name
    # What the reader says from the header.
    reader = reader_for(path) if path.exists() else None
    if reader is None:
        why = "not found" if not path.exists() else f"not a file vlseg can read ({formats_hint()})"
        return replace(by_name, role="not_scan", reason=why)
    try:
        header = reader.read_header(path, max_voxels=max_voxels)
    except InputError as e:
        return replace(by_name, role="not_scan", reason=e.problem)
    if header.channels > 1:
        return replace(by_name, role="multi", channels=header.channels,
                     reason=f"a 4D image with {header.channels} volumes")
    if header.role == "label" and by_name.named != "concept_mask":
        return replace(by_name, role="label", reason=f"its {reader.name} header marks it as a label map")
    if by_name.role == "unknown" and header.sequence is not None:
        return replace(by_name, role="sequence", sequence=header.sequence,
                     reason=f"its {reader.name} header names the {header.sequence} sequence")
    if depth == "header":
        return by_name
    # What the voxels say.
    try:
        values = label_values(reader.read(path, max_voxels=max_voxels).data)
    except InputError as e:
        return replace(by_name, role="not_scan", reason=e.problem)
    if values is not None and by_name.role not in ("label", "concept_mask"):
        named = f"named like {by_name.sequence} but " if by_name.sequence else ""
        return replace(by_name, role="label", sequence=None,
                     reason=f"{named}holds only the integer values {values}, like a label map")
    if values is None and by_name.role in ("label", "concept_mask"):
        return replace(by_name, role="unknown", concept=None,
                     reason="named like a label map but holds image intensities")
    return by_name


def _by_name(name: str) -> FileClass:
    """The name rules: the last token of the stem names a sequence, a label map, or nothing."""
    stem, _ = split_suffix(name)
    cuts = [m.start() for m in _SEPARATORS.finditer(stem)]
    cut = cuts[-1] if cuts else -1
    case_id, sep, token = (stem[:cut], stem[cut], stem[cut + 1:]) if cut >= 0 else ("", "", stem)
    low = token.lower()
    style: Style = vocab.naming_convention(sep, low) or "other"
    base = FileClass(role="unknown", case_id=case_id, stem=stem, style=style)
    if low in LABEL_TOKENS:
        return replace(base, role="label", named="label")
    try:
        seq = canonical_sequence(token)
    except ValueError:
        seq = None
    if seq is not None:
        return replace(base, role="sequence", named="sequence", sequence=seq)
    if stem in vocab.codes():
        return replace(base, role="concept_mask", named="concept_mask", concept=stem)
    return base


