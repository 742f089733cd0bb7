"""Named model configs (``vlseg/configs/*.json``) -> models (``cli.py`` lists them: ``vlseg models``)."""
from __future__ import annotations

from typing import Any, Mapping

from vlseg.model.config import ModelConfig, list_config_names, load_named_config
from vlseg.model.vlseg_model import VLSegModel
from vlseg.text import TextEncoder, build_text_encoder
from vlseg.text.lora import inject_lora


def list_models() -> list[str]:
    """Names accepted by ``build_model``."""
    return list_config_names()


def resolve_config(name_or_config: str | ModelConfig | Mapping[str, Any]) -> ModelConfig:
    if isinstance(name_or_config, ModelConfig):
        return name_or_config
    if isinstance(name_or_config, Mapping):
        return ModelConfig.from_dict(name_or_config)
    return load_named_config(str(name_or_config))


def add_text_lora(text_encoder: TextEncoder, *, rank: int, alpha: int) -> None:
    """Inject LoRA adapters (PEFT's layout, ``vlseg.text.lora``) into the text backbone; freeze
    everything but the adapters."""
    inject_lora(text_encoder.backbone, tuple(text_encoder.lora_target_modules), rank=rank, alpha=alpha)
    for name, p in text_encoder.named_parameters():
        p.requires_grad_("lora_" in name)
    text_encoder.clear_cache()


def build_model(name_or_config: str | ModelConfig | Mapping[str, Any] = "tiny", *,
                text_encoder: TextEncoder | None = None) -> VLSegModel:
    """Build an (untrained) model from a preset name, a ModelConfig or a config dict.

    The text backbone is frozen; with ``text_lora_rank > 0`` LoRA adapters are injected into it
    and only those train. ``text_encoder`` may be passed to reuse an already loaded one (it must
    match ``config.text_encoder`` and must not carry adapters yet).
    """
    config = resolve_config(name_or_config)
    text = text_encoder if text_encoder is not None else build_text_encoder(config.text_encoder)
    for p in text.parameters():
        p.requires_grad_(False)
    if config.text_lora_rank > 0:
        add_text_lora(text, rank=config.text_lora_rank, alpha=config.text_lora_alpha)
    model = VLSegModel(config=config, text_encoder=text)
    model.eval()
    return model
