"""One answer: its text, masks, measurements and provenance; ``to_json`` is answer.json.

An :class:`Answer` is data: the dialogue makes it, the answer writer (``vlseg.segmenter.writer``)
puts it on disk, and ``Answer.save`` is the one-call way to do that.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import numpy as np

from vlseg.io import Case
from vlseg.language import Parse
from vlseg.reasoning import DISCLAIMER, Relations, TargetMeasurement, relations_to_json
from vlseg.reasoning.calibration import apply_temperature
from vlseg.reasoning.case_facts import Json, answer_fields
from vlseg.segmenter.report_sr import SegmentMeasurement
from vlseg.segmenter.writer import AnswerFiles, exporters, write_answer

JsonObject = dict[str, Json]


class ModelInfo(TypedDict, total=False):
    """answer.json's ``model``: which weights answered, and the library versions."""

    name: str
    checkpoint: str | None  # the full (base) checkpoint
    checkpoint_sha256: str | None
    base: JsonObject | None  # {"checkpoint", "sha256"}
    adapter: JsonObject | None  # {"name", "sha256", "rank", "parameters"} of a LoRA adapter
    refiner: JsonObject | None  # {"name", "sha256"} of the refinement stage that answered (None: none)
    stages: list[str]  # the stages this model answers with: ["first"] or ["first", "refine"]
    text_encoder: str
    spacing_mm: float
    versions: dict[str, str]  # vlseg, torch, python


@dataclass
class Answer:
    """One answer: text, per-target masks and measurements, provenance. ``to_json`` is answer.json."""

    query: str
    text: str
    refused: bool
    intent: str
    targets: list[JsonObject]  # answer.json's rounded target entries
    masks: dict[str, np.ndarray]  # concept -> uint8 (X, Y, Z) in the input file's own voxel order
    masks_ras: dict[str, np.ndarray]  # concept -> uint8 in RAS+ order of the case (for display)
    relations: Relations | None
    sequences_used: list[str]
    model: ModelInfo
    timing_s: dict[str, float]
    case_id: str | None = None
    warnings: list[str] = field(default_factory=list)  # about the scan: thick slices, not a brain
    parse: Parse | None = None
    measurements: list[TargetMeasurement] = field(default_factory=list)
    case_facts: JsonObject = field(default_factory=dict)  # e.g. midline shift, when asked
    relations_json: JsonObject | None = None  # relations with their intervals, as answered
    confidence: float | None = None  # the intervals' confidence level (measured answers)
    calibration: JsonObject | None = None  # how the intervals were calibrated
    timepoint: JsonObject | None = None  # {"asked", "assumed", "reason"}: pre- or post-treatment
    presence: JsonObject | None = None  # {"calibrated", "probability": {concept: P(present)}}
    refinement: JsonObject | None = None  # what the refinement stage did for the case (None: no refiner)
    case: Case | None = field(default=None, repr=False, compare=False)  # what the masks are of
    # concept -> the predictor's probability in RAS+ order of the case (by reference; None: ruled
    # out by the time point) and the calibration's temperature: probability maps, when saved
    probabilities_ras: dict[str, np.ndarray | None] = field(default_factory=dict, repr=False,
                                                          compare=False)
    temperatures: dict[str, float] = field(default_factory=dict, repr=False, compare=False)

    def to_json(self) -> JsonObject:
        out: JsonObject = {
            "query": self.query,
            "text": self.text,
            "refused": self.refused,
            "intent": self.intent,
            "intents": list(self.parse.intents) if self.parse is not None else [self.intent],
            # What a follow-up took from the previous question (None: all from its own words).
            "resolved_from_context": (self.parse.context.to_json()
                                      if self.parse is not None and self.parse.context else None),
            "targets": [dict(t) for t in self.targets],
            "relations": (self.relations_json if self.relations_json is not None
                          else relations_to_json(self.relations)),
            "sequences_used": list(self.sequences_used),
            "warnings": list(self.warnings),
            "model": dict(self.model),
            "timing_s": {k: round(v, 4) for k, v in self.timing_s.items()},
            "disclaimer": DISCLAIMER,
        }
        out.update(answer_fields(self.case_facts))
        if self.timepoint is not None:
            out["timepoint"] = dict(self.timepoint)
        if self.presence is not None:
            out["presence"] = dict(self.presence)
        if self.refinement is not None:
            out["refinement"] = dict(self.refinement)
        if self.confidence is not None:
            out["confidence"] = self.confidence
            out["calibration"] = self.calibration
        return out

    def save(self, out_dir: str | Path, *, label_convention: str | None = None,
             probabilities: bool = False) -> Path:
        """Write ``answer.json`` and the masks into ``out_dir`` (see :func:`write_answer`), and
        with ``label_convention`` (e.g. ``"brats2024"``) also one label map ``labels.nii.gz`` in
        it, with ``probabilities`` the per-voxel probability and uncertainty maps; returns the
        answer.json path."""
        files = (AnswerFiles(case=self.case, masks_ras=self.masks_ras, model=dict(self.model),
                             measurements=self.segment_measurements(), confidence=self.confidence,
                             probabilities_ras=self.calibrated_probabilities() if probabilities else {})
                 if self.case is not None else None)
        return write_answer(out_dir, self.to_json(), files,
                            exporters=exporters(label_convention, probabilities=probabilities))

    def calibrated_probabilities(self) -> dict[str, np.ndarray]:
        """concept -> calibrated float32 probability (X, Y, Z) in RAS+ order of the case."""
        out = {}
        for c in self.masks_ras:
            p = self.probabilities_ras.get(c)
            out[c] = (np.zeros(self.masks_ras[c].shape, np.float32) if p is None else
                      apply_temperature(p, self.temperatures.get(c, 1.0)).astype(np.float32))
        return out

    def segment_measurements(self) -> tuple[SegmentMeasurement, ...]:
        """Each mask's measurement with its calibrated volume interval (as answer.json says)."""
        intervals = {t["concept"]: t.get("volume_ml_interval") for t in self.targets}
        out = []
        for m in self.measurements:
            iv = intervals.get(m.concept)
            out.append(SegmentMeasurement(m, (float(iv[0]), float(iv[1]))  # type: ignore[index]
                                          if isinstance(iv, (list, tuple)) and len(iv) == 2 else None))
        return tuple(out)


__all__ = ["Answer", "ModelInfo", "JsonObject"]
