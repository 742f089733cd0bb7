"""Small DICOM studies for the DICOM and MCP tests, made from the project's own phantoms.

``phantom_images`` crops the 2 mm phantom to 40 slices around its tumor (80 mm field of view,
fast to write and read); ``study`` writes them as a DICOM study in a given style;
``mixed_grid_study`` writes a scanner-like study whose series are on different grids.
"""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from vlseg.synth.dicom import DicomStyle, write_dicom_study

N_SLICES = 40
FILLED_TAGS = {  # a study whose identifying tags are filled: none may leak anywhere
    "PatientName": "DOE^JANE^Q", "PatientID": "MRN-4455667", "PatientBirthDate": "19630412",
    "AccessionNumber": "ACC-99887766", "OtherPatientIDs": "ALT-5566778",
    "InstitutionName": "Saint Example Hospital", "ReferringPhysicianName": "HOUSE^GREGORY",
}
PHI_STRINGS = ("DOE", "JANE", "MRN-4455667", "4455667", "19630412", "1963", "ACC-99887766",
               "99887766", "ALT-5566778", "Saint Example", "HOUSE", "GREGORY")


def phantom_images(case_dir: Path) -> dict[str, nib.Nifti1Image]:
    """sequence/"seg" -> NIfTI image, cropped to N_SLICES slices around the tumor."""
    name = case_dir.name
    seg = nib.load(case_dir / f"{name}-seg.nii.gz")
    z = np.nonzero(np.asarray(seg.dataobj).any(axis=(0, 1)))[0]
    z0 = int(np.clip((z.min() + z.max()) // 2 - N_SLICES // 2, 0, seg.shape[2] - N_SLICES))
    out = {}
    for key in ("t1n", "t1c", "t2w", "t2f", "seg"):
        img = nib.load(case_dir / f"{name}-{key}.nii.gz")
        out[key] = img.slicer[:, :, z0:z0 + N_SLICES]
    return out


def study(images, folder: Path, *, seed: str, patient=None, sequences=("t1n", "t1c", "t2w", "t2f"),
          study_seed=None, first_number=2, **style) -> Path:
    return write_dicom_study({k: v for k, v in images.items() if k != "seg"}, folder,
                             style=DicomStyle(**style), patient=patient, sequences=tuple(sequences),
                             seed=seed, study_seed=study_seed, first_number=first_number)


def to_1mm(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """A 2 mm phantom image linearly upsampled to 1 mm over the same extent."""
    from nibabel.processing import resample_from_to

    aff = img.affine.copy()
    aff[:3, :3] = np.diag([1.0, 1.0, 1.0])
    aff[:3, 3] -= 0.5
    return resample_from_to(img, (tuple(2 * n for n in img.shape), aff), order=1)


T1C_MARGIN, FLAIR_STEP = 30, 5


def mixed_grid_study(images, folder: Path, *, seed: str = "mixed", **kw) -> tuple[Path, dict]:
    """One study, as a scanner exports it: a 3D 1 mm T1c on a 180 mm field of view, a 2D axial
    FLAIR with 5 mm slices on the full 240 mm field of view, and T1/T2 at 2 mm. Returns the
    folder and the 1 mm NIfTI images the T1c and FLAIR series were written from."""
    fine = {s: to_1mm(images[s]) for s in ("t1c", "t2f")}
    study({"t1c": fine["t1c"]}, folder, seed=f"{seed}-t1c", sequences=("t1c",), study_seed=seed,
          first_number=2, fov_margin=T1C_MARGIN, **kw)
    study({"t2f": fine["t2f"]}, folder, seed=f"{seed}-t2f", sequences=("t2f",), study_seed=seed,
          first_number=3, slice_step=FLAIR_STEP, **kw)
    study(images, folder, seed=f"{seed}-2mm", sequences=("t1n", "t2w"), study_seed=seed,
          first_number=4, **kw)
    return folder, fine
