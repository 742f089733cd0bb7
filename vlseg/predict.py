"""The masks users get for a whole case in one call, for benchmarks and evaluation.

``Segmenter`` answers questions and caches per concept; benchmarks want every concept of many
cases. Both go through the same steps — encode once, decode the regions with their canonical
prompts, then the case's one nested labelling (``vlseg.reasoning.labelling.final_masks``) — so a
figure measured here is a figure about what ``Segmenter`` returns.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from vlseg import vocab
from vlseg.reasoning.labelling import final_masks, labelling_sources

if TYPE_CHECKING:
    import torch

    from vlseg.io import Case
    from vlseg.model.vlseg_model import VLSegModel


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


def predict_masks(model: VLSegModel, case: Case, *, threshold: float = 0.5,
                  prompts: torch.Tensor | None = None,
                  device: str | None = None) -> dict[str, np.ndarray]:
    """Boolean RAS+ masks of all five concepts on the case's grid, as ``Segmenter`` makes them
    (it too decodes only the labelling's sources)."""
    probs = predict_probabilities(model, case, prompts=prompts, device=device)
    return final_masks(probs, case.affine, threshold=threshold)
