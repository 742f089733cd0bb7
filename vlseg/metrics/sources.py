"""Find and load the label maps that ``vlseg evaluate`` compares, matched by case id.

A folder given to ``--pred`` or ``--gt`` may hold, per case, any of:

* a label file ``<case>.nii.gz``, ``<case>-seg.nii.gz`` or ``<case>_seg.nii.gz`` (image files
  such as ``<case>-t1c.nii.gz`` beside it are skipped);
* a case folder ``<case>/`` holding one such label file (BraTS layout), or the per-concept masks
  that ``vlseg segment`` writes (``NCR.nii.gz``, ``ET.nii.gz``, ... uint8 0/1).

Everything is validated through :func:`vlseg.io.read_volume` (missing/corrupt/non-NIfTI files,
2D/4D, voxel cap, NaN, bad affine) plus label-specific checks, and brought to RAS+ by axis
permutation only, so a prediction stored in another orientation of the same grid still matches.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

from vlseg.concepts import CONCEPTS, LABEL_CONVENTIONS, labels_to_concepts
from vlseg.errors import InputError
from vlseg.io import DEFAULT_MAX_VOXELS, Grid, parse_name, read_volume
from vlseg.io.layout import is_nifti_name


@dataclass(frozen=True)
class LabelSource:
    """Where one case's labels live: a label map file, or one mask file per concept."""

    case_id: str
    label_file: Path | None = None
    concept_files: dict[str, Path] = field(default_factory=dict)
    style: str = "other"  # "brats2021" for *_seg names, "msd" for labelsTr/, else "other"

    @property
    def where(self) -> str:
        return str(self.label_file or next(iter(self.concept_files.values())).parent)


@dataclass
class LoadedLabels:
    masks: dict[str, np.ndarray]  # concept -> bool (X, Y, Z) in RAS+
    grid: Grid                    # RAS+ grid of the masks
    path: Path                    # a file to name in messages


def _stem(name: str) -> str:
    low = name.lower()
    return name[: -len(".nii.gz")] if low.endswith(".nii.gz") else name[: -len(".nii")]


def _style(path: Path, parsed_style: str | None) -> str:
    if path.parent.name.lower() in ("labelstr", "labelsts"):
        return "msd"
    return "brats2021" if parsed_style == "brats2021" else "other"


def _classify(path: Path) -> tuple[str, str] | None:
    """(case id, style) if ``path`` names a label map; None for images and concept masks."""
    parsed = parse_name(path.name)
    if parsed is not None and parsed.kind != "seg":
        return None  # an image such as <case>-t1c.nii.gz
    if parsed is None and _stem(path.name) in CONCEPTS:
        return None
    case_id = parsed.case_id if parsed is not None and parsed.case_id else _stem(path.name)
    return case_id, _style(path, parsed.style if parsed else None)


def _from_case_folder(folder: Path) -> LabelSource | None:
    niftis = sorted(p for p in folder.iterdir() if p.is_file() and is_nifti_name(p.name)
                    and not p.name.startswith("."))
    # Label files inside a case folder: *-seg/*_seg/*-label, or <folder name>.nii.gz.
    labels = [(p, c[1]) for p in niftis if (c := _classify(p)) is not None
              and (parse_name(p.name) is not None or _stem(p.name) == folder.name)]
    if len(labels) > 1:
        raise InputError(f"holds several label files ({', '.join(p.name for p, _ in labels)}); keep "
                         "one per case folder", str(folder))
    if labels:
        return LabelSource(case_id=folder.name, label_file=labels[0][0], style=labels[0][1])
    concepts = {_stem(p.name): p for p in niftis if _stem(p.name) in CONCEPTS}
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
        if not is_nifti_name(root.name):
            raise InputError(f"{role} must be a folder or a .nii/.nii.gz label file", str(root))
        c = _classify(root)
        case_id, style = c if c is not None else (_stem(root.name), "other")
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
        elif p.is_file() and is_nifti_name(p.name):
            c = _classify(p)
            if c is not None:
                add(LabelSource(case_id=c[0], label_file=p, style=c[1]))
    if not found:
        raise InputError(f"no {role} label files found; expected <case>.nii.gz, <case>-seg.nii.gz, "
                         "or case folders holding a *-seg/*_seg file or NCR/ED/ET/TC/WT masks",
                         str(root))
    return found, skipped


def guess_convention(src: LabelSource) -> str:
    """Label convention implied by the file layout: MSD labelsTr/ -> msd, *_seg -> brats2021."""
    return {"msd": "msd", "brats2021": "brats2021"}.get(src.style, "brats2023")


def _to_ras(data: np.ndarray, grid: Grid) -> tuple[np.ndarray, Grid]:
    ornt = io_orientation(grid.affine)
    ras = np.ascontiguousarray(apply_orientation(data, ornt))
    return ras, Grid(shape=ras.shape[:3], affine=grid.affine @ inv_ornt_aff(ornt, grid.shape))


def _integers(data: np.ndarray, path: Path, allowed: list[int], hint: str) -> np.ndarray:
    lo, hi = float(data.min()), float(data.max())
    values = data.astype(np.uint8) if lo >= 0 and hi <= 255 else None
    if values is None or not np.array_equal(values, data):
        raise InputError(f"holds values from {lo:g} to {hi:g}, not integer labels {allowed}{hint}",
                         str(path))
    return values


def _read_label_map(path: Path, convention: str, option: str, max_voxels: int) -> tuple[np.ndarray, Grid]:
    vol = read_volume(path, max_voxels=max_voxels)
    allowed = sorted({0, *LABEL_CONVENTIONS[convention].values()})
    labels = _integers(vol.data, path, allowed, f" ({convention})")
    present = set(np.flatnonzero(np.bincount(labels.ravel())).tolist())
    bad = sorted(present - set(allowed))
    if bad:
        fits = [c for c, v in LABEL_CONVENTIONS.items() if present <= {0, *v.values()}]
        hint = f"; pass {option} {fits[0]}" if fits else "; is this a label map?"
        raise InputError(f"has label values {bad} outside the {convention} convention {allowed}{hint}",
                         str(path))
    return _to_ras(labels, vol.grid)


def load_labels(src: LabelSource, convention: str, *, option: str,
                max_voxels: int = DEFAULT_MAX_VOXELS) -> LoadedLabels:
    """Read a source into RAS+ concept masks (label maps give all five concepts).

    ``option`` is the CLI flag that sets ``convention`` (named in error hints).
    """
    if src.label_file is not None:
        labels, grid = _read_label_map(src.label_file, convention, option, max_voxels)
        return LoadedLabels(masks=labels_to_concepts(labels, convention), grid=grid, path=src.label_file)
    masks: dict[str, np.ndarray] = {}
    ref: tuple[Grid, Path] | None = None
    for concept, path in src.concept_files.items():
        vol = read_volume(path, max_voxels=max_voxels)
        mask = _integers(vol.data, path, [0, 1], " (a concept mask must be 0/1)")
        if mask.max() > 1:
            raise InputError("is a concept mask but holds values other than 0 and 1", str(path))
        ras, grid = _to_ras(mask.astype(bool), vol.grid)
        if ref is None:
            ref = (grid, path)
        elif (problem := ref[0].mismatch(grid)) is not None:
            raise InputError(f"grid differs from {ref[1].name}: {problem}", str(path))
        masks[concept] = ras
    assert ref is not None
    return LoadedLabels(masks=masks, grid=ref[0], path=ref[1])


def _header_grid(path: Path) -> Grid | None:
    """RAS+ grid from the header alone (no voxel data); None if the header can't be parsed."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        shape = tuple(int(s) for s in img.shape[:3])
        affine = np.asarray(img.affine, dtype=np.float64)
        ornt = io_orientation(affine)
        ras_shape = tuple(int(shape[int(ax)]) for ax in ornt[:, 0])
        return Grid(shape=ras_shape, affine=affine @ inv_ornt_aff(ornt, shape))
    except Exception:  # noqa: BLE001 - full validation happens when the file is read
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
