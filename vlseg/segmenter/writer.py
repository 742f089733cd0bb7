"""The answer writer: the only code that knows an answer folder's layout.

``answer.json`` plus one file per exporter: a ``<CONCEPT>.nii.gz`` per target in the input's own
grid (:class:`NiftiMasks`), for a case read from a DICOM study one DICOM Segmentation
(:class:`DicomSeg`) and beside it a DICOM SR TID 1500 measurement report (:class:`DicomSr`),
when asked per-voxel probability and uncertainty maps (:class:`Probabilities`), and when asked one label map ``labels.nii.gz`` in a label convention
(:class:`LabelMap`, e.g. BraTS 2024: 1 NETC, 2 SNFH, 3 ET, 4 resection cavity; see
:func:`exporters`). Everything is staged first and published with answer.json last
(``vlseg.fileio.staged_folder``); files an earlier answer.json listed there are removed, nothing
else is touched, and an interrupted write never leaves an answer.json that disagrees with the
files beside it.

    write_answer("out/", answer.to_json(), AnswerFiles(case=case, masks_ras=masks, model=info))
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Protocol

import numpy as np

from vlseg.errors import InputError, one_line
from vlseg.fileio import staged_folder, write_json_atomic
from vlseg import vocab
from vlseg.io import Case, write_label_map, write_map, write_mask
from vlseg.io.dicom_seg import FRACTION_MAX, PROBABILITY_SEG_FILE, SEG_FILE, write_seg
from vlseg.reasoning.case_facts import Json
from vlseg.segmenter.report_sr import SR_FILE, SegmentMeasurement, write_sr

ANSWER_FILE = "answer.json"
LABELS_FILE = "labels.nii.gz"


@dataclass(frozen=True)
class AnswerFiles:
    """What the exporters write from: the case (its grid and source) and the RAS+ masks."""

    case: Case
    masks_ras: Mapping[str, np.ndarray]  # concept -> uint8 (X, Y, Z) RAS+ of the case
    model: Mapping[str, Json]  # answer.json's provenance, for the files that carry it
    # The answer's measurements, one per mask in the same order (the SR report's values).
    measurements: tuple[SegmentMeasurement, ...] = ()
    confidence: float | None = None  # the volume intervals' confidence level
    # concept -> calibrated float32 (X, Y, Z) RAS+ probability (for ``Probabilities``)
    probabilities_ras: Mapping[str, np.ndarray] = field(default_factory=dict)


class Exporter(Protocol):
    """One output format: writes its files into the staging folder, returns what answer.json adds."""

    def names(self, files: AnswerFiles) -> list[str]:
        """The file names it will write (checked against the case's inputs first)."""
        ...

    def write(self, files: AnswerFiles, stage: Path) -> dict[str, Json]:
        ...


class NiftiMasks:
    """One ``<CONCEPT>.nii.gz`` per mask: uint8 0/1 on the input's own grid, clean header."""

    def names(self, files: AnswerFiles) -> list[str]:
        return [f"{c}.nii.gz" for c in files.masks_ras]

    def write(self, files: AnswerFiles, stage: Path) -> dict[str, Json]:
        for concept, name in zip(files.masks_ras, self.names(files)):
            write_mask(files.masks_ras[concept], files.case, stage / name)
        return {}


class DicomSeg:
    """For a case read from a study (``case.study``): one DICOM-SEG referencing the study's
    reference series, and answer.json's ``dicom`` (the grid's series) and ``dicom_seg`` entries."""

    def names(self, files: AnswerFiles) -> list[str]:
        return [SEG_FILE] if files.masks_ras and files.case.study is not None else []

    def write(self, files: AnswerFiles, stage: Path) -> dict[str, Json]:
        study = files.case.study
        if study is None:
            return {}
        out: dict[str, Json] = {"dicom": {"reference": study.reference,
                                          "resampled": list(study.resampled)}}
        if files.masks_ras:
            write_seg(files.case, files.masks_ras, stage / SEG_FILE, model=files.model)
            out["dicom_seg"] = {"file": SEG_FILE, "segments": list(files.masks_ras),
                                "references": study.reference}
        return out


class DicomSr:
    """Beside the DICOM-SEG: a DICOM SR TID 1500 measurement report (``measurements.dcm``), one
    measurement group per segment referencing it, and answer.json's ``dicom_sr`` entry. Runs
    after :class:`DicomSeg` (it reads the SEG that exporter staged); without the SEG it fails,
    which the writer reports as a warning."""

    def names(self, files: AnswerFiles) -> list[str]:
        return [SR_FILE] if files.masks_ras and files.case.study is not None else []

    def write(self, files: AnswerFiles, stage: Path) -> dict[str, Json]:
        if not self.names(files):
            return {}
        if not (stage / SEG_FILE).is_file():
            raise ValueError(f"no {SEG_FILE} to reference")
        if [s.measurement.concept for s in files.measurements] != list(files.masks_ras):
            raise ValueError("the measurements are not those of the masks")
        write_sr(stage / SEG_FILE, files.measurements, stage / SR_FILE,
                 source_files=files.case.study.reference_files,  # type: ignore[union-attr]
                 model=files.model, confidence=files.confidence)
        return {"dicom_sr": {"file": SR_FILE, "template": "TID 1500", "references": SEG_FILE,
                             "segments": list(files.masks_ras)}}


class Probabilities:
    """Per answered concept ``<CONCEPT>_probability.nii.gz`` (the calibrated probability that a
    voxel belongs to it, float32 on the input's own grid) and ``<CONCEPT>_uncertainty.nii.gz``
    (its binary entropy in bits: 0 certain, 1 at p = 0.5), and answer.json's ``probabilities``."""

    def names(self, files: AnswerFiles) -> list[str]:
        return [f"{c}_{kind}.nii.gz" for c in files.probabilities_ras
                for kind in ("probability", "uncertainty")]

    def write(self, files: AnswerFiles, stage: Path) -> dict[str, Json]:
        listed: dict[str, Json] = {}
        for concept, p in files.probabilities_ras.items():
            p = np.clip(np.asarray(p, dtype=np.float32), 0.0, 1.0)
            write_map(p, files.case, stage / f"{concept}_probability.nii.gz")
            write_map(binary_entropy(p), files.case, stage / f"{concept}_uncertainty.nii.gz")
            listed[concept] = {"probability": f"{concept}_probability.nii.gz",
                               "uncertainty": f"{concept}_uncertainty.nii.gz"}
        if not listed:
            return {}
        return {"probabilities": {
            "files": listed, "dtype": "float32", "grid": "the input's own grid (as the masks)",
            "probability": "calibrated probability (the calibration's temperature scaling) that "
                           "the voxel belongs to the concept; the mask is p >= 0.5 with lesions "
                           "below the minimum size removed, so a few voxels may differ",
            "uncertainty": "binary entropy of that probability in bits: 0 certain, 1 at p = 0.5"}}


class ProbabilitySeg:
    """For a case read from a study, beside :class:`Probabilities`: the same calibrated
    probabilities as one FRACTIONAL DICOM-SEG (type PROBABILITY, one segment per concept,
    referencing the study's reference series like the binary SEG), and answer.json's
    ``dicom_probability_seg`` entry. Its failure is a warning that leaves the NIfTI maps."""

    def names(self, files: AnswerFiles) -> list[str]:
        return [PROBABILITY_SEG_FILE] if files.probabilities_ras and files.case.study is not None else []

    def write(self, files: AnswerFiles, stage: Path) -> dict[str, Json]:
        if not self.names(files):
            return {}
        write_seg(files.case, files.probabilities_ras, stage / PROBABILITY_SEG_FILE, model=files.model,
                  fractional=True)
        return {"dicom_probability_seg": {
            "file": PROBABILITY_SEG_FILE, "segments": list(files.probabilities_ras),
            "segmentation_type": "FRACTIONAL", "fractional_type": "PROBABILITY",
            "max_fractional_value": FRACTION_MAX, "references": files.case.study.reference}}  # type: ignore[union-attr]


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """Per-voxel binary entropy in bits of probabilities ``p`` (0 at p in {0, 1}, 1 at 0.5)."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return np.where(h < 1e-9, 0.0, h).astype(np.float32)


class LabelMap:
    """One ``labels.nii.gz``: the masks painted into one label map in ``convention`` on the input's
    own grid (inner classes win: ET over NCR over ED), and answer.json's ``label_map`` entry. A
    target the convention has no value for (the cavity in BraTS 2023) is left out and listed."""

    def __init__(self, convention: str) -> None:
        self.convention = vocab.convention(convention).name  # ValueError naming the valid ones

    def names(self, files: AnswerFiles) -> list[str]:
        return [LABELS_FILE] if files.masks_ras else []

    def write(self, files: AnswerFiles, stage: Path) -> dict[str, Json]:
        if not files.masks_ras:
            return {}
        values = vocab.label_convention(self.convention)
        write_label_map(files.masks_ras, files.case, stage / LABELS_FILE, self.convention)
        conv = vocab.convention(self.convention)
        left_out = [c for c in files.masks_ras if not set(vocab.concept(c).parts) & set(values)]
        return {"label_map": {"file": LABELS_FILE, "convention": self.convention,
                              "labels": {conv.region_name(c): v for c, v in values.items()},
                              "left_out": left_out}}


EXPORTERS: tuple[Exporter, ...] = (NiftiMasks(), DicomSeg(), DicomSr())


def exporters(label_convention: str | None = None, *, probabilities: bool = False) -> tuple[Exporter, ...]:
    """The default exporters, plus a :class:`LabelMap` in ``label_convention`` when given and
    :class:`Probabilities` (with :class:`ProbabilitySeg` for a DICOM study) when asked."""
    return (EXPORTERS + ((LabelMap(label_convention),) if label_convention else ())
            + ((Probabilities(), ProbabilitySeg()) if probabilities else ()))


def write_answer(out_dir: str | Path, doc: Mapping[str, Json], files: AnswerFiles | None, *,
                 exporters: tuple[Exporter, ...] = EXPORTERS) -> Path:
    """Publish ``doc`` as ``out_dir/answer.json`` with what each exporter writes from ``files``
    (None: answer.json alone); returns the answer.json path."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError("is a file, not a folder; answers are saved into a folder", str(out))
    if files is not None:
        inputs = {Path(p).resolve() for p in files.case.sources.values()}
        clash = [n for e in exporters for n in e.names(files) if (out / n).resolve() in inputs]
        if clash:
            raise InputError(f"{clash[0]} there is one of the case's input files; choose "
                             "another output folder", str(out))
    with staged_folder(out, manifest=ANSWER_FILE, previous=_listed_files(out / ANSWER_FILE)) as stage:
        extras: dict[str, Json] = {}
        failed: list[str] = []
        for exporter in exporters if files is not None else ():
            try:
                extras.update(exporter.write(files, stage))
            except Exception as e:  # noqa: BLE001 - one format failing never loses the others
                if isinstance(exporter, NiftiMasks):
                    raise  # the masks are the answer: without them nothing is published
                failed.append(_exporter_failed(exporter, files, stage, e))
        if failed:
            extras["warnings"] = [*doc.get("warnings", []), *failed]  # type: ignore[misc]
        write_json_atomic(stage / ANSWER_FILE, {**doc, **extras})
    return out / ANSWER_FILE


def _exporter_failed(exporter: Exporter, files: AnswerFiles, stage: Path, error: Exception) -> str:
    """Remove what a failed exporter staged; the warning answer.json carries instead."""
    names = exporter.names(files)
    for name in names:
        (stage / name).unlink(missing_ok=True)
    msg = one_line(error, typed=True, limit=160)
    return (f"{' and '.join(names) or type(exporter).__name__} could not be written ({msg}); "
            "the masks and answer.json were written.")


def _listed_files(answer_json: Path) -> list[str]:
    """File names an earlier answer.json in the folder lists (none if unreadable)."""
    try:
        doc = json.loads(answer_json.read_text())
        extra = [str(doc[k]["file"]) for k in ("dicom_seg", "dicom_sr", "dicom_probability_seg", "label_map")
                 if isinstance(doc.get(k), dict)]
        maps = doc.get("probabilities", {}).get("files", {}) if isinstance(doc.get("probabilities"), dict) else {}
        extra += [str(f) for m in maps.values() if isinstance(m, dict) for f in m.values()]
        return [str(t["mask"]) for t in doc.get("targets", []) if isinstance(t, dict) and t.get("mask")] + extra
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return []


__all__ = ["ANSWER_FILE", "LABELS_FILE", "SR_FILE", "AnswerFiles", "Exporter", "NiftiMasks", "DicomSeg",
           "DicomSr", "Probabilities", "ProbabilitySeg", "binary_entropy", "LabelMap",
           "EXPORTERS", "exporters", "write_answer"]
