"""The one text-encoder interface every backend implements, with a per-phrase embedding cache.

``forward(**tokens)`` is the differentiable path (training, LoRA). ``encode(phrases)`` is the
no-grad path used at inference: each phrase runs through the backbone at most once per process
(until the weights may have changed: ``train(True)``, ``load_state_dict`` or ``clear_cache()``).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn


class TextEncoder(nn.Module):
    """Phrases -> L2-normalised embeddings ``(N, dim)``.

    Subclasses set ``self.backbone`` (the module LoRA adapters go into) and implement
    ``tokenize`` and ``_embed``.
    """

    #: Linear-layer names LoRA targets in this backend's backbone (suffix match, as PEFT does).
    lora_target_modules: tuple[str, ...] = ()

    def __init__(self, *, name: str, dim: int) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"text encoder dim must be positive, got {dim}")
        self.name = name
        self.dim = int(dim)
        self._cache: dict[str, torch.Tensor] = {}
        self.backbone_calls = 0  # how many times the backbone ran (tests check the cache with it)

    # -- to implement ----------------------------------------------------------------------
    def tokenize(self, phrases: list[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _embed(self, **tokens: torch.Tensor) -> torch.Tensor:
        """Backbone + pooling, unnormalised ``(N, dim)``."""
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    def forward(self, **tokens: torch.Tensor) -> torch.Tensor:
        """Differentiable: tokens from ``tokenize`` -> ``(N, dim)`` unit vectors."""
        self.backbone_calls += 1
        tokens = {k: v.to(self.device) for k, v in tokens.items()}
        return F.normalize(self._embed(**tokens).float(), dim=-1)

    def encode(self, phrases: list[str]) -> torch.Tensor:
        """No-grad ``(N, dim)`` embeddings; each distinct phrase is computed once and cached.

        In training mode nothing is cached (weights are changing), but nothing is differentiable
        either: use ``forward(**tokenize(phrases))`` for that.
        """
        if isinstance(phrases, str):
            raise TypeError("encode() takes a list of phrases, not a single string")
        phrases = [str(p) for p in phrases]
        device = self.device
        if not phrases:
            return torch.zeros(0, self.dim, device=device)
        todo = list(dict.fromkeys(p for p in phrases if p not in self._cache or self.training))
        if todo:
            with torch.no_grad():
                emb = self(**self.tokenize(todo)).detach()  # (len(todo), dim)
            fresh = dict(zip(todo, emb))
            if not self.training:
                self._cache.update(fresh)
        else:
            fresh = {}
        rows = [fresh[p] if p in fresh else self._cache[p] for p in phrases]
        return torch.stack(rows).to(device)

    def clear_cache(self) -> None:
        self._cache.clear()

    def train(self, mode: bool = True) -> "TextEncoder":
        # Weights may change (train) or have changed (back to eval after training).
        if mode or self.training:
            self.clear_cache()
        return super().train(mode)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        self.clear_cache()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _apply(self, fn, recurse: bool = True):  # .to(), .half(), ...: drop cached tensors
        self.clear_cache()
        return super()._apply(fn, recurse) if recurse else super()._apply(fn)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, dim={self.dim}"
