"""DICOM SR out: an answer's measurements as a TID 1500 Measurement Report beside its DICOM-SEG.

Built with highdicom's structured-reporting classes (``Comprehensive3DSR`` holding a
``MeasurementReport``): one volumetric measurement group (TID 1411) per segment of the SEG, each
referencing its segment (``ReferencedSegment``) and carrying

* the volume in mL, its calibrated interval as lower/upper measurement uncertainty (the
  interval's confidence level is stated in the algorithm's parameters and the group's session),
* the maximum and perpendicular axial diameters in mm (where a lesion exists),
* the lesion count,
* hemisphere (laterality) and involved lobes as qualitative evaluations (SNOMED CT codes from
  ``vlseg.vocab.places``), when an atlas registration placed the target,
* the algorithm identification: name, version, model name and weights sha256.

The values are the answer's own measurements (``TargetMeasurement``) and intervals, so the SR
says what answer.json and the answer text say. Written by the answer writer's ``DicomSr``
exporter from the SEG it staged just before.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from vlseg import __version__, vocab
from vlseg.io.dicom_geometry import read_datasets
from vlseg.io.dicom_seg import drop_optional_identifiers
from vlseg.reasoning import TargetMeasurement
from vlseg.vocab.places import HEMISPHERE_CODES, LOBE_CODES

SR_FILE = "measurements.dcm"
ML = ("mL", "UCUM", "milliliter")
MM = ("mm", "UCUM", "millimeter")
LESIONS = ("{lesions}", "UCUM", "lesions")


@dataclass(frozen=True)
class SegmentMeasurement:
    """One segment's measurement and its calibrated volume interval (None: not calibrated)."""

    measurement: TargetMeasurement
    volume_interval_ml: tuple[float, float] | None = None


def write_sr(seg_path: str | os.PathLike, segments: Sequence[SegmentMeasurement], path: str | os.PathLike,
             *, source_files: Sequence[Path], model: Mapping[str, object],
             confidence: float | None) -> Path:
    """Write a TID 1500 measurement report at ``path`` whose groups reference the segments of
    the DICOM-SEG at ``seg_path`` in order (segment ``i + 1`` is ``segments[i]``);
    ``source_files``: the series the SEG was derived from (the report's evidence with it)."""
    import highdicom as hd
    from pydicom import dcmread
    from pydicom.sr.codedict import codes

    seg = dcmread(seg_path)
    labels = [str(item.SegmentLabel).split(" ")[0] for item in seg.SegmentSequence]
    if labels != [s.measurement.concept for s in segments]:
        raise ValueError(f"the SEG's segments {labels} are not the measured targets "
                         f"{[s.measurement.concept for s in segments]}")
    sha = str(model.get("checkpoint_sha256") or "")
    params = [f"model={model.get('name') or ''}", f"weights_sha256={sha or 'none'}"]
    if confidence is not None:
        params.append(f"volume_interval_confidence={confidence:g}")
    algorithm = hd.sr.AlgorithmIdentification(name="vlseg", version=__version__, parameters=params)
    session = (f"volume intervals at {confidence:.0%} confidence" if confidence is not None
               else "volume intervals not calibrated")
    groups = []
    for number, item in enumerate(segments, start=1):
        m = item.measurement
        spec = vocab.concept(m.concept)
        measured = [_measurement(codes.SCT.Volume, m.volume_ml, ML, algorithm,
                                 interval=item.volume_interval_ml)]
        if m.max_diameter_mm is not None:
            measured.append(_measurement(codes.SCT.LongAxis, m.max_diameter_mm, MM, algorithm))
        if m.perpendicular_diameter_mm is not None:
            measured.append(_measurement(codes.SCT.PerpendicularAxis, m.perpendicular_diameter_mm,
                                         MM, algorithm))
        measured.append(_measurement(codes.SCT.NumberOfLesions, m.n_lesions, LESIONS, algorithm))
        qualitative = []
        if m.present and m.hemisphere in HEMISPHERE_CODES:
            qualitative.append(hd.sr.QualitativeEvaluation(
                name=codes.SCT.Laterality, value=hd.sr.CodedConcept(*HEMISPHERE_CODES[m.hemisphere])))
        sites = [hd.sr.FindingSite(anatomic_location=hd.sr.CodedConcept(*LOBE_CODES[lobe]))
                 for lobe in (m.lobes if m.present else ()) if lobe in LOBE_CODES]
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"vlseg {m.concept}"),
            # Built from the SEG's header (from_segmentation needs per-frame segment
            # identification, which a one-segment SEG keeps in its shared groups).
            referenced_segment=hd.sr.ReferencedSegment(
                sop_class_uid=str(seg.SOPClassUID), sop_instance_uid=str(seg.SOPInstanceUID),
                segment_number=number, source_series=hd.sr.SourceSeriesForSegmentation(
                    str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID))),
            finding_type=hd.sr.CodedConcept(*spec.dicom_type), algorithm_id=algorithm,
            finding_sites=sites or None, session=session, measurements=measured,
            qualitative_evaluations=qualitative or None))
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="vlseg", manufacturer_name="vlseg",
            model_name=str(model.get("name") or "vlseg")[:64]))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.LN.BrainMRI, imaging_measurements=groups,
        title=codes.DCM.ImagingMeasurementReport)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[seg, *read_datasets(source_files, pixels=False)], content=report[0], series_instance_uid=hd.UID(), series_number=901,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="vlseg",
        series_description="vlseg measurements", is_complete=True, is_final=False,
        is_verified=False)
    drop_optional_identifiers(sr)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sr.save_as(path)
    return path


def _measurement(name, value: float, unit: tuple[str, str, str], algorithm, *,
                 interval: tuple[float, float] | None = None):
    import highdicom as hd

    properties = None
    if interval is not None:
        lo, hi = interval
        properties = hd.sr.MeasurementProperties(
            lower_measurement_uncertainty=max(0.0, float(value) - float(lo)),
            upper_measurement_uncertainty=max(0.0, float(hi) - float(value)))
    return hd.sr.Measurement(name=name, value=float(value), unit=hd.sr.CodedConcept(*unit),
                             algorithm_id=algorithm, properties=properties)


def read_sr_measurements(path: str | os.PathLike) -> dict[str, dict[str, object]]:
    """A vlseg measurement report read back: ``{tracking id: {measurement name: value, ...,
    "segment": referenced segment number, "sites": [...], "laterality": ...}}`` (tests, checks)."""
    import highdicom as hd

    sr = hd.sr.srread(path)
    out: dict[str, dict[str, object]] = {}
    for group in sr.content.get_volumetric_roi_measurement_groups():
        ref = group.referenced_segment
        entry: dict[str, object] = {"segment": int(ref.referenced_segment_numbers[0]),
                                    "seg_uid": str(ref.referenced_sop_instance_uid)}
        for m in group.get_measurements():
            entry[m.name.meaning] = float(m.value)
            lo_hi = _uncertainty(getattr(m[0], "ContentSequence", []))
            if lo_hi != (None, None):
                entry[f"{m.name.meaning} uncertainty"] = lo_hi
        for q in group.get_qualitative_evaluations():
            entry[q.name.meaning] = q.value.meaning
        entry["sites"] = [s.value.meaning for s in group.finding_sites]
        out[group.tracking_identifier] = entry
    return out


def _uncertainty(props) -> tuple[float | None, float | None]:
    lo = hi = None
    for item in props:
        name = item.ConceptNameCodeSequence[0].CodeMeaning.lower()
        if "uncertainty" not in name or "MeasuredValueSequence" not in item:
            continue
        if "lower" in name:
            lo = float(item.MeasuredValueSequence[0].NumericValue)
        elif "upper" in name:
            hi = float(item.MeasuredValueSequence[0].NumericValue)
    return lo, hi


__all__ = ["SR_FILE", "SegmentMeasurement", "write_sr", "read_sr_measurements"]
