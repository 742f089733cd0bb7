"""Fine-tuning adapters: PEFT LoRA on the segmentation network (Conv3d/Linear) and the text encoder.

    model = load_model("default")                       # the bundled base checkpoint
    spec = add_adapters(model, LoraConfig(enabled=True, rank=2))
    ... train (only ``lora_`` parameters require grad) ...
    save_adapter(model, spec, "runs/ft/adapter", provenance)   # adapter.safetensors + adapter.json

    base = load_model("default"); load_adapter(base, "runs/ft/adapter")   # applies it on top

The adapter holds only LoRA tensors (a few % of the full model). If the base model already has
text LoRA adapters (``text_lora_rank > 0``), those are fine-tuned in place and stored in the
adapter too; otherwise new ones are injected with ``text_rank``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlseg.errors import ModelError
from vlseg.fileio import atomic_path, write_json_atomic
from vlseg.training.config import LoraConfig

ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter.json"
ADAPTER_FORMAT = "vlseg-lora-adapter"
SEG_PARTS: tuple[str, ...] = ("image_encoder", "prompt_encoder", "head")


@dataclass(frozen=True)
class AdapterSpec:
    """How the adapter was injected (saved in adapter.json; replayed by load_adapter)."""

    rank: int
    alpha: float
    dropout: float
    targets: dict[str, tuple[str, ...]]   # part -> module names (relative to the part)
    text_rank: int                        # > 0: LoRA was injected into the text encoder by the adapter
    text_alpha: float
    base_model: str                       # model config name of the base

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["targets"] = {k: list(v) for k, v in self.targets.items()}
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "AdapterSpec":
        try:
            return cls(rank=int(d["rank"]), alpha=float(d["alpha"]), dropout=float(d["dropout"]),
                       targets={str(k): tuple(map(str, v)) for k, v in d["targets"].items()},
                       text_rank=int(d["text_rank"]), text_alpha=float(d["text_alpha"]),
                       base_model=str(d["base_model"]))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ModelError(f"adapter spec is malformed ({e})") from None


def seg_targets(model: nn.Module, patterns: tuple[str, ...] = ()) -> dict[str, tuple[str, ...]]:
    """Conv3d / Linear module names per segmentation part, filtered by name substrings."""
    out: dict[str, tuple[str, ...]] = {}
    for part in SEG_PARTS:
        module = getattr(model, part)
        names = [n for n, m in module.named_modules()
                 if isinstance(m, (nn.Conv3d, nn.Linear)) and "lora_" not in n
                 and (not patterns or any(p in f"{part}.{n}" for p in patterns))]
        if names:
            out[part] = tuple(names)
    if not out:
        raise ModelError(f"no Conv3d/Linear layers match the LoRA targets {list(patterns)}")
    return out


def _inject(model: nn.Module, spec: AdapterSpec) -> None:
    from peft import LoraConfig as PeftLoraConfig
    from peft import inject_adapter_in_model

    from vlseg.model.registry import add_text_lora

    for part, names in spec.targets.items():
        module = getattr(model, part, None)
        if module is None:
            raise ModelError(f"adapter targets unknown model part {part!r}")
        known = {n for n, _ in module.named_modules()}
        missing = [n for n in names if n not in known]
        if missing:
            raise ModelError(f"adapter targets layers the model lacks: {part}.{missing[0]}")
        cfg = PeftLoraConfig(r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                             target_modules=list(names))
        setattr(model, part, inject_adapter_in_model(cfg, module))
    if spec.text_rank > 0:
        add_text_lora(model.text_encoder, rank=spec.text_rank, alpha=int(spec.text_alpha))


def mark_only_lora_trainable(model: nn.Module) -> None:
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)


def add_adapters(model: nn.Module, config: LoraConfig) -> AdapterSpec:
    """Inject LoRA into the segmentation network (+ text encoder); freeze everything else."""
    has_text_lora = any("lora_" in n for n, _ in model.text_encoder.named_parameters())
    text_rank = 0 if has_text_lora else config.text_rank
    spec = AdapterSpec(rank=config.rank, alpha=config.alpha, dropout=config.dropout,
                       targets=seg_targets(model, config.targets), text_rank=text_rank,
                       text_alpha=2.0 * text_rank, base_model=model.config.name)
    _inject(model, spec)
    mark_only_lora_trainable(model)
    model.text_encoder.clear_cache()
    return spec


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every LoRA tensor of the model (segmentation and text side)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items() if "lora_" in k}


def save_adapter(model: nn.Module, spec: AdapterSpec, path_dir: str | Path,
                 provenance: dict[str, Any] | None = None) -> Path:
    """Write ``adapter.safetensors`` + ``adapter.json`` (spec + provenance) atomically."""
    from safetensors.torch import save_file

    out = Path(path_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = adapter_state_dict(model)
    with atomic_path(out / ADAPTER_WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": ADAPTER_FORMAT})
    write_json_atomic(out / ADAPTER_CONFIG, {
        "format": ADAPTER_FORMAT, "format_version": 1, "spec": spec.to_json(),
        "parameters": int(sum(v.numel() for v in state.values())),
        "provenance": dict(provenance or {}),
    })
    return out


def read_adapter_spec(path_dir: str | Path) -> AdapterSpec:
    path = Path(path_dir) / ADAPTER_CONFIG
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path}: unreadable adapter config ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != ADAPTER_FORMAT or not isinstance(meta.get("spec"), dict):
        raise ModelError(f"{path}: not a vlseg LoRA adapter (format must be {ADAPTER_FORMAT!r})")
    return AdapterSpec.from_json(meta["spec"])


def load_adapter_weights(model: nn.Module, path_dir: str | Path) -> None:
    """Strictly load adapter tensors into a model that already has the adapter's structure."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from vlseg.model.checkpoint import _check_safetensors

    weights = Path(path_dir) / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise ModelError(f"{weights}: adapter weights not found")
    _check_safetensors(weights)
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelError(f"{weights}: corrupt safetensors file ({e})") from None
    expected = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ModelError(f"{weights}: adapter does not fit this model (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    bad = [k for k, v in state.items() if v.shape != expected[k].shape]
    if bad:
        raise ModelError(f"{weights}: adapter tensor shapes do not fit the model for {bad[:3]}")
    model.load_state_dict(state, strict=False)
    model.text_encoder.clear_cache()


def load_adapter(model: nn.Module, path_dir: str | Path) -> nn.Module:
    """Apply a saved adapter on top of a base model (loaded with ``load_model``); returns it."""
    spec = read_adapter_spec(path_dir)
    if spec.base_model != model.config.name:
        raise ModelError(f"{path_dir}: adapter was trained on a {spec.base_model!r} model, "
                         f"not {model.config.name!r}")
    has_text_lora = any("lora_" in n for n, _ in model.text_encoder.named_parameters())
    if spec.text_rank == 0 and not has_text_lora:
        # The adapter fine-tuned text LoRA layers its base had; this base has none.
        raise ModelError(f"{path_dir}: adapter expects a base model with text LoRA adapters")
    if spec.text_rank > 0 and has_text_lora:
        raise ModelError(f"{path_dir}: adapter adds text LoRA but this base model already has some")
    _inject(model, spec)
    load_adapter_weights(model, path_dir)
    for p in model.parameters():
        p.requires_grad_(False)
    return model
