"""Realistic benchmark cases unlike the phantom generator's defaults, for ``vlseg bench --profile``.

The generator's own case (seed 2024) is stored RAS, upright, with one lesion away from the
midline at 1 mm: the cheapest path through reading and reorienting, and a flattering one. These
cases take the other paths a clinical scan takes, each made with the project's generator
(``vlseg.synth``: its ranges narrowed) or its test-time shifts (``vlseg.synth.shifts``):

* ``default``    the generator's defaults (what ``vlseg bench`` always used);
* ``pose``       the head rotated 20-25 degrees and shifted up to 15 mm in the field of view;
* ``lps``        stored LPS (DICOM's patient axes, what a converter from DICOM often writes);
* ``midline``    one lesion centred 3 mm from the midline (measures the midline crossing);
* ``thick``      5 mm slices along one axis, kept on that coarse grid (anisotropic input);
* ``multifocal`` three lesions (lesion grouping, per-lesion location).

Each is written once into a folder and reused (generation is deterministic per name).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np

from vlseg.synth.params import DEFAULT_RANGES
from vlseg.synth.phantom import case_files, nifti_image, write_case

SEED = 2024
PROFILE_CASES: tuple[str, ...] = ("default", "pose", "lps", "midline", "thick", "multifocal")

_RANGES = {
    "default": DEFAULT_RANGES,
    "pose": dataclasses.replace(DEFAULT_RANGES, rotation_deg=(20.0, 25.0), shift_mm=(-15.0, 15.0),
                                p_non_ras=0.0),
    "lps": dataclasses.replace(DEFAULT_RANGES, p_non_ras=0.0),  # flipped to LPS after generation
    "midline": dataclasses.replace(DEFAULT_RANGES, lesion_centres_mm=((3.0, -5.0, 20.0),), p_non_ras=0.0),
    "thick": dataclasses.replace(DEFAULT_RANGES, p_non_ras=0.0),  # thick slices after generation
    "multifocal": dataclasses.replace(DEFAULT_RANGES, p_multifocal=1.0, n_multifocal=(3, 3), p_small=0.0,
                                      p_non_ras=0.0),
}
_SEQUENCE_KEYS = ("t1n", "t1c", "t2w", "t2f", "seg")


def write_profile_case(out_dir: Path, name: str, *, spacing_mm: float = 1.0) -> Path:
    """Write (once) the case ``name`` of :data:`PROFILE_CASES` under ``out_dir``; its folder."""
    if name not in _RANGES:
        raise ValueError(f"unknown benchmark case {name!r}; one of {', '.join(PROFILE_CASES)}")
    case_id = f"BraTS-BENCH-{name}"
    case_dir = Path(out_dir) / case_id
    files = case_files(case_dir, case_id)
    if all(files[k].exists() for k in _SEQUENCE_KEYS):
        return case_dir
    write_case(out_dir, SEED, case_id=case_id, spacing_mm=spacing_mm, ranges=_RANGES[name])
    if name == "lps":
        _restore(files, _to_lps)
    elif name == "thick":
        _restore(files, _thick)
    return case_dir


def _restore(files: dict[str, Path], change) -> None:
    """Apply ``change({key: array}, affine) -> ({key: array}, affine)`` to a written case."""
    imgs = {k: nib.load(files[k]) for k in _SEQUENCE_KEYS}
    affine = imgs["t1n"].affine
    arrays = {k: np.asarray(img.dataobj) for k, img in imgs.items()}
    arrays, affine = change(arrays, affine)
    for k in _SEQUENCE_KEYS:
        nib.save(nifti_image(np.ascontiguousarray(arrays[k]), affine), files[k])


def _to_lps(arrays: dict[str, np.ndarray], affine: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The same voxels stored with the first two axes reversed (RAS -> LPS), same world space."""
    aff = np.array(affine, dtype=np.float64)
    for ax in (0, 1):
        n = next(iter(arrays.values())).shape[ax]
        aff[:3, 3] += aff[:3, ax] * (n - 1)
        aff[:3, ax] *= -1
        arrays = {k: np.flip(v, ax) for k, v in arrays.items()}
    return arrays, aff


def _thick(arrays: dict[str, np.ndarray], affine: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """5 mm slices (``vlseg.synth.shifts.thick_slices``), ground truth on the same grid."""
    from vlseg.synth.shifts import thick_slices

    images = {k: v for k, v in arrays.items() if k != "seg"}
    out, seg, aff, _ = thick_slices(np.random.default_rng(SEED), images, arrays["seg"], affine)
    return {**out, "seg": seg}, aff


__all__ = ["PROFILE_CASES", "write_profile_case"]
