"""Phantoms as DICOM studies: each sequence of a phantom case written as one MR series.

The test data for the DICOM reader and DICOM-SEG writer, made by the project itself: several
series in one study folder (flat, as a PACS export, or nested one folder per series), with
realistic MR tags (series description, protocol, TR/TE/TI, contrast agent, image type), the
patient/study modules filled with fake identifiers, and a choice of geometry:

* ``orientation="axial"``: standard DICOM axial slices (rows run anterior->posterior, columns
  right->left: LPS voxel order, both in-plane axes flipped against the NIfTI phantom);
* ``orientation="oblique"``: the same voxels in a world rotated by ``tilt_deg`` about two axes;
* ``slice_step=n``: every n-th slice kept (thick slices), with SliceThickness smaller than the
  spacing (a slice gap), so a reader that trusted SliceThickness would get the geometry wrong;
* ``fov_margin=m``: ``m`` voxels cut from each in-plane edge (a smaller field of view, another
  origin), e.g. a 2D FLAIR planned on a tighter box than the 3D T1c beside it;
* ``enhanced=True``: one multi-frame (legacy-converted enhanced MR) file per series.

The voxels are the phantom's own (no resampling), so the reader's geometry can be checked
exactly against the NIfTI phantom. ``vlseg synth --format dicom`` writes studies like these.
"""
from __future__ import annotations

import datetime as _dt
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import nibabel as nib
import numpy as np

from vlseg.vocab import SEQUENCES

# What a scanner writes for each sequence (TR/TE/TI in ms).
_ACQ: dict[str, dict] = {
    "t1n": dict(desc="AX T1 SE PRE", protocol="t1_se_tra", tr=550.0, te=12.0, ti=None, flip=90.0,
                scanning="SE", variant="SK\\SP"),
    "t1c": dict(desc="AX T1 SE POST GD", protocol="t1_se_tra_post", tr=550.0, te=12.0, ti=None,
                flip=90.0, scanning="SE", variant="SK\\SP", agent="GADOBUTROL 1 MMOL/ML"),
    "t2w": dict(desc="AX T2 TSE", protocol="t2_tse_tra", tr=4500.0, te=98.0, ti=None, flip=150.0,
                scanning="SE", variant="SK\\SP"),
    "t2f": dict(desc="AX T2 FLAIR", protocol="t2_tirm_tra_dark-fluid", tr=9000.0, te=85.0,
                ti=2500.0, flip=150.0, scanning="SE\\IR", variant="SK\\SP\\MP"),
}
FAKE_PATIENT: dict[str, str] = {
    "PatientName": "PHANTOM^SYNTHETIC",
    "PatientID": "VLSEG-PHANTOM",
    "PatientBirthDate": "19700101",
    "PatientSex": "O",
    "AccessionNumber": "SYN0001",
    "StudyID": "1",
    "ReferringPhysicianName": "",
    "InstitutionName": "vlseg synthetic phantoms",
}


@dataclass(frozen=True)
class DicomStyle:
    """How a phantom study is written (see the module docstring)."""

    orientation: str = "axial"  # "axial" (LPS voxel order) | "oblique"
    tilt_deg: float = 12.0  # rotation of the oblique world, degrees
    slice_step: int = 1  # keep every n-th slice (thick slices when > 1)
    layout: str = "flat"  # "flat": all files in one folder | "nested": one folder per series
    enhanced: bool = False  # one multi-frame file per series
    descriptions: bool = True  # False: uninformative series descriptions ("SERIES 3")
    gantry_tilt_deg: float = 0.0  # > 0: slices sheared along y (a gantry-tilted CT-like stack)
    fov_margin: int = 0  # voxels cut from each in-plane edge (a smaller field of view)

    def __post_init__(self) -> None:
        if self.orientation not in ("axial", "oblique"):
            raise ValueError(f"orientation must be 'axial' or 'oblique', got {self.orientation!r}")
        if self.layout not in ("flat", "nested"):
            raise ValueError(f"layout must be 'flat' or 'nested', got {self.layout!r}")
        if self.slice_step < 1:
            raise ValueError("slice_step must be >= 1")
        if self.fov_margin < 0:
            raise ValueError("fov_margin must be >= 0")


def _rotation(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(a / 2), -np.sin(a / 2), 0], [np.sin(a / 2), np.cos(a / 2), 0], [0, 0, 1]])
    return rz @ rx


def _lps_frames(data: np.ndarray, affine_ras: np.ndarray, style: DicomStyle
                ) -> tuple[np.ndarray, np.ndarray]:
    """RAS+ volume (X, Y, Z) -> frames (S, rows, cols) and the LPS affine of (col, row, slice)."""
    if style.fov_margin:  # a smaller field of view: the origin moves in by the margin
        m = style.fov_margin
        if 2 * m >= min(data.shape[:2]):
            raise ValueError(f"fov_margin {m} leaves no voxels of {data.shape[:2]}")
        data = data[m:-m, m:-m, :]
        affine_ras = affine_ras @ np.array([[1, 0, 0, m], [0, 1, 0, m], [0, 0, 1, 0], [0, 0, 0, 1]],
                                           dtype=float)
    if style.slice_step > 1:  # thick slices: every n-th slice, centred in its block
        n = style.slice_step
        data = data[:, :, n // 2::n]
        affine_ras = affine_ras @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, n, n // 2],
                                            [0, 0, 0, 1]], dtype=float)
    nx, ny, nz = data.shape
    # Columns run right->left (i reversed), rows anterior->posterior (j reversed).
    flip = np.array([[-1, 0, 0, nx - 1], [0, -1, 0, ny - 1], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    aff = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_ras @ flip  # (col, row, slice) -> LPS
    if style.orientation == "oblique":
        centre = aff @ np.array([(nx - 1) / 2, (ny - 1) / 2, (nz - 1) / 2, 1.0])
        rot = np.eye(4)
        rot[:3, :3] = _rotation(style.tilt_deg)
        rot[:3, 3] = centre[:3] - rot[:3, :3] @ centre[:3]
        aff = rot @ aff
    frames = np.ascontiguousarray(data[::-1, ::-1, :].transpose(2, 1, 0))  # (S, rows, cols)
    return frames, aff


def _uid(*parts: object) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _series_datasets(frames: np.ndarray, aff: np.ndarray, seq: str, number: int, *,
                     study: dict, style: DicomStyle, seed: str):
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

    from pydicom import Dataset

    acq = _ACQ[seq]
    lo, hi = float(frames.min()), float(frames.max())
    slope = (hi - lo) / 4000.0 if hi > lo else 1.0
    stored = np.round((frames - lo) / slope).astype(np.int16)  # (S, rows, cols)
    series_uid = _uid(seed, "series", seq)
    col_mm, row_mm = np.linalg.norm(aff[:3, 0]), np.linalg.norm(aff[:3, 1])
    step_mm = float(np.linalg.norm(aff[:3, 2]))
    iop = list(aff[:3, 0] / col_mm) + list(aff[:3, 1] / row_mm)
    out = []
    order = np.random.default_rng(zlib.crc32(f"{seed}:{seq}".encode())).permutation(len(stored))
    for s in order:  # written in shuffled order: the reader must sort by position
        ipp = aff @ np.array([0.0, 0.0, float(s), 1.0])
        if style.gantry_tilt_deg:
            ipp[1] += float(s) * step_mm * np.tan(np.deg2rad(style.gantry_tilt_deg))
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        sop_uid = _uid(seed, seq, "sop", int(s))
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, sop_uid
        for k, v in study.items():
            setattr(ds, k, v)
        ds.Modality = "MR"
        ds.Manufacturer = "vlseg"
        ds.ManufacturerModelName = "synthetic phantom"
        ds.MagneticFieldStrength = 3.0
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = number
        ds.SeriesDescription = acq["desc"] if style.descriptions else f"SERIES {number}"
        ds.ProtocolName = acq["protocol"] if style.descriptions else f"PROTOCOL {number}"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NORM"]
        ds.ScanningSequence, ds.SequenceVariant = acq["scanning"], acq["variant"]
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime, ds.EchoTime, ds.FlipAngle = acq["tr"], acq["te"], acq["flip"]
        if acq["ti"] is not None:
            ds.InversionTime = acq["ti"]
        if acq.get("agent"):
            ds.ContrastBolusAgent = acq["agent"]
            ds.ContrastBolusVolume = 7.5
        ds.InstanceNumber = int(s) + 1
        ds.ImagePositionPatient = [round(float(v), 6) for v in ipp[:3]]
        ds.ImageOrientationPatient = [round(float(v), 8) for v in iop]
        ds.PixelSpacing = [round(float(row_mm), 6), round(float(col_mm), 6)]  # row, column spacing
        ds.SliceThickness = round(step_mm * (0.8 if style.slice_step > 1 else 1.0), 6)
        ds.SpacingBetweenSlices = round(step_mm, 6)
        ds.SliceLocation = round(float(ipp[2]), 6)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = int(stored.shape[1]), int(stored.shape[2])
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = round(lo, 6), repr(float(slope))[:16], "US"
        ds.WindowCenter, ds.WindowWidth = 2000, 4000
        ds.PixelData = stored[s].tobytes()
        out.append(ds)
    return out


def write_dicom_study(case: str | os.PathLike | Mapping[str, nib.Nifti1Image], out_dir: str | os.PathLike,
                      *, style: DicomStyle = DicomStyle(), patient: Mapping[str, str] | None = None,
                      sequences: tuple[str, ...] = SEQUENCES, seed: str = "0",
                      study_seed: str | None = None, first_number: int = 2) -> Path:
    """Write the sequences of a phantom case (a folder from :func:`vlseg.synth.write_case`, or a
    mapping sequence -> NIfTI image) as one DICOM study into ``out_dir``; return ``out_dir``.

    ``patient`` overrides the fake patient/study identifiers (e.g. to test that none leak).
    ``study_seed`` (default ``seed``) makes the study and frame-of-reference UIDs, so a second
    call with the same ``study_seed`` adds series to the same study; ``first_number`` is the
    first series number.
    """
    from pydicom import dcmwrite

    images = _load_case(case, sequences)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime(2024, 5, 17, 9, 30, 0)
    study = dict(FAKE_PATIENT)
    study.update(patient or {})
    study_seed = seed if study_seed is None else study_seed
    study.update(StudyInstanceUID=_uid(study_seed, "study"), FrameOfReferenceUID=_uid(study_seed, "for"),
                 StudyDate=now.strftime("%Y%m%d"), StudyTime=now.strftime("%H%M%S"),
                 SeriesDate=now.strftime("%Y%m%d"), StudyDescription="MRI BRAIN W/WO CONTRAST",
                 BodyPartExamined="BRAIN", PatientPosition="HFS")
    for number, seq in enumerate((s for s in SEQUENCES if s in images), start=first_number):
        img = images[seq]
        frames, aff = _lps_frames(np.asarray(img.get_fdata(dtype=np.float32)), img.affine, style)
        datasets = _series_datasets(frames, aff, seq, number, study=study, style=style, seed=seed)
        folder = out / f"SE{number:04d}" if style.layout == "nested" else out
        folder.mkdir(parents=True, exist_ok=True)
        if style.enhanced:
            from highdicom.legacy import LegacyConvertedEnhancedMRImage

            mf = LegacyConvertedEnhancedMRImage(
                legacy_datasets=datasets, series_instance_uid=_uid(seed, "mf-series", seq),
                series_number=number, sop_instance_uid=_uid(seed, "mf", seq), instance_number=1)
            mf.SeriesDescription = datasets[0].SeriesDescription
            mf.ProtocolName = datasets[0].ProtocolName
            dcmwrite(folder / f"MR{number:04d}.dcm", mf, enforce_file_format=True)
            continue
        for ds in datasets:
            # Scanner-style names: no suffix in a flat export, .dcm when nested.
            name = f"IM{number:02d}{ds.InstanceNumber:04d}" + (".dcm" if style.layout == "nested" else "")
            ds.save_as(folder / name, enforce_file_format=True)
    return out


def _load_case(case, sequences: tuple[str, ...]) -> dict[str, nib.Nifti1Image]:
    if isinstance(case, Mapping):
        return {s: case[s] for s in sequences if s in case}
    folder = Path(case)
    found = {}
    for s in sequences:
        hits = sorted(folder.glob(f"*-{s}.nii.gz"))
        if hits:
            found[s] = nib.load(hits[0])
    if not found:
        raise FileNotFoundError(f"{folder} holds no phantom sequence files (*-t1n.nii.gz ...)")
    return found




_DONE = ".vlseg-synth-complete"  # hidden: readers skip it


def write_dicom_case(out: Path, name: str, seed: int, *, spacing_mm: float = 1.0, layout: str = "flat",
                     oblique: bool = False, slice_step: int = 1, enhanced: bool = False,
                     timepoint: str = "pre", healthy: bool = False) -> tuple[Path, bool]:
    """``vlseg synth --format dicom``: phantom ``seed`` as the DICOM study ``out/name``; returns
    (folder, already complete). The phantom's images go straight to the study (no NIfTI files)."""
    import shutil

    from vlseg.synth.phantom import generate_case

    study = out / name
    if (study / _DONE).exists():
        return study, True
    if study.exists():
        shutil.rmtree(study)  # an interrupted study: written again from the start
    style = DicomStyle(orientation="oblique" if oblique else "axial", slice_step=slice_step,
                       layout=layout, enhanced=enhanced)
    write_dicom_study(generate_case(seed, spacing_mm=spacing_mm, timepoint=timepoint, healthy=healthy), study, style=style, seed=f"{name}:{seed}",
                      patient={"PatientID": name, "StudyID": name[-8:]})
    (study / _DONE).write_text("")
    return study, False


__all__ = ["DicomStyle", "FAKE_PATIENT", "write_dicom_study", "write_dicom_case"]
