"""Training validation scores the masks users get (Segmenter's labelling), not raw p > 0.5."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from vlseg.model.config import ModelConfig

import vlseg.reasoning.labelling
import vlseg.reasoning.presence
from vlseg.training import validate


@dataclasses.dataclass
class _Case:
    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    affine: np.ndarray


class _TextEncoder:
    def clear_cache(self) -> None:
        pass


class _Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.text_encoder = _TextEncoder()
        self.config = ModelConfig(name="fake")  # names the concepts validation decodes

    def embed_prompts(self, phrases):
        return torch.zeros(len(phrases), 2)


def test_validation_cleans_masks_like_the_segmenter(monkeypatch):
    shape = (20, 20, 20)
    lesion = np.zeros(shape, bool)
    lesion[5:10, 5:10, 5:10] = True
    probs = np.where(lesion, 0.9, 0.0).astype(np.float32)
    probs[16, 16, 16] = 0.9          # one 8 mm³ speck: below the 0.05 ml minimum lesion, removed
    case = _Case(images={s: np.zeros(shape, np.float32) for s in ("t1n", "t1c", "t2w", "t2f")},
                 labels={"WT": lesion}, affine=np.diag([2.0, 2.0, 2.0, 1.0]))
    monkeypatch.setattr(validate, "prepare", lambda model, case, device: object())
    monkeypatch.setattr(validate, "decode", lambda model, prepared, prompts: np.stack([probs] * len(prompts)))
    calls = []

    def spy(probs, affine, *, threshold):
        calls.append(threshold)
        return vlseg.reasoning.labelling.final_masks(probs, affine, threshold=threshold)

    # The very function the Segmenter uses (its predictor labels through Presence.label)
    assert validate.final_masks is vlseg.reasoning.labelling.final_masks is vlseg.reasoning.presence.final_masks
    monkeypatch.setattr(validate, "final_masks", spy)
    scores = validate.validate_cases(_Model(), [case], heldout=False)
    assert calls == [0.5]
    assert scores["all4"]["WT"] == 1.0            # raw p > 0.5 would score 250/250.5 < 1
    raw = 2 * lesion.sum() / (lesion.sum() + (probs > 0.5).sum())
    assert raw < 1.0
