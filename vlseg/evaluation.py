"""Scoring a model on a labelled case, through the predictor's own path.

Shared by ``bench/evaluate_model.py`` and the robustness benchmark (``vlseg.benchmarks.robustness``):
the case restricted to a sequence subset, the masks ``Segmenter`` would give
(``vlseg.predict.predict_masks``), scored against the case's own labels
(``vlseg.metrics.case_metrics``).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Iterator, Mapping, Sequence


def with_sequences(case: Any, sequences: Sequence[str]) -> Any:
    """The case with only the named sequences (the others left out, as a user would)."""
    return dataclasses.replace(case, images={k: v for k, v in case.images.items() if k in sequences})


def score_subsets(model: Any, case: Any, subsets: Mapping[str, Sequence[str]], *, prompts: Any = None,
                  threshold: float = 0.5, device: str | None = None, include_lesion_wise: bool = True
                  ) -> Iterator[tuple[str, float, dict[str, dict[str, float]]]]:
    """For each named subset of sequences: ``(name, seconds to predict, case_metrics)``.

    ``case`` is a labelled ``vlseg.io.Case``; ``prompts`` the model's concept prompts
    (``vlseg.predict.concept_prompts``, computed once per model by the caller, else per call).
    A generator, so callers can report each subset as it is scored.
    """
    from vlseg.metrics import case_metrics
    from vlseg.predict import predict_masks

    if case.labels is None:
        raise ValueError(f"{case.case_id}: case has no labels to score against")
    for name, sequences in subsets.items():
        sub = with_sequences(case, sequences)
        t0 = time.perf_counter()
        pred = predict_masks(model, sub, threshold=threshold, prompts=prompts, device=device)
        seconds = time.perf_counter() - t0
        yield name, seconds, case_metrics(pred, case.labels, case.spacing, include_lesion_wise=include_lesion_wise)


__all__ = ["score_subsets", "with_sequences"]
