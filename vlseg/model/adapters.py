"""LoRA adapters: PEFT LoRA on the segmentation network (Conv3d/Linear) and the text encoder.

An adapter folder (what a ``finetune_lora`` run writes to ``checkpoints/step_*`` and ``best``)::

    adapter.safetensors   only the LoRA tensors (a few % of the full model)
    adapter.json          {"format": "vlseg-lora-adapter", "spec": how LoRA was injected,
                           "base": {"sha256", "name" (bundled) or "path"}, "provenance": ...}

    spec = add_adapters(model, rank=2, alpha=4.0)     # inject; only ``lora_`` params train
    save_adapter(model, spec, "runs/ft/best", base=BaseRef.of(folder, sha256))
    load_model("runs/ft/best")                        # vlseg.model.loading: base + adapter

The adapter names its base by the SHA-256 of the base's ``model.safetensors``; loading it on
any other base is refused (``loading.resolve_model``). If the base already has text LoRA layers
(``text_lora_rank > 0``) those are fine-tuned in place and stored in the adapter; otherwise new
ones of rank ``text_rank`` are injected.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlseg.errors import ModelError
from vlseg.fileio import atomic_path, write_json_atomic
from vlseg.model.registry import add_text_lora
from vlseg.model.storage import (
    cached_sha256, git_commit, library_versions, load_safetensors, read_format_json, verify_sha256,
)

ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter.json"
ADAPTER_FORMAT = "vlseg-lora-adapter"
ADAPTER_FORMAT_VERSION = 1
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


@dataclass(frozen=True)
class BaseRef:
    """The full checkpoint an adapter was trained on: its weights' SHA-256 and where to find it."""

    sha256: str
    name: str | None = None   # a bundled checkpoint (vlseg/weights/<name>)
    path: str | None = None   # else the folder it was trained from

    def to_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "name": self.name, "path": self.path}

    @classmethod
    def from_json(cls, d: Any, *, where: Path) -> "BaseRef":
        if not isinstance(d, dict) or not isinstance(d.get("sha256"), str) or len(d["sha256"]) != 64:
            raise ModelError(f"{where}: adapter names no valid base checkpoint sha256; "
                             "retrain it with this vlseg version")
        name, path = d.get("name"), d.get("path")
        return cls(sha256=d["sha256"], name=str(name) if name else None, path=str(path) if path else None)

    def where(self) -> str:
        """How a user would name the base: the bundled name, else its path."""
        return self.name or self.path or "unknown"


@dataclass(frozen=True)
class AdapterInfo:
    """What adapter.json says about an adapter folder."""

    folder: Path
    spec: AdapterSpec
    base: BaseRef
    parameters: int
    provenance: dict[str, Any] = field(default_factory=dict)


def is_adapter_folder(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_sha256(folder: str | Path) -> str:
    """SHA-256 of an adapter's weights file."""
    return cached_sha256(Path(folder) / ADAPTER_WEIGHTS)


# --------------------------------------------------------------------------------------------
# injecting

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


def inject_adapter(model: nn.Module, spec: AdapterSpec) -> None:
    """Add (zero-initialised) LoRA layers as ``spec`` describes; weights are loaded separately."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import inject_adapter_in_model

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


def has_text_lora(model: nn.Module) -> bool:
    return any("lora_" in n for n, _ in model.text_encoder.named_parameters())


def add_adapters(model: nn.Module, *, rank: int, alpha: float, dropout: float = 0.0,
                 targets: tuple[str, ...] = (), text_rank: int = 0) -> AdapterSpec:
    """Inject LoRA into the segmentation network (+ text encoder); freeze everything else.

    ``targets``: substrings of ``part.module`` names to adapt (empty: every Conv3d/Linear).
    ``text_rank``: rank of new text LoRA layers, used only if the base has none yet.
    """
    text_rank = 0 if has_text_lora(model) else text_rank
    spec = AdapterSpec(rank=rank, alpha=alpha, dropout=dropout,
                       targets=seg_targets(model, tuple(targets)), text_rank=text_rank,
                       text_alpha=2.0 * text_rank, base_model=model.config.name)
    inject_adapter(model, spec)
    mark_only_lora_trainable(model)
    model.text_encoder.clear_cache()
    return spec


# --------------------------------------------------------------------------------------------
# saving and loading

def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every LoRA tensor of the model (segmentation and text side)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items() if "lora_" in k}


def save_adapter(model: nn.Module, spec: AdapterSpec, path_dir: str | Path, *, base: BaseRef,
                 provenance: dict[str, Any] | None = None) -> Path:
    """Write ``adapter.safetensors`` + ``adapter.json`` (spec, base, provenance) atomically."""
    from safetensors.torch import save_file

    out = Path(path_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = adapter_state_dict(model)
    with atomic_path(out / ADAPTER_WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": ADAPTER_FORMAT})
    prov = dict(provenance or {})
    prov.setdefault("git_commit", git_commit())
    prov.setdefault("versions", library_versions())
    prov["weights_sha256"] = adapter_sha256(out)
    write_json_atomic(out / ADAPTER_CONFIG, {
        "format": ADAPTER_FORMAT, "format_version": ADAPTER_FORMAT_VERSION, "spec": spec.to_json(),
        "base": base.to_json(), "parameters": int(sum(v.numel() for v in state.values())),
        "provenance": prov,
    })
    return out


def read_adapter(path_dir: str | Path) -> AdapterInfo:
    """Parse ``adapter.json`` (format, spec and base checked)."""
    folder = Path(path_dir)
    meta = read_format_json(folder / ADAPTER_CONFIG, fmt=ADAPTER_FORMAT, version=ADAPTER_FORMAT_VERSION,
                            what="vlseg LoRA adapter", required=("spec",))
    prov = meta.get("provenance") if isinstance(meta.get("provenance"), dict) else {}
    # Adapters written before "base" existed recorded it in their provenance
    base = BaseRef.from_json(meta.get("base", prov.get("base_checkpoint")), where=folder / ADAPTER_CONFIG)
    return AdapterInfo(folder=folder, spec=AdapterSpec.from_json(meta["spec"]), base=base,
                       parameters=int(meta.get("parameters", 0)), provenance=dict(prov))


def load_adapter_weights(model: nn.Module, path_dir: str | Path) -> None:
    """Strictly load adapter tensors into a model that already has the adapter's structure,
    after checking them against the SHA-256 adapter.json records."""
    weights = Path(path_dir) / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise ModelError(f"{weights}: adapter weights not found")
    info = read_adapter(path_dir)
    verify_sha256(weights, info.provenance.get("weights_sha256"), recorded_in=info.folder / ADAPTER_CONFIG)
    state = load_safetensors(weights)
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
    """Apply a saved adapter on top of an already loaded base model; frozen, returned.

    This checks the structure only; ``vlseg.model.load_model(adapter_folder)`` also finds the
    base and checks its SHA-256.
    """
    spec = read_adapter(path_dir).spec
    if spec.base_model != model.config.name:
        raise ModelError(f"{path_dir}: adapter was trained on a {spec.base_model!r} model, "
                         f"not {model.config.name!r}")
    if spec.text_rank == 0 and not has_text_lora(model):
        # The adapter fine-tuned text LoRA layers its base had; this base has none.
        raise ModelError(f"{path_dir}: adapter expects a base model with text LoRA adapters")
    if spec.text_rank > 0 and has_text_lora(model):
        raise ModelError(f"{path_dir}: adapter adds text LoRA but this base model already has some")
    inject_adapter(model, spec)
    load_adapter_weights(model, path_dir)
    for p in model.parameters():
        p.requires_grad_(False)
    return model
