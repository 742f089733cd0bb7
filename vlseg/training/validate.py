"""Validation Dice per concept on whole cases, scoring the masks users get.

Cases are read with ``vlseg.io.load_case`` (never from the training cache), run through
``vlseg.model.inference.prepare``/``decode`` at full brain, turned into masks exactly as
``Segmenter`` does (``vlseg.reasoning.labelling.final_masks``: the nested WT ⊃ TC ⊃ ET labelling,
each thresholded with specks below the minimum lesion size removed, NCR and ED as differences)
and compared with the case's labels at input resolution. The best checkpoint is
therefore chosen on the masks a user receives. Each sequence subset in ``sequence_sets`` is
scored; with ``heldout`` the first subset is also scored with held-out free-text phrasings.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from vlseg.vocab import SEQUENCES
from vlseg.evaluation import with_sequences
from vlseg.metrics import dice
from vlseg.model.inference import decode, prepare
from vlseg.reasoning.labelling import final_masks
from vlseg.training.prompts import canonical_prompt, heldout_prompts


def subset_name(subset: Sequence[str]) -> str:
    return "all4" if tuple(subset) == SEQUENCES else "+".join(subset)


def _with_sequences(case: Any, subset: Sequence[str]) -> Any | None:
    sub = with_sequences(case, subset)
    return sub if sub.images else None


@torch.no_grad()
def validate_cases(
    model: Any,
    cases: Sequence[Any],
    *,
    sequence_sets: Sequence[Sequence[str]] = (SEQUENCES,),
    threshold: float = 0.5,
    heldout: bool = True,
    device: str | torch.device = "cpu",
) -> dict[str, dict[str, float]]:
    """Mean Dice per concept (and their mean) per sequence subset: {"all4": {"WT": .9, ..., "mean": ..}}.

    Masks are ``final_masks`` of the probabilities of the model's concepts (``model.config.concepts``),
    what ``Segmenter`` returns.
    """
    was_training = model.training
    model.eval()
    model.text_encoder.clear_cache()
    scores: dict[str, dict[str, list[float]]] = {}
    concepts = model.config.concepts
    canonical = model.embed_prompts([canonical_prompt(c) for c in concepts])       # (K, E)
    try:
        for i, case in enumerate(cases):
            if case.labels is None:
                continue
            for j, subset in enumerate(sequence_sets):
                sub = _with_sequences(case, subset)
                if sub is None:
                    continue
                prepared = prepare(model, sub, device=device)
                runs = [(subset_name(subset), canonical)]
                if heldout and j == 0:
                    phrases = [heldout_prompts(c)[i % len(heldout_prompts(c))] for c in concepts]
                    runs.append(("heldout_text", model.embed_prompts(phrases)))
                for key, prompts in runs:
                    probs = decode(model, prepared, prompts)                     # (K, X, Y, Z)
                    probs = probs.cpu().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs)
                    # What users get: the case's one nested labelling (as Segmenter)
                    masks = final_masks(dict(zip(concepts, probs)), case.affine, threshold=threshold)
                    for c in concepts:
                        if c not in case.labels:   # a partially labelled validation source
                            continue
                        scores.setdefault(key, {}).setdefault(c, []).append(dice(masks[c], case.labels[c]))
                del prepared
    finally:
        model.train(was_training)
    out: dict[str, dict[str, float]] = {}
    for key, per in scores.items():
        out[key] = {c: float(np.mean(v)) for c, v in per.items()}
        out[key]["mean"] = float(np.mean([out[key][c] for c in concepts if c in out[key]]))
    return out
