"""open_clip text tower backend: ``open_clip:<arch>[:<weights file>]``.

``<arch>`` is an open_clip registry name (``ViT-B-32`` ...) or a path to an open_clip model-config
JSON (``{"embed_dim": .., "text_cfg": {..}}``). Only the text tower is built. Weights come from a
local file (``.safetensors``, or a torch state dict loaded with ``weights_only=True``); without one
the tower is randomly initialised (useful for tests, useless for prompting).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from vlseg.errors import ModelError
from vlseg.text.base import TextEncoder

# Top-level keys of an open_clip CLIP state dict that belong to the text side.
_TEXT_KEYS = ("transformer.", "token_embedding.", "positional_embedding", "ln_final.",
              "text_projection", "attn_mask")


def _model_config(arch: str) -> dict:
    import open_clip

    path = Path(arch)
    if path.suffix == ".json":
        if not path.is_file():
            raise ModelError(f"{path}: open_clip model config not found")
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ModelError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from e
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise ModelError(
            f"unknown open_clip architecture {arch!r}; use a name from open_clip.list_models() "
            "or a path to a model-config .json"
        )
    return cfg


def _load_text_state(weights: Path) -> dict[str, torch.Tensor]:
    if not weights.is_file():
        raise ModelError(f"{weights}: open_clip weights file not found")
    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(weights))
    else:
        try:  # weights_only: tensors only, no arbitrary code from the file
            state = torch.load(str(weights), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any failure means "not usable weights"
            raise ModelError(f"{weights}: cannot read open_clip weights ({type(e).__name__})") from e
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith("text.") for k in state):  # CustomTextCLIP layout
        return {k[len("text."):]: v for k, v in state.items() if k.startswith("text.")}
    return {k: v for k, v in state.items() if k.startswith(_TEXT_KEYS)}


class OpenCLIPTextEncoder(TextEncoder):
    lora_target_modules = ("c_fc", "c_proj")  # the MLP linears of each residual block

    def __init__(self, *, name: str, arch: str, weights: str | None = None) -> None:
        from open_clip.model import CLIPTextCfg, _build_text_tower
        from open_clip.tokenizer import SimpleTokenizer

        cfg = _model_config(arch)
        try:
            text_cfg = CLIPTextCfg(**cfg["text_cfg"])
            embed_dim = int(cfg["embed_dim"])
        except (KeyError, TypeError) as e:
            raise ModelError(f"open_clip config {arch!r} lacks a usable embed_dim/text_cfg: {e}") from e
        if text_cfg.hf_model_name or text_cfg.hf_tokenizer_name:
            raise ModelError(
                f"open_clip arch {arch!r} uses a Hugging Face text model; use hf:<local dir> instead"
            )
        super().__init__(name=name, dim=embed_dim)
        self.backbone = _build_text_tower(embed_dim, text_cfg, quick_gelu=bool(cfg.get("quick_gelu")))
        if weights:
            state = _load_text_state(Path(weights))
            missing, unexpected = self.backbone.load_state_dict(state, strict=False)
            missing = [k for k in missing if k != "attn_mask"]
            if missing or unexpected:
                raise ModelError(
                    f"{weights}: weights do not fit open_clip arch {arch!r} "
                    f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
                )
        self.tokenizer = SimpleTokenizer(context_length=text_cfg.context_length)

    def tokenize(self, phrases: list[str]) -> dict[str, torch.Tensor]:
        return {"input_ids": self.tokenizer(list(phrases))}  # (N, context_length)

    def _embed(self, **tokens: torch.Tensor) -> torch.Tensor:
        return self.backbone(tokens["input_ids"])  # (N, embed_dim), pooled + projected
