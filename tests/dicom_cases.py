"""Small DICOM studies for the DICOM and MCP tests, made from the project's own phantoms.

``phantom_images`` crops the 2 mm phantom to 40 slices around its tumor (80 mm field of view,
fast to write and read); ``study`` writes them as a DICOM study in a given style.
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
