"""The question-answering predictor: set a case once, ask many questions about it.

Modelled on SAM's ``SamPredictor``: ``set_case`` validates, preprocesses and encodes the scan once;
``ask`` parses the query, runs only the cheap prompt-conditioned head for each target, measures the
masks and writes a grounded answer. Probabilities are cached per concept, so a follow-up about a
concept already segmented costs only the measurements.

    seg = Segmenter.from_pretrained()
    seg.set_case("BraTS-GLI-00000-000/")
    ans = seg.ask("segment the necrotic core")
    ans.save("out/")            # answer.json + NCR.nii.gz in the input's own grid
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from vlseg import __version__, intents, vocab
from vlseg.vocab import SEQUENCES
from vlseg.errors import InputError, VlsegError
from vlseg.fileio import staged_folder, write_json_atomic
from vlseg.io import Case, brain_warnings, check_geometry, geometry_warnings, load_case, write_mask
from vlseg.language import Parse, QueryParser, TargetRef
from vlseg.reasoning import (
    DISCLAIMER,
    AtlasLocator,
    Facts,
    Relations,
    TargetMeasurement,
    measure_target,
    measurement_to_json,
    relations,
    relations_to_json,
)
from vlseg.numbers import round_fraction, round_ml
from vlseg.reasoning.calibration import DEFAULT_CONFIDENCE, Calibration
from vlseg.reasoning.grouping import lesion_masks
from vlseg.reasoning.labelling import final_masks, final_probabilities, labelling_sources
from vlseg.reasoning.midline import case_midline_shift

if TYPE_CHECKING:  # the model package is imported lazily at run time
    from vlseg.model.inference import PreparedCase
    from vlseg.model.vlseg_model import VLSegModel


@dataclass
class Answer:
    """One answer: text, per-target masks and measurements, provenance. ``to_json`` is answer.json."""

    query: str
    text: str
    refused: bool
    intent: str
    targets: list[dict[str, Any]]  # answer.json's rounded target entries
    masks: dict[str, np.ndarray]  # concept -> uint8 (X, Y, Z) in the input file's own voxel order
    masks_ras: dict[str, np.ndarray]  # concept -> uint8 in RAS+ order of the case (for display)
    relations: Relations | None
    sequences_used: list[str]
    model: dict[str, Any]
    timing_s: dict[str, float]
    case_id: str | None = None
    warnings: list[str] = field(default_factory=list)  # about the scan: thick slices, not a brain
    parse: Parse | None = None
    measurements: list[TargetMeasurement] = field(default_factory=list)
    case_facts: dict[str, Any] = field(default_factory=dict)  # e.g. midline shift, when asked
    relations_json: dict[str, Any] | None = None  # relations with their intervals, as answered
    confidence: float | None = None  # the intervals' confidence level (measured answers)
    calibration: dict[str, Any] | None = None  # how the intervals were calibrated
    _case: Case | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        out = {
            "query": self.query,
            "text": self.text,
            "refused": self.refused,
            "intent": self.intent,
            "intents": list(self.parse.intents) if self.parse is not None else [self.intent],
            "targets": [dict(t) for t in self.targets],
            "relations": (self.relations_json if self.relations_json is not None
                          else relations_to_json(self.relations)),
            "sequences_used": list(self.sequences_used),
            "warnings": list(self.warnings),
            "model": dict(self.model),
            "timing_s": {k: round(v, 4) for k, v in self.timing_s.items()},
            "disclaimer": DISCLAIMER,
        }
        if "midline_shift" in self.case_facts:
            out.update(self.case_facts["midline_shift"])
        if self.confidence is not None:
            out["confidence"] = self.confidence
            out["calibration"] = self.calibration
        return out

    def save(self, out_dir: str | Path) -> Path:
        """Write ``answer.json`` and one ``<CONCEPT>.nii.gz`` per target into ``out_dir``.

        The folder then holds exactly what answer.json lists: everything is staged first and
        published with answer.json last; masks an earlier answer.json listed there are removed
        (nothing else is touched). An interrupted save never leaves an answer.json that
        disagrees with the masks beside it.
        """
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise InputError("is a file, not a folder; answers are saved into a folder", str(out))
        names = {c: f"{c}.nii.gz" for c in self.masks_ras} if self._case is not None else {}
        if self._case is not None:
            inputs = {Path(p).resolve() for p in self._case.sources.values()}
            clash = [n for n in names.values() if (out / n).resolve() in inputs]
            if clash:
                raise InputError(f"{clash[0]} there is one of the case's input files; choose "
                                 "another output folder", str(out))
        with staged_folder(out, manifest=ANSWER_FILE, previous=_listed_masks(out / ANSWER_FILE)) as stage:
            for concept, name in names.items():
                write_mask(self.masks_ras[concept], self._case, stage / name)
            from vlseg.io.dicom_seg import save_extras  # a DICOM-SEG too, for DICOM input

            extras = save_extras(self, stage)
            write_json_atomic(stage / ANSWER_FILE, {**self.to_json(), **extras})
        return out / ANSWER_FILE


@dataclass
class _CaseState:
    """Everything cached for the case that is set: the encoding, probabilities, chat history."""

    case: Case
    prepared: PreparedCase  # encoder features, crop box, grid
    probs: dict[str, np.ndarray] = field(default_factory=dict)  # decoded: concept -> (X, Y, Z) RAS+
    # The one labelling of the case (vlseg.reasoning.labelling) and its probabilities.
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # concept -> bool (X, Y, Z) RAS+
    final_probs: dict[str, np.ndarray] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # said with every answer on the case
    locator: AtlasLocator | None = None  # fitted lazily on the first question
    locator_failed: str | None = None
    previous: Parse | None = None  # the last answered Parse, for "how big is it?"
    case_facts: dict[str, Any] = field(default_factory=dict)  # case-level facts (midline shift)
    # Derived from the labelling, so kept until it changes (follow-ups reuse them).
    measured: dict[str, TargetMeasurement] = field(default_factory=dict)
    relations: Relations | None = None
    intervals: dict[tuple[str, float], tuple[float, float] | None] = field(default_factory=dict)
    encode_s: float = 0.0


class Segmenter:
    """Promptable segmentation + grounded answers for one case at a time (not thread-safe)."""

    def __init__(self, *, model: VLSegModel, device: str = "cpu", checkpoint: Path | None = None,
                 parser: QueryParser | None = None, threshold: float = 0.5,
                 calibration: Calibration | None = None,
                 confidence: float = DEFAULT_CONFIDENCE) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.confidence = _check_confidence(confidence)
        # Calibrated intervals stored beside the weights (identity when there are none)
        if calibration is None:
            calibration = (Calibration.load(checkpoint) if checkpoint is not None
                           else Calibration.identity("no checkpoint folder"))
        self.calibration = calibration
        self.model = model.eval().to(device)
        self.device = device
        self.threshold = threshold
        self.checkpoint = checkpoint
        if parser is None:
            # The parser's thresholds are calibrated on plain MiniLM, not on the model's
            # LoRA-adapted text encoder, so it keeps its own (process-wide cached) encoder.
            parser = QueryParser()
        self.parser = parser
        self._state: _CaseState | None = None
        self._model_info: dict[str, Any] | None = None

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_pretrained(cls, name_or_path: str | Path | None = None, *, device: str = "cpu",
                        threads: int | None = None, **kwargs: Any) -> "Segmenter":
        """Load the bundled default model (None), a named bundled model, a checkpoint folder, or a
        LoRA adapter folder (``runs/<x>/best``: applied on the base checkpoint it names by sha256)."""
        import torch

        from vlseg.model import load_model

        if threads is not None:
            if threads < 1:
                raise InputError(f"threads={threads}: must be at least 1")
            torch.set_num_threads(threads)
        if device == "cuda" and not torch.cuda.is_available():
            raise InputError("device='cuda' was asked for but no CUDA GPU is available; use device='cpu'")
        model = load_model(name_or_path, device=device)
        source = model.source  # the adapter folder, else the checkpoint folder
        return cls(model=model, device=device, checkpoint=source.adapter or source.checkpoint, **kwargs)

    def fork(self) -> "Segmenter":
        """A Segmenter with its own case and chat state sharing this one's model and parser
        (one per chat session; nothing is reloaded, the checkpoint hash is computed once)."""
        other = Segmenter(model=self.model, device=self.device, checkpoint=self.checkpoint,
                          parser=self.parser, threshold=self.threshold,
                          calibration=self.calibration, confidence=self.confidence)
        other._model_info = self.model_info()
        return other

    # ----------------------------------------------------------------- case
    @property
    def case(self) -> Case:
        return self._require_state().case

    def _require_state(self) -> _CaseState:
        if self._state is None:
            raise VlsegError("No case is set: call set_case(...) with a scan before asking questions.")
        return self._state

    def set_case(self, source: str | Path | Mapping[str, str | Path] | Case) -> dict[str, Any]:
        """Validate, preprocess and encode a scan once. Returns a short summary of the case."""
        from vlseg.model.inference import prepare

        t0 = time.perf_counter()
        case = source if isinstance(source, Case) else load_case(source)
        check_geometry(case.source_grid)  # too small a field of view or too coarse: refused
        warnings = geometry_warnings(case.source_grid) + brain_warnings(case.images, case.affine)
        # Encode image once
        prepared = prepare(self.model, case, device=self.device)
        self._state = _CaseState(case=case, prepared=prepared, encode_s=time.perf_counter() - t0,
                                 warnings=warnings)
        return {
            "case_id": case.case_id,
            "sequences": list(case.present),
            "shape": list(case.shape),
            "spacing_mm": [round(float(s), 4) for s in case.spacing],
            "encode_s": round(self._state.encode_s, 3),
            "warnings": list(warnings),
        }

    def reset(self) -> None:
        """Forget the case and the chat history."""
        self._state = None

    # ----------------------------------------------------------------- asking
    def ask(self, query: str, *, confidence: float | None = None) -> Answer:
        """Answer one query about the case that is set; chat context carries over between calls.

        The intent table (``vlseg.intents``) says what each kind of question decodes and which
        composer answers it; nothing here depends on the kind of question.
        """
        state = self._require_state()
        timing: dict[str, float] = {}
        t0 = time.perf_counter()

        # Understand the query (a compound question is answered part by part, in order)
        parse = self.parser.parse(query, previous=state.previous)
        questions = parse.questions
        timing["parse"] = time.perf_counter() - t0
        if any(intents.get(q.intent).measures for q in questions):
            state.previous = questions[-1] if questions[-1].targets else parse

        # Condition on prompts: decode only what is not cached yet, then label the case once
        t1 = time.perf_counter()
        decoded = tuple(dict.fromkeys(c for q in questions
                                      for c in intents.get(q.intent).decode(q.concepts)))
        self._ensure_masks(decoded)
        timing["decode"] = time.perf_counter() - t1

        # Measure, locate, relate: each target once, whatever asks for it
        t2 = time.perf_counter()
        measured: dict[str, TargetMeasurement] = {}
        rel: Relations | None = None
        if any(intents.get(q.intent).measures for q in questions):
            locator = self._locator()  # every target reports hemisphere and lobes
            asked_or_companion = tuple(dict.fromkeys(
                parse.concepts + tuple(c for q in questions
                                       for c in intents.get(q.intent).companions(q.concepts))))
            for c in asked_or_companion:
                if c not in state.measured:
                    # Lesions counted as a radiologist would: sub-regions per parent lesion
                    state.measured[c] = measure_target(
                        c, state.final_probs[c], state.case.affine, locator=locator,
                        threshold=self.threshold, mask=state.masks[c],
                        **lesion_masks(c, state.masks))
                measured[c] = state.measured[c]
            for fact in dict.fromkeys(f for q in questions for f in intents.get(q.intent).case_facts):
                self._case_fact(fact)
            if all(c in decoded for c in vocab.relation_concepts()):
                if state.relations is None:
                    state.relations = relations(
                        {c: self._mask(c) for c in vocab.relation_concepts()}, state.case.affine)
                rel = state.relations
        timing["measure"] = time.perf_counter() - t2

        # Calibrated intervals at the asked confidence, in the JSON the text is built from
        level = self.confidence if confidence is None else _check_confidence(confidence)
        target_json, rel_json = self._with_intervals(measured, rel, level)

        # Compose: each question's sentences through its intent's composer
        parts = []
        for q in questions:
            spec = intents.get(q.intent)
            facts = Facts(targets=[target_json[c] for c in q.concepts],
                          relations=rel_json if spec.relations(q.concepts) else None,
                          phrases=[t.phrase for t in q.targets], reason=q.reason,
                          places=[p.to_json() for p in q.places or parse.places],
                          case=dict(state.case_facts), confidence=level,
                          companions={c: target_json[c] for c in spec.companions(q.concepts)
                                      if c in target_json})
            parts.append((q.intent, facts))
        grounded = bool(measured)
        notes = (*state.warnings, *((f"Location unavailable: {state.locator_failed}.",)
                                    if grounded and state.locator_failed else ()))
        text = intents.answer_text_parts(parts, sequences_used=list(state.case.present),
                                         notes=notes, calibrated=self.calibration.calibrated)
        timing["total"] = time.perf_counter() - t0
        answer = self._answer(parse, text, [measured[c] for c in parse.concepts], rel, timing,
                              target_json=target_json, relations_json=rel_json)
        answer.confidence = level if grounded else None
        answer.calibration = self.calibration.describe(level) if grounded else None
        return answer

    def _with_intervals(self, measured: dict[str, TargetMeasurement], rel: Relations | None,
                        level: float) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
        """answer.json entries of the measured targets and relations, with
        ``volume_ml_interval`` per target and ``<ratio>_interval`` per ratio at ``level``."""
        state = self._require_state()
        cal, affine = self.calibration, state.case.affine
        out: dict[str, dict[str, Any]] = {}
        known = state.intervals
        for c, m in measured.items():
            j = measurement_to_json(m)
            if (c, level) not in known:
                known[(c, level)] = cal.volume_interval(c, state.final_probs[c], state.masks[c],
                                                        affine, level)
            lo, hi = known[(c, level)]  # type: ignore[misc]
            j["volume_ml_interval"] = [round_ml(lo), round_ml(hi)]
            out[c] = j
        rel_json = relations_to_json(rel)
        if rel_json is not None:
            for name in vocab.ratios():
                if rel_json.get(name) is None:
                    continue
                if (name, level) not in known:
                    known[(name, level)] = cal.ratio_interval(name, state.final_probs, state.masks,
                                                              affine, level)
                iv = known[(name, level)]
                rel_json[f"{name}_interval"] = None if iv is None else [round_fraction(iv[0]),
                                                                         round_fraction(iv[1])]
        return out, rel_json

    # ----------------------------------------------------------------- internals
    def _ensure_probs(self, concepts: list[str]) -> None:
        from vlseg.model.inference import decode

        state = self._require_state()
        missing = [c for c in concepts if c not in state.probs]
        if not missing:
            return
        prompts = self.model.embed_prompts([vocab.concept(c).canonical_prompt for c in missing])  # (P, E)
        probs = decode(self.model, state.prepared, prompts)  # (P, X, Y, Z) RAS+ input grid
        for c, p in zip(missing, probs):
            state.probs[c] = p

    def _ensure_masks(self, concepts: tuple[str, ...]) -> None:
        """Decode what the final masks of ``concepts`` need and relabel the case if anything new
        was decoded (one labelling per case: masks nest and volumes add up)."""
        state = self._require_state()
        sources = labelling_sources(concepts)
        if all(c in state.masks for c in concepts) and all(c in state.probs for c in sources):
            return
        self._ensure_probs(list(sources))
        state.final_probs = final_probabilities(state.probs)
        state.masks = final_masks(state.probs, state.case.affine, threshold=self.threshold)
        # A new labelling: what was measured on the old one is stale.
        state.measured, state.relations, state.intervals = {}, None, {}

    def _mask(self, concept: str) -> np.ndarray:
        """The mask users get for a concept: the case's one labelling (the same function
        training validation and bench/evaluate_model.py score)."""
        return self._require_state().masks[concept]

    def _case_fact(self, name: str) -> None:
        """Compute a case-level fact once per case (``Intent.case_facts``); failures are
        recorded as ``<name>_error`` and said in the answer, never raised."""
        state = self._require_state()
        if name in state.case_facts or f"{name}_error" in state.case_facts:
            return
        if name != "midline_shift":
            raise ValueError(f"unknown case fact {name!r}")
        locator = self._locator()
        if locator is None:
            state.case_facts[f"{name}_error"] = state.locator_failed or "no atlas registration"
            return
        try:
            shift = case_midline_shift(state.case.images, state.case.affine, locator=locator,
                                       exclude=state.masks.get("WT"))
        except (VlsegError, ValueError, RuntimeError) as e:
            state.case_facts[f"{name}_error"] = str(e).splitlines()[0] if str(e) else type(e).__name__
            return
        state.case_facts[name] = shift.to_json()

    def _locator(self) -> AtlasLocator | None:
        """Fit the atlas registration once per case; on failure, answer without location."""
        state = self._require_state()
        if state.locator is None and state.locator_failed is None:
            case = state.case
            # Prefer T1 native (closest to the T1 template), then T1c, T2, FLAIR.
            seq = next(s for s in ("t1n", "t1c", "t2w", "t2f") if s in case.images)
            try:
                state.locator = AtlasLocator.fit(case.images[seq], case.affine)
            except VlsegError as e:
                state.locator_failed = str(e)
        return state.locator

    def _answer(self, parse: Parse, text: str, measurements: list[TargetMeasurement],
                rel: Relations | None, timing: dict[str, float], *,
                target_json: dict[str, dict[str, Any]] | None = None,
                relations_json: dict[str, Any] | None = None) -> Answer:
        state = self._require_state()
        targets: list[dict[str, Any]] = []
        masks: dict[str, np.ndarray] = {}
        masks_ras: dict[str, np.ndarray] = {}
        for ref, m in zip(parse.targets, measurements):
            # The mask that was measured: p >= threshold, specks below the minimum lesion removed.
            mask_ras = self._mask(m.concept).astype(np.uint8)
            masks_ras[m.concept] = mask_ras
            masks[m.concept] = state.case.to_source(mask_ras)
            targets.append(_target_json(ref, (target_json or {}).get(m.concept) or measurement_to_json(m)))
        return Answer(
            query=parse.query, text=text, refused=parse.refused, intent=parse.intent,
            targets=targets, masks=masks, masks_ras=masks_ras, relations=rel,
            warnings=list(state.warnings),
            sequences_used=list(state.case.present), model=self.model_info(), timing_s=timing,
            case_id=state.case.case_id, parse=parse, measurements=list(measurements),
            case_facts=dict(state.case_facts), relations_json=relations_json, _case=state.case,
        )

    def model_info(self) -> dict[str, Any]:
        """Provenance for answer JSON: model name, the base checkpoint and the LoRA adapter (if
        any) each with its sha256, library versions. ``checkpoint``/``checkpoint_sha256`` name
        the full (base) checkpoint."""
        if self._model_info is None:
            import torch

            from vlseg.model import describe_source, resolve_model

            source = resolve_model(self.checkpoint) if self.checkpoint is not None else getattr(
                self.model, "source", None)
            weights = describe_source(source) if source is not None else {
                "checkpoint": None, "checkpoint_sha256": None, "base": None, "adapter": None}
            self._model_info = {
                "name": self.model.config.name,
                **weights,
                "text_encoder": self.model.config.text_encoder,
                "spacing_mm": self.model.config.spacing_mm,
                "versions": {"vlseg": __version__, "torch": torch.__version__,
                             "python": platform.python_version()},
            }
        return self._model_info


ANSWER_FILE = "answer.json"


def _listed_masks(answer_json: Path) -> list[str]:
    """Mask file names an earlier answer.json in the folder lists (none if unreadable)."""
    try:
        doc = json.loads(answer_json.read_text())
        extra = [str(doc["dicom_seg"]["file"])] if isinstance(doc.get("dicom_seg"), dict) else []
        return [str(t["mask"]) for t in doc.get("targets", []) if isinstance(t, dict) and t.get("mask")] + extra
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return []


def _target_json(ref: TargetRef, measured: dict[str, Any]) -> dict[str, Any]:
    """answer.json entry for one target: the rounded measurement (the exact values the answer
    text quotes, intervals included) plus the phrase and mask file name."""
    concept = measured["concept"]
    out: dict[str, Any] = {"concept": concept, "phrase": ref.phrase,
                           "parse_score": round(float(ref.score), 3), "mask": f"{concept}.nii.gz"}
    out.update(measured)
    return out


def _check_confidence(q: float) -> float:
    try:
        q = float(q)
    except (TypeError, ValueError):
        raise InputError(f"confidence must be a number between 0 and 1, got {q!r}") from None
    if not 0.0 < q < 1.0:
        raise InputError(f"confidence must be between 0 and 1 (e.g. 0.9 for 90 % intervals), got {q}")
    return q


__all__ = ["Segmenter", "Answer", "DISCLAIMER", "SEQUENCES"]
