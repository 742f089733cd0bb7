"""The friendly façade: set a case once, ask many questions about it.

``Segmenter`` composes the three parts that carry an answer, each in its own module: the
predictor (``vlseg.predict.Predictor``: a case in, its encoding cached, masks for named
concepts), the dialogue (``vlseg.segmenter.dialogue``: a question -> an :class:`Answer` through
the intent table) and the answer writer (``vlseg.segmenter.writer``: the output folder).

    seg = Segmenter.from_pretrained()
    seg.set_case("BraTS-GLI-00000-000/")
    ans = seg.ask("segment the necrotic core")
    ans.save("out/")            # answer.json + NCR.nii.gz in the input's own grid
"""
from __future__ import annotations

import platform
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypedDict

import numpy as np

from vlseg import __version__
from vlseg.errors import InputError
from vlseg.io import Case, CaseSource, brain_warnings, geometry_warnings, open_case, sequence_warnings
from vlseg.language import QueryParser
from vlseg.predict import Predictor
from vlseg.reasoning import DISCLAIMER
from vlseg.reasoning.calibration import DEFAULT_CONFIDENCE, Calibration
from vlseg.reasoning.presence import Presence
from vlseg.reasoning.atlas import AtlasLocator
from vlseg.reasoning.change import COMPARISON, Labelled
from vlseg.reasoning.registration import RigidRegistration
from vlseg.segmenter.answer import Answer, ModelInfo
from vlseg.segmenter.compare import Comparison, build_comparison, check_pair, register_pair
from vlseg.segmenter.dialogue import CaseTalk, Dialogue
from vlseg.segmenter.timepoint import check_timepoint
from vlseg.segmenter.writer import ANSWER_FILE
from vlseg.vocab import SEQUENCES

if TYPE_CHECKING:  # the model package is imported lazily at run time
    from vlseg.model.inference import PreparedCase
    from vlseg.model.refiner import Refiner
    from vlseg.model.vlseg_model import VLSegModel


# What each time point of a comparison is asked: the regions RANO and the volumes need.
PAIR_QUERY = "segment the enhancing tumor, the tumor core and the whole tumor"


class CaseSummary(TypedDict):
    """What ``set_case`` returns."""

    case_id: str
    sequences: list[str]
    shape: list[int]
    spacing_mm: list[float]
    encode_s: float
    warnings: list[str]
    timepoint: str  # as asked: pre | post | auto


class SegmenterLike(Protocol):
    """What the app and the MCP tools need from a :class:`Segmenter` (tests pass stand-ins)."""

    def set_case(self, source: CaseSource | Case, *, timepoint: str | None = None) -> CaseSummary: ...
    def ask(self, query: str, *, confidence: float | None = None) -> Answer: ...
    def set_timepoint(self, timepoint: str) -> None: ...
    def compare(self, baseline: CaseSource | Case, followup: CaseSource | Case, *,
                timepoint: str | None = None) -> Comparison: ...
    def reset(self) -> None: ...
    @property
    def case(self) -> Case: ...


class Segmenter:
    """Promptable segmentation + grounded answers for one case at a time (not thread-safe)."""

    def __init__(self, *, model: VLSegModel, device: str = "cpu", checkpoint: Path | None = None,
                 parser: QueryParser | None = None, threshold: float = 0.5,
                 calibration: Calibration | None = None,
                 confidence: float = DEFAULT_CONFIDENCE, timepoint: str = "auto",
                 refiner: Refiner | None = None, fast: bool = False,
                 presence: Presence | None = None) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.confidence = _check_confidence(confidence)
        # Pre- or post-treatment scans (vlseg.segmenter.timepoint); set_case may override it
        self.timepoint = check_timepoint(timepoint)
        # Calibrated intervals stored beside the weights (identity when there are none)
        if calibration is None:
            calibration = (Calibration.load(checkpoint) if checkpoint is not None
                           else Calibration.identity("no checkpoint folder"))
        self.calibration = calibration
        # Whether each region is there at all, fitted beside the weights (identity when absent)
        if presence is None:
            presence = (Presence.load(checkpoint) if checkpoint is not None
                        else Presence.identity("no checkpoint folder"))
        self.presence = presence
        self.model = model.eval().to(device)
        self.device = device
        self.threshold = threshold
        self.checkpoint = checkpoint
        if parser is None:
            # The parser's thresholds are calibrated on plain MiniLM, not on the model's
            # LoRA-adapted text encoder, so it keeps its own (process-wide cached) encoder.
            parser = QueryParser()
        self.parser = parser
        # The refinement stage answers unless fast (the first stage alone)
        self.refiner = refiner
        self.fast = bool(fast)
        self.predictor = Predictor(self.model, device=device, threshold=threshold, refiner=refiner, fast=fast,
                                   presence=presence)
        self.dialogue = Dialogue(parser=parser, calibration=calibration, threshold=threshold)
        self._talk: CaseTalk | None = None
        self._model_info: ModelInfo | None = None

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_pretrained(cls, name_or_path: str | Path | None = None, *, device: str = "cpu",
                        parser: QueryParser | None = None, threshold: float = 0.5,
                        calibration: Calibration | None = None,
                        confidence: float = DEFAULT_CONFIDENCE, timepoint: str = "auto",
                        fast: bool = False, refiner: str | Path | None = None) -> "Segmenter":
        """Load the bundled default model (None), a named bundled model, a checkpoint folder, or a
        LoRA adapter folder (``runs/<x>/best``: applied on the base checkpoint it names by sha256),
        with its refinement stage when it has one (``refiner``: a folder holding another one).
        ``fast``: answer from the first stage alone (the refinement stage is not even loaded).
        The process's thread count is the entry point's to set, never the library's."""
        import torch

        from vlseg.model import load_model
        from vlseg.model.loading import load_refiner

        if device == "cuda" and not torch.cuda.is_available():
            raise InputError("device='cuda' was asked for but no CUDA GPU is available; use device='cpu'")
        model = load_model(name_or_path, device=device, refiner=refiner)
        source = model.source  # the adapter folder, else the checkpoint folder
        second = None if fast else load_refiner(source, device=device)
        return cls(model=model, device=device, checkpoint=source.adapter or source.checkpoint,
                   parser=parser, threshold=threshold, calibration=calibration,
                   confidence=confidence, timepoint=timepoint, refiner=second, fast=fast)

    def fork(self, *, fast: bool | None = None) -> "Segmenter":
        """A Segmenter with its own case and chat state sharing this one's model and parser
        (one per chat session; nothing is reloaded, the checkpoint hash is computed once).
        ``fast``: answer from the first stage alone (None: as this one does)."""
        fast = self.fast if fast is None else bool(fast)
        other = Segmenter(model=self.model, device=self.device, checkpoint=self.checkpoint,
                          parser=self.parser, threshold=self.threshold,
                          calibration=self.calibration, confidence=self.confidence,
                          timepoint=self.timepoint, refiner=self.refiner, fast=fast,
                          presence=self.presence)
        if fast == self.fast:
            other._model_info = self.model_info()
        return other

    # ----------------------------------------------------------------- case
    @property
    def case(self) -> Case:
        return self.predictor.case

    def set_case(self, source: CaseSource | Case, *, timepoint: str | None = None,
                 force: bool = False) -> CaseSummary:
        """Validate, preprocess and encode a scan once. Returns a short summary of the case.
        ``timepoint`` (pre | post | auto; default: the Segmenter's) says whether the scan is
        after treatment (see ``vlseg.segmenter.timepoint``). ``force``: answer images that look
        like a label map, atlas, probability or statistical map anyway, with a warning."""
        return self._set_case(source, timepoint=timepoint, force=force)

    def _set_case(self, source: CaseSource | Case, *, timepoint: str | None = None, force: bool = False,
                  prepared: PreparedCase | None = None) -> CaseSummary:
        asked = self.timepoint if timepoint is None else check_timepoint(timepoint)
        case = open_case(source, force=force)  # read (unless given a Case), check the geometry
        warnings = (list(case.warnings) + geometry_warnings(case.source_grid)
                    + brain_warnings(case.images, case.affine) + sequence_warnings(case.present))
        encode_s = self.predictor.set_case(case, prepared=prepared)
        self._talk = CaseTalk(case=case, warnings=warnings, timepoint_asked=asked)
        return {
            "case_id": case.case_id,
            "sequences": list(case.present),
            "shape": list(case.shape),
            "spacing_mm": [round(float(s), 4) for s in case.spacing],
            "encode_s": round(encode_s, 3),
            "warnings": list(warnings),
            "timepoint": asked,
        }

    def set_timepoint(self, timepoint: str) -> None:
        """Say whether the case that is set is pre- or post-treatment (pre | post | auto); the
        encoding is kept, the time point is decided again at the next question."""
        asked = check_timepoint(timepoint)
        if self._talk is not None and self._talk.timepoint_asked != asked:
            self._talk.timepoint_asked, self._talk.timepoint = asked, None

    def reset(self) -> None:
        """Forget the case and the chat history."""
        self.predictor.reset()
        self._talk = None

    # ----------------------------------------------------------------- asking
    def ask(self, query: str, *, confidence: float | None = None) -> Answer:
        """Answer one query about the case that is set; chat context carries over between calls."""
        self.predictor.case  # a clear error when no case is set
        assert self._talk is not None
        level = self.confidence if confidence is None else _check_confidence(confidence)
        return self.dialogue.ask(self._talk, self.predictor, query, confidence=level,
                                 model=self.model_info())

    # ----------------------------------------------------------------- two time points
    def compare(self, baseline: CaseSource | Case, followup: CaseSource | Case, *,
                confidence: float | None = None, timepoint: str | None = None,
                force: bool = False, registration: RigidRegistration | None = None) -> Comparison:
        """Compare two scans of one patient: the follow-up is rigidly registered to the baseline
        (different sequences are refused before any model runs; brains that do not line up
        before the follow-up is answered: the registration runs beside the baseline's answer),
        both are answered by this one predictor, lesions are matched and the change is
        measured (``vlseg.segmenter.compare``). On any failure no case stays set. The follow-up
        stays set afterwards, with the comparison, so "did it grow?" and "is there a new lesion?"
        are answered from it.
        ``registration``: the pair's registration when the caller already made it."""
        level = self.confidence if confidence is None else _check_confidence(confidence)
        timing: dict[str, float] = {}
        t0 = time.perf_counter()
        # Open both (the follow-up read in a worker: decompression releases the GIL): unreadable
        # files or different sequences cost no model run
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlseg-read") as pool:
            reading = pool.submit(open_case, followup, force=force)
            base_case = open_case(baseline, force=force)
            follow_case = reading.result()
        check_pair(base_case, follow_case)
        timing["open"] = time.perf_counter() - t0

        # Two workers beside the baseline's answer: the registration (ITK releases the GIL; a
        # pair whose brains do not line up is refused when it ends, before the follow-up is
        # answered or anything is written) and, once the baseline is encoded, the follow-up's
        # preprocessing and encoding (while the baseline is decoded, labelled and measured).
        t2 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="vlseg-compare") as pool:
            pending = None if registration is not None else pool.submit(
                _timed, lambda: register_pair(base_case, follow_case, threads=1))
            try:
                self.set_case(base_case, timepoint=timepoint)
                follow_prep = pool.submit(_timed, lambda: self.predictor.prepare(follow_case))
                base_answer = self.ask(PAIR_QUERY, confidence=level)
                base = self._labelled()
                base_locator = self._talk.locator if self._talk is not None else None
                timing["baseline"] = time.perf_counter() - t2
                reg, timing["register"] = (registration, 0.0) if pending is None else pending.result()
                timing["register_wait"] = time.perf_counter() - t2 - timing["baseline"]
                prepared, timing["followup_encode"] = follow_prep.result()
            except BaseException:
                self.reset()  # refused or failed: no half-compared case stays set
                raise
        t3 = time.perf_counter()
        self._set_case(follow_case, timepoint=timepoint, prepared=prepared)
        if base_locator is not None and self._talk is not None:  # the baseline's atlas fit, moved
            self._talk.locator = AtlasLocator(ras_to_mni=base_locator.ras_to_mni @ np.linalg.inv(reg.matrix),
                                              method=f"{base_locator.method} via the baseline")
        follow_answer = self.ask(PAIR_QUERY, confidence=level)
        follow = self._labelled()
        timing["followup"] = time.perf_counter() - t3

        # Match and measure the change; the follow-up keeps it for the change questions
        comparison = build_comparison(baseline=base_answer, followup=follow_answer, base_case=base_case,
                                      follow_case=follow_case, base=base, follow=follow, reg=reg,
                                      calibration=self.calibration, confidence=level,
                                      timing=timing, started=t0)
        assert self._talk is not None
        self._talk.facts[COMPARISON] = comparison.doc
        return comparison

    def _labelled(self) -> Labelled:
        """The current case's labelling, copied (the predictor moves on to the next case)."""
        assert self._talk is not None
        probs, masks = self.dialogue.labelling(self._talk, self.predictor)
        return Labelled(probs=dict(probs), masks=dict(masks), affine=self.case.affine,
                        refined=self.dialogue.refined(self.predictor))

    def model_info(self) -> ModelInfo:
        """Provenance for answer JSON: model name, the base checkpoint and the LoRA adapter (if
        any) each with its sha256, library versions. ``checkpoint``/``checkpoint_sha256`` name
        the full (base) checkpoint."""
        if self._model_info is None:
            import torch

            from vlseg.model import describe_source, resolve_model
            from vlseg.model.loading import describe_refiner

            source = resolve_model(self.checkpoint) if self.checkpoint is not None else getattr(
                self.model, "source", None)
            weights = describe_source(source) if source is not None else {
                "checkpoint": None, "checkpoint_sha256": None, "base": None, "adapter": None}
            # The refinement stage that answers (None: single-stage model, or fast)
            folder = getattr(self.refiner, "folder", None) if self.predictor.refines else None
            weights["refiner"] = describe_refiner(folder) if folder is not None else (
                {"name": self.refiner.config.name, "sha256": None} if self.predictor.refines else None)
            weights["stages"] = ["first", "refine"] if self.predictor.refines else ["first"]
            self._model_info = ModelInfo(
                name=self.model.config.name, **weights,
                text_encoder=self.model.config.text_encoder,
                spacing_mm=self.model.config.spacing_mm,
                versions={"vlseg": __version__, "torch": torch.__version__,
                          "python": platform.python_version()})
        return self._model_info


def _timed(fn):
    """``(fn(), seconds it took)``."""
    t = time.perf_counter()
    return fn(), time.perf_counter() - t


def _check_confidence(q: float) -> float:
    try:
        q = float(q)
    except (TypeError, ValueError):
        raise InputError(f"confidence must be a number between 0 and 1, got {q!r}") from None
    if not 0.0 < q < 1.0:
        raise InputError(f"confidence must be between 0 and 1 (e.g. 0.9 for 90 % intervals), got {q}")
    return q


__all__ = ["Segmenter", "SegmenterLike", "Comparison", "PAIR_QUERY", "Answer", "CaseSummary", "ANSWER_FILE", "DISCLAIMER", "SEQUENCES"]
