"""DICOM-SEG out: an answer's masks as one DICOM Segmentation (highdicom) for DICOM input.

The SEG references the series whose grid the masks are on (the case's reference series, the
grid ``write_mask`` writes NIfTI masks on; series on other grids were resampled onto it), carries one segment per answered concept with
SNOMED CT coded concepts, the algorithm's identification (vlseg, version, model sha256), and
copies the source's patient and study modules, as the standard requires for a derived object
of the same study (less what the standard does not require: free-text history and comments,
other IDs, the source site's address, department and station; see ``OPTIONAL_IDENTIFIERS``).
It is written for a case that knows its study (``Case.study``, set when the
case is read) by the answer writer's DICOM-SEG exporter
(``vlseg.segmenter.writer.DicomSeg``), inside the same staged publish as answer.json, which
lists it.

Frames are placed from the reference grid's geometry (a ``highdicom.Volume``), so the SEG and
the NIfTI masks agree voxel for voxel.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from vlseg.io.case import Case
from vlseg.io.dicom_geometry import hd_affine, read_datasets

SEG_FILE = "segmentation.dcm"
PROBABILITY_SEG_FILE = "probabilities.dcm"  # the fractional SEG of --save-probabilities
FRACTION_MAX = 255                          # a fraction's stored value at probability 1
# What a derived object copies from its source that the standard does not require (type 3 in
# the Patient, Patient Study, General Study and Contributing Equipment modules): free text about
# the patient, other IDs, the site's address, department and station. Dropped from the SEG and
# the SR; the type 1/2 patient and study attributes stay (name, ID, birth date, sex, study UID,
# date, time, ID, accession number, referring physician), as PACS matching needs them.
OPTIONAL_IDENTIFIERS: tuple[str, ...] = (
    "PatientComments", "AdditionalPatientHistory", "OtherPatientIDs", "OtherPatientIDsSequence",
    "OtherPatientNames", "PatientAddress", "PatientTelephoneNumbers", "PatientMotherBirthName",
    "MilitaryRank", "BranchOfService", "EthnicGroup", "Occupation", "PatientReligiousPreference",
    "PatientAge", "PatientSize", "PatientWeight", "MedicalAlerts", "Allergies",
    "PregnancyStatus", "SmokingStatus", "PatientState", "ResponsiblePerson",
    "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord", "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers", "AdmittingDiagnosesDescription",
)
EQUIPMENT_IDENTIFIERS: tuple[str, ...] = (
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName",
    "DeviceSerialNumber", "OperatorsName",
)


def drop_optional_identifiers(ds) -> None:
    """Remove from a derived object (SEG, SR) the copied patient and site details the standard
    does not require (:data:`OPTIONAL_IDENTIFIERS`; the source equipment's institution, address,
    department, station and serial number in the contributing-equipment sequence)."""
    for keyword in OPTIONAL_IDENTIFIERS:
        if keyword in ds:
            delattr(ds, keyword)
    for item in ds.get("ContributingEquipmentSequence", []):
        for keyword in EQUIPMENT_IDENTIFIERS:
            if keyword in item:
                delattr(item, keyword)


def _lab(rgb: tuple[int, int, int]):
    import highdicom as hd

    return hd.color.CIELabColor.from_rgb(*[int(v) for v in rgb]) if hasattr(
        hd.color.CIELabColor, "from_rgb") else None


def write_seg(case: Case, masks_ras: Mapping[str, np.ndarray], path: str | os.PathLike, *,
              model: Mapping[str, object], fractional: bool = False) -> Path:
    """Write ``masks_ras`` (concept -> (X, Y, Z) RAS+ 0/1) as a BINARY DICOM-SEG at ``path``,
    referencing the case's reference series (``case.study``: the series whose grid the case is
    on; the other series were resampled onto it). ``fractional``: the arrays are probabilities
    in [0, 1], written as a FRACTIONAL SEG of type PROBABILITY (stored as 0..255)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from vlseg import __version__, vocab

    path = Path(path)
    if not masks_ras:
        raise ValueError("a DICOM-SEG needs at least one mask")
    if case.study is None:
        raise ValueError("a DICOM-SEG needs a case read from a DICOM study (case.study is None)")
    sources = read_datasets(case.study.reference_files, pixels=False)
    if not str(sources[0].get("FrameOfReferenceUID", "") or "").strip():
        raise ValueError("the source series has no Frame of Reference UID (0020,0052), which a "
                         "DICOM-SEG must reference")
    sha = str(model.get("checkpoint_sha256") or "")
    algorithm = hd.AlgorithmIdentificationSequence(
        name="vlseg", family=codes.cid7162.ArtificialIntelligence, version=__version__,
        source="vlseg " + str(model.get("name") or "model"),
        parameters={"model": str(model.get("name") or ""), "model_sha256": sha} if sha else
        {"model": str(model.get("name") or "")})
    descriptions, stacked = [], []
    for number, (concept, mask) in enumerate(masks_ras.items(), start=1):
        spec = vocab.concept(concept)  # its name, colour and SNOMED CT category and type
        color = spec.color
        kwargs = {}
        lab = _lab(color)
        if lab is not None:
            kwargs["display_color"] = lab
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=f"{concept} {spec.name}"[:64],
            segmented_property_category=hd.sr.CodedConcept(*spec.dicom_category),
            segmented_property_type=hd.sr.CodedConcept(*spec.dicom_type),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm, anatomic_regions=[codes.SCT.Brain],
            tracking_uid=hd.UID(), tracking_id=f"vlseg {concept}", **kwargs))
        values = (np.clip(np.asarray(mask, dtype=np.float32), 0.0, 1.0) if fractional
                  else np.asarray(mask).astype(np.uint8))
        src = case.to_source(values)  # (col, row, slice)
        stacked.append(src.transpose(2, 1, 0))  # (slice, row, col)
    array = np.stack(stacked, axis=-1)  # (S, rows, cols, segments)
    if fractional:
        kind = {"segmentation_type": hd.seg.SegmentationTypeValues.FRACTIONAL,
                "fractional_type": hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
                "max_fractional_value": FRACTION_MAX}
        described = ("vlseg probability maps", "vlseg probabilities", 901)
    else:
        array = array.astype(np.uint8)
        kind = {"segmentation_type": hd.seg.SegmentationTypeValues.BINARY}
        described = ("vlseg answer masks", "vlseg segmentation", 900)
    volume = hd.Volume(array=array, affine=hd_affine(case.source_grid), coordinate_system="PATIENT",
                       frame_of_reference_uid=str(sources[0].FrameOfReferenceUID),
                       channels={"SegmentNumber": list(range(1, len(descriptions) + 1))})
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=volume, **kind,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=described[2],
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="vlseg",
        manufacturer_model_name=str(model.get("name") or "vlseg")[:64],
        software_versions=f"vlseg {__version__}", device_serial_number=(sha[:16] or "none"),
        content_label="VLSEG", content_description=described[0][:64],
        series_description=described[1], omit_empty_frames=False)
    drop_optional_identifiers(seg)
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path)
    return path


def read_seg_masks(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Read a vlseg DICOM-SEG back: ``{concept: (slice, row, col)}`` (uint8 0/1; float
    probabilities for a fractional SEG) and the LPS affine of that (slice, row, col) array (for
    tests and checks)."""
    import highdicom as hd

    seg = hd.seg.segread(path)
    fractional = str(seg.SegmentationType) == "FRACTIONAL"
    vol = seg.get_volume(combine_segments=False, allow_missing_positions=True,
                         **({"rescale_fractional": True} if fractional else {}))
    out = {}
    for i, desc in enumerate(seg.SegmentSequence):
        concept = str(desc.SegmentLabel).split(" ")[0]
        arr = np.asarray(vol.array[..., i])
        out[concept] = arr.astype(np.float32) if fractional else arr.astype(np.uint8)
    return out, np.asarray(vol.affine)


__all__ = ["FRACTION_MAX", "PROBABILITY_SEG_FILE", "SEG_FILE", "OPTIONAL_IDENTIFIERS", "drop_optional_identifiers", "write_seg", "read_seg_masks"]
