"""The predictor: a case in, its encoding cached, probabilities and masks for named concepts.

Like SAM's ``SamPredictor``: :meth:`Predictor.set_case` encodes the scan once and
:meth:`Predictor.masks` runs only the prompt-conditioned head for concepts not decoded yet, then
relabels the case once (``vlseg.reasoning.labelling``: masks nest and volumes add up). It knows
nothing of questions, and refuses concepts its model does not segment.

    predictor = Predictor(model, threshold=0.5, refiner=refiner)
    predictor.set_case(case)                   # encode once
    masks = predictor.masks(("NCR", "ED"))     # concept -> bool (X, Y, Z) RAS+
    predictor.stages("NCR")                    # ("first", "refine"): which stages made the mask

With a refiner (``vlseg.model.refiner``, the second stage) the first stage's probabilities of
the concepts it refines are refined at 1 mm in a crop around the tumor, once per case, the
first time they are decoded; ``fast=True`` answers from the first stage alone.

:func:`predict_masks` is the same steps for a whole case in one call (benchmarks, evaluation),
so a figure measured there is a figure about what the predictor returns.
"""
from __future__ import annotations

import time
import weakref

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

import numpy as np

from vlseg import vocab
from vlseg.errors import InputError, VlsegError
from vlseg.io import Case
from vlseg.reasoning.labelling import labelling_sources
from vlseg.reasoning.presence import Presence

if TYPE_CHECKING:  # the model package (torch) is imported lazily at run time
    import torch

    from vlseg.model.inference import PreparedCase
    from vlseg.model.refine_inference import RefineResult
    from vlseg.model.refiner import Refiner
    from vlseg.model.vlseg_model import VLSegModel


@dataclass
class _Encoded:
    """What is cached for the case that is set: its encoding and the one labelling."""

    case: Case
    prepared: PreparedCase  # encoder features, crop box, grid
    encode_s: float
    probs: dict[str, np.ndarray] = field(default_factory=dict)  # decoded: concept -> (X, Y, Z) RAS+
    final_probs: dict[str, np.ndarray] = field(default_factory=dict)  # the labelling's probabilities
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # concept -> bool (X, Y, Z) RAS+
    generation: int = 0  # bumped at each new labelling (what was measured on the old is stale)
    presence: dict[str, float | None] = field(default_factory=dict)  # concept -> P(present) or None
    ruled_out: tuple[str, ...] = ()  # concepts the scan cannot hold (the cavity on an untreated scan)
    refined: tuple[str, ...] = ()  # concepts whose probabilities the refinement stage made
    first: dict[str, np.ndarray] = field(default_factory=dict)  # their first-stage probabilities
    refinement: RefineResult | None = None  # what the refinement did (None: not tried yet)


class Predictor:
    """Probabilities and masks of named concepts for one case at a time (not thread-safe)."""

    def __init__(self, model: VLSegModel, *, device: str = "cpu", threshold: float = 0.5,
                 presence: Presence | None = None, refiner: Refiner | None = None,
                 fast: bool = False) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.model = model
        self.device = device
        self.threshold = threshold
        # Whether each region is there at all, calibrated beside the weights (vlseg.reasoning.presence)
        self.presence_model = presence if presence is not None else presence_of(model)
        self.refiner = None if fast else refiner
        if self.refiner is not None:
            self.refiner.to(device).eval()
        self._text: dict[str, torch.Tensor] = {}  # the refiner's text embeddings per phrase
        self._encoded: _Encoded | None = None

    @property
    def refines(self) -> bool:
        """Whether answers go through the refinement stage (a refiner, and not fast)."""
        return self.refiner is not None

    @property
    def concepts(self) -> tuple[str, ...]:
        """What the model segments (``model.config.concepts``)."""
        return tuple(self.model.config.concepts)

    def set_case(self, case: Case, *, prepared: PreparedCase | None = None) -> float:
        """Encode ``case`` once (the image encoder's only run); returns the seconds it took.
        ``prepared``: the case already encoded by :meth:`prepare`."""
        if self.refiner is not None:
            self._preload_inferer(case)
        t0 = time.perf_counter()
        if prepared is None:
            prepared = self.prepare(case)  # encode image once
        self._encoded = _Encoded(case=case, prepared=prepared, encode_s=time.perf_counter() - t0)
        return self._encoded.encode_s

    def _preload_inferer(self, case: Case) -> None:
        """A case the refinement stage will refine (finer than the first stage's grid) needs
        MONAI's inferer, whose import takes seconds: begin it in the background now, beside the
        case's preprocessing and encoding. A 2 mm case never needs it, so it is never imported."""
        from vlseg.model.monai_inferer import preload_inferer
        from vlseg.model.refine_inference import refine_spacing

        assert self.refiner is not None
        if refine_spacing(self.refiner, case.spacing) < self.model.config.spacing_mm - 1e-6:
            preload_inferer()

    def prepare(self, case: Case) -> PreparedCase:
        """``case`` preprocessed and encoded, for ``set_case(case, prepared=...)``. Touches no
        state of this predictor: safe in a worker thread while it answers another case."""
        from vlseg.model import inference

        return inference.prepare(self.model, case, device=self.device, keep_images=self.refines)

    def reset(self) -> None:
        self._encoded = None

    @property
    def case(self) -> Case:
        return self._require().case

    @property
    def generation(self) -> int:
        """Which labelling of the case the masks are (changes when a concept is added)."""
        return self._require().generation

    def masks(self, concepts: Iterable[str]) -> dict[str, np.ndarray]:
        """The case's one labelling for ``concepts``: bool (X, Y, Z) RAS+ each."""
        concepts = tuple(concepts)
        state = self._labelled(concepts)
        return {c: state.masks[c] for c in concepts}

    def rule_out(self, concepts: Iterable[str]) -> None:
        """Leave exactly ``concepts`` out of this case's labelling (empty masks; the voxels they
        claimed go back to the tumor regions), e.g. the cavity once the scan is taken as untreated;
        ``()`` takes every concept back."""
        state = self._require()
        ruled = tuple(dict.fromkeys(concepts))
        if ruled != state.ruled_out:
            state.ruled_out = ruled
            if state.masks:  # relabel what is decoded
                self._relabel(state)

    def probabilities(self) -> dict[str, np.ndarray]:
        """The decoded concepts' probabilities the labelling reads (refined where the refinement
        stage ran), RAS+ case grid."""
        return dict(self._require().probs)

    def presence(self) -> dict[str, float | None]:
        """Concept -> calibrated probability that it is present in the case (None: uncalibrated),
        for the concepts of the current labelling."""
        return dict(self._require().presence)
    def stages(self, concept: str) -> tuple[str, ...]:
        """Which stages made ``concept``'s current mask: ("first",) or ("first", "refine") (the
        mask is computed from at least one refined probability)."""
        state = self._require()
        sources = labelling_sources((concept,))
        return ("first", "refine") if any(c in state.refined for c in sources) else ("first",)

    def refinement(self) -> RefineResult | None:
        """What the refinement stage did for the case (None: not run, or no refiner)."""
        return self._require().refinement

    def first_stage_masks(self) -> dict[str, np.ndarray]:
        """The masks the first stage alone gives for the decoded concepts (the labelling of its
        probabilities; equal to ``masks`` when nothing was refined): for comparing the stages on
        one encoding."""
        state = self._require()
        return self._label(state, {**state.probs, **state.first})[1]

    def labelling(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """All the current labelling's (probabilities, masks), for intervals over several concepts."""
        state = self._require()
        return state.final_probs, state.masks

    def _require(self) -> _Encoded:
        if self._encoded is None:
            raise VlsegError("No case is set: call set_case(...) with a scan before asking questions.")
        return self._encoded

    def _labelled(self, concepts: tuple[str, ...]) -> _Encoded:
        """Decode what the masks of ``concepts`` need and relabel the case if anything new was
        decoded (one labelling per case: masks nest and volumes add up)."""
        from vlseg.model import inference

        state = self._require()
        unknown = [c for c in concepts if c not in self.concepts]
        if unknown:
            raise InputError(f"this model does not segment {', '.join(unknown)}; it segments "
                             f"{', '.join(self.concepts)}")
        sources = labelling_sources(concepts)
        if all(c in state.masks for c in concepts) and all(c in state.probs for c in sources):
            return state
        missing = [c for c in sources if c not in state.probs]
        if missing:
            # Condition on prompts: only the concepts not decoded yet
            prompts = self.model.embed_prompts([vocab.concept(c).canonical_prompt for c in missing])  # (P, E)
            probs = inference.decode(self.model, state.prepared, prompts)  # (P, X, Y, Z) RAS+
            state.probs.update(zip(missing, probs))
            # Refine at 1 mm in a crop around the tumor (once per case)
            if self.refiner is not None and state.refinement is None:
                self._refine(state)
        self._relabel(state)
        return state

    def _label(self, state: _Encoded, probs: dict[str, np.ndarray]):
        """The one labelling of ``probs`` with presence decided, for this case (its grid, its
        sequences, what is ruled out): ``Presence.label``'s (probabilities, masks, presence).
        Presence is decided on the first stage's probabilities (what the presence model was
        fitted on), also where the refinement stage made the ones labelled."""
        first = {**probs, **state.first}
        refined = any(first[c] is not probs[c] for c in state.first if c in probs)
        return self.presence_model.label(probs, state.case.affine, threshold=self.threshold,
                                         ruled_out=state.ruled_out, sequences=state.case.images,
                                         evidence=first if refined else None)

    def _relabel(self, state: _Encoded) -> None:
        state.final_probs, state.masks, state.presence = self._label(state, state.probs)
        state.generation += 1

    def _refine(self, state: _Encoded) -> None:
        """Run the refinement stage on the decoded concepts it refines; record what it did."""
        import torch

        from vlseg.model.refine_inference import RefineResult, base_text_embeddings, refine

        assert self.refiner is not None and state.prepared.images is not None
        todo = [c for c in self.refiner.config.concepts if c in state.probs]
        if not todo:
            return
        wanted, given = self.refiner.config.bias_correction, self.model.config.bias_correction
        if wanted != given:  # it reads the first stage's normalised images
            state.refinement = RefineResult(None, False, f"the refiner was trained on bias correction {wanted!r}, "
                                                         f"the first stage preprocesses with {given!r}")
            return
        phrases = [vocab.concept(c).canonical_prompt for c in todo]
        new = [p for p in phrases if p not in self._text]
        if new:
            self._text.update(zip(new, base_text_embeddings(self.model.text_encoder, self.refiner, new)))
        result = refine(self.refiner, images=state.prepared.images,
                        present=state.prepared.present, spacing_in=state.prepared.spacing_in,
                        stage1=np.stack([state.probs[c] for c in todo]),
                        text=torch.stack([self._text[p] for p in phrases]),
                        stage1_spacing_mm=state.prepared.spacing_model)
        state.refinement = result
        if result.ran and result.probs is not None:
            state.first = {c: state.probs[c] for c in todo}
            state.probs.update(zip(todo, result.probs))
            state.refined = tuple(todo)


# ----------------------------------------------------------------------------- a whole case


def concept_prompts(model: VLSegModel) -> torch.Tensor:
    """Embeddings of the canonical prompts the labelling needs (WT, TC, ET: NCR and ED are
    derived from them), (3, E), in ``labelling_sources(model.config.concepts)`` order."""
    return model.embed_prompts([vocab.concept(c).canonical_prompt for c in labelling_sources(model.config.concepts)])


def predict_probabilities(model: VLSegModel, case: Case, *, prompts: torch.Tensor | None = None,
                          device: str | None = None) -> dict[str, np.ndarray]:
    """Probabilities of the labelling's sources (WT, TC, ET) on the case's RAS+ grid."""
    from vlseg.model.inference import decode, prepare

    if prompts is None:
        prompts = concept_prompts(model)
    prepared = prepare(model, case, device=device)        # encode image once
    probs = decode(model, prepared, prompts)              # (3, X, Y, Z)
    return dict(zip(labelling_sources(model.config.concepts), probs))


_PRESENCE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its presence model


def presence_of(model: VLSegModel) -> Presence:
    """The presence model fitted for ``model``'s weights (``presence.json`` beside them), else
    the identity (nothing emptied, probabilities None)."""
    known = _PRESENCE.get(model)
    if known is None:  # read once per loaded model (benchmarks call predict_masks per case)
        source = getattr(model, "source", None)
        folder = None if source is None else (source.adapter or source.checkpoint)
        known = Presence.load(folder) if folder is not None else Presence.identity("no checkpoint folder")
        _PRESENCE[model] = known
    return known


def predict_masks(model: VLSegModel, case: Case, *, threshold: float = 0.5,
                  prompts: torch.Tensor | None = None, device: str | None = None,
                  presence: Presence | None = None, ruled_out: Iterable[str] = (),
                  refiner: Refiner | None = None) -> dict[str, np.ndarray]:
    """Boolean RAS+ masks of all five concepts on the case's grid, as ``Segmenter`` makes them
    (it too decodes only the labelling's sources, and empties what its presence model calls
    absent; ``presence`` defaults to the one beside the model's weights; ``ruled_out``: concepts
    the scan is taken not to hold, as ``timepoint="pre"`` does for the cavity). With ``refiner``:
    through the refinement stage, exactly as the predictor does (``prompts`` must then be None)."""
    if refiner is not None:
        if prompts is not None:
            raise ValueError("predict_masks with a refiner uses the canonical prompts; pass prompts=None")
        predictor = Predictor(model, device=device or "cpu", threshold=threshold, refiner=refiner,
                              presence=presence)
        predictor.set_case(case)
        predictor.rule_out(ruled_out)
        return predictor.masks(model.config.concepts)
    probs = predict_probabilities(model, case, prompts=prompts, device=device)
    presence = presence if presence is not None else presence_of(model)
    return presence.label(probs, case.affine, threshold=threshold, ruled_out=ruled_out,
                          sequences=case.images)[1]
