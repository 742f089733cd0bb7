"""LoRA on the text backbone's Linear layers, laid out exactly as PEFT lays it out.

A targeted ``nn.Linear`` named ``query`` becomes a :class:`LoraLinear` whose state-dict keys are
PEFT's (``query.base_layer.weight``, ``query.lora_A.default.weight``,
``query.lora_B.default.weight``), with PEFT's default initialisation (A Kaiming-uniform, B zero)
and scaling ``alpha / rank``; checkpoints written with ``peft.inject_adapter_in_model`` load
unchanged and the other way round. Why not PEFT itself here: ``import peft`` imports most of
transformers (generation utilities, several model families, torch._dynamo) and was 6-10 s of
every model load. The segmentation-network adapters (``vlseg.model.adapters``) still use PEFT;
they are loaded only when an adapter folder is asked for.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

ADAPTER_NAME = "default"  # PEFT's adapter name: part of every key


class LoraLinear(nn.Module):
    """``base(x) + B(A(x)) * alpha / rank`` with the base frozen (PEFT's ``lora.Linear``)."""

    def __init__(self, base: nn.Linear, *, rank: int, alpha: float) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base_layer = base
        self.lora_A = nn.ModuleDict({ADAPTER_NAME: nn.Linear(base.in_features, rank, bias=False)})
        self.lora_B = nn.ModuleDict({ADAPTER_NAME: nn.Linear(rank, base.out_features, bias=False)})
        self.scaling = float(alpha) / float(rank)
        nn.init.kaiming_uniform_(self.lora_A[ADAPTER_NAME].weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B[ADAPTER_NAME].weight)
        self.lora_A.to(base.weight.device, base.weight.dtype)
        self.lora_B.to(base.weight.device, base.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.lora_A[ADAPTER_NAME], self.lora_B[ADAPTER_NAME]
        return self.base_layer(x) + b(a(x.to(a.weight.dtype))) * self.scaling


def inject_lora(backbone: nn.Module, targets: tuple[str, ...], *, rank: int, alpha: float) -> list[str]:
    """Wrap every ``nn.Linear`` whose name is, or ends with ``.`` + , one of ``targets`` (PEFT's
    suffix rule). Returns the wrapped module names; raises if none matched."""
    names = [n for n, m in backbone.named_modules()
             if isinstance(m, nn.Linear) and any(n == t or n.endswith("." + t) for t in targets)]
    if not names:
        raise ValueError(f"no Linear layer of the text backbone matches the LoRA targets {list(targets)}")
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = backbone.get_submodule(parent_name) if parent_name else backbone
        setattr(parent, child, LoraLinear(getattr(parent, child), rank=rank, alpha=alpha))
    return names


@contextmanager
def lora_disabled(module: nn.Module) -> Iterator[None]:
    """Run ``module`` as its frozen base inside the block (every LoRA update scaled by 0, PEFT's
    ``disable_adapter()``); the scalings are restored on exit. Callers must not cache what they
    compute inside under the adapted model's name."""
    layers = [m for m in module.modules() if isinstance(m, LoraLinear)]
    saved = [m.scaling for m in layers]
    try:
        for m in layers:
            m.scaling = 0.0
        yield
    finally:
        for m, s in zip(layers, saved):
            m.scaling = s
