"""The model a run trains: from a config preset, or a full checkpoint (+ new LoRA adapters).

Loading and adapter formats live in ``vlseg.model`` (``checkpoint``, ``adapters``, ``loading``);
this module only decides what trains: the segmentation network and the text encoder's LoRA
layers (its base stays frozen), or only the adapters when fine-tuning with ``lora.enabled``.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from vlseg.errors import InputError
from vlseg.model.adapters import AdapterSpec, BaseRef, add_adapters, load_adapter_weights
from vlseg.model.checkpoint import WEIGHTS_FILE, load_checkpoint, load_state_into, read_checkpoint_config
from vlseg.model.config import ModelConfig
from vlseg.model.loading import checkpoint_ref, resolve_model
from vlseg.model.registry import build_model, resolve_config
from vlseg.model.vlseg_model import VLSegModel
from vlseg.training.config import TrainConfig


def init_folder(config: TrainConfig) -> Path:
    """The full checkpoint folder a fine-tuning run starts from (``init_checkpoint``)."""
    assert config.init_checkpoint is not None
    source = resolve_model(None if config.init_checkpoint == "default" else config.init_checkpoint)
    if source.adapter is not None:
        raise InputError(f"init_checkpoint {config.init_checkpoint} is a LoRA adapter; start from a full "
                         f"checkpoint (its base: {source.checkpoint})")
    return source.checkpoint


def base_ref(config: TrainConfig) -> BaseRef | None:
    """What an adapter trained by this run names as its base (None when not fine-tuning)."""
    if config.init_checkpoint is None:
        return None
    return checkpoint_ref(init_folder(config))


def resolve_model_config(config: TrainConfig) -> ModelConfig:
    """The ModelConfig this run trains (from the init checkpoint when fine-tuning)."""
    if config.init_checkpoint is not None:
        model_config = ModelConfig.from_dict(read_checkpoint_config(init_folder(config))["model"])
    else:
        model_config = resolve_config(config.model)
        if config.text_lora_rank is not None:
            model_config = model_config.replace(text_lora_rank=config.text_lora_rank)
    if config.concepts is not None:
        model_config = model_config.replace(concepts=tuple(config.concepts))
    return model_config


def set_trainable(model: nn.Module) -> None:
    """Segmentation network trains; of the text encoder only its LoRA adapters (base frozen)."""
    for name, p in model.named_parameters():
        p.requires_grad_(not name.startswith("text_encoder.") or "lora_" in name)


def check_frozen_text_base(model: nn.Module) -> None:
    bad = [n for n, p in model.text_encoder.named_parameters() if p.requires_grad and "lora_" not in n]
    if bad:
        raise AssertionError(f"text encoder base weights must stay frozen; trainable: {bad[:3]}")


def build_training_model(config: TrainConfig, *,
                         resume_dir: Path | None = None) -> tuple[VLSegModel, AdapterSpec | None]:
    """Model (+ adapter spec when fine-tuning with LoRA) ready to train; from ``resume_dir`` if given."""
    spec = None
    if config.init_checkpoint is not None:
        model = load_checkpoint(init_folder(config))
        if config.lora.enabled:
            lora = config.lora
            spec = add_adapters(model, rank=lora.rank, alpha=lora.alpha, dropout=lora.dropout,
                                targets=tuple(lora.targets), text_rank=lora.text_rank)
            if resume_dir is not None:
                load_adapter_weights(model, resume_dir)
        elif resume_dir is not None:
            load_state_into(model, resume_dir / WEIGHTS_FILE)
    else:
        model = build_model(resolve_model_config(config))
        if resume_dir is not None:
            load_state_into(model, resume_dir / WEIGHTS_FILE)
    if config.concepts is not None:
        model.config = model.config.replace(concepts=tuple(config.concepts))
    if spec is None:
        set_trainable(model)
    check_frozen_text_base(model)
    model.train()
    return model, spec
