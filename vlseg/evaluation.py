"""Scoring a model on a labelled case, through the predictor's own path.

Shared by ``bench/evaluate_model.py`` and the robustness benchmark (``vlseg.benchmarks.robustness``):
the case restricted to a sequence subset, the masks ``Segmenter`` would give
(``vlseg.predict.predict_masks``), scored against the case's own labels
(``vlseg.metrics.case_metrics``).
"""
from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Iterator, Mapping, NamedTuple, Sequence

if TYPE_CHECKING:  # types only: importing torch and the model stays the caller's choice
    import torch

    from vlseg.io import Case
    from vlseg.model import VLSegModel
    from vlseg.model.refiner import Refiner

# concept -> metric name -> value, as ``vlseg.metrics.case_metrics`` returns them
CaseMetrics = dict[str, dict[str, float]]


class SubsetScore(NamedTuple):
    """One sequence subset of a case, scored: its name, the seconds prediction took, the metrics;
    with a refinement stage also the first stage's own metrics (from the same encoding)."""

    subset: str
    seconds: float
    metrics: CaseMetrics
    first_stage: CaseMetrics | None = None


def with_sequences(case: Case, sequences: Sequence[str]) -> Case:
    """The case with only the named sequences (the others left out, as a user would)."""
    return dataclasses.replace(case, images={k: v for k, v in case.images.items() if k in sequences})


def score_subsets(model: VLSegModel, case: Case, subsets: Mapping[str, Sequence[str]], *,
                  prompts: torch.Tensor | None = None, threshold: float = 0.5, device: str | None = None,
                  include_lesion_wise: bool = True, refiner: Refiner | None = None) -> Iterator[SubsetScore]:
    """For each named subset of sequences, its :class:`SubsetScore` (name, seconds to predict,
    ``case_metrics``; with ``refiner``, through the refinement stage as ``Segmenter`` answers, and
    the first stage alone scored too, as ``--fast`` answers).

    ``case`` is a labelled ``vlseg.io.Case``; ``prompts`` the model's concept prompts
    (``vlseg.predict.concept_prompts``, computed once per model by the caller, else per call).
    A generator, so callers can report each subset as it is scored.
    """
    from vlseg.metrics import case_metrics
    from vlseg.predict import Predictor, predict_masks

    if case.labels is None:
        raise ValueError(f"{case.case_id}: case has no labels to score against")

    def score(masks) -> CaseMetrics:
        return case_metrics(masks, case.labels, case.spacing, include_lesion_wise=include_lesion_wise)

    for name, sequences in subsets.items():
        sub = with_sequences(case, sequences)
        t0 = time.perf_counter()
        if refiner is None:
            pred = predict_masks(model, sub, threshold=threshold, prompts=prompts, device=device)
            yield SubsetScore(name, time.perf_counter() - t0, score(pred))
            continue
        predictor = Predictor(model, device=device or "cpu", threshold=threshold, refiner=refiner)
        predictor.set_case(sub)
        pred = predictor.masks(model.config.concepts)
        seconds = time.perf_counter() - t0
        yield SubsetScore(name, seconds, score(pred), score(predictor.first_stage_masks()))


__all__ = ["CaseMetrics", "SubsetScore", "score_subsets", "with_sequences"]
