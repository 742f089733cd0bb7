"""Text-conditioned 3D segmentation model (SAM-style: one module per part).

    config.py         ModelConfig (frozen) + named presets in vlseg/configs/*.json
    image_encoder.py  residual U-Net -> multi-scale decoder features (once per scan)
    prompt_head.py    text emb -> prompt emb -> dynamic per-prompt 1x1x1 conv head
    vlseg_model.py    VLSegModel wiring them together
    registry.py       build_model(name), list_models()
    storage.py        safetensors checks, format-tagged JSON configs, hashes, provenance
    checkpoint.py     full checkpoints: save_checkpoint / load_checkpoint (safetensors + JSON)
    adapters.py       LoRA adapters: add_adapters / save_adapter / load_adapter (+ base sha256)
    loading.py        load_model(name | checkpoint folder | adapter folder): the one way in
    cli.py            `vlseg models [PATH ...]`
    preprocess.py     normalisation + resampling shared by training and inference
    inference.py      prepare(case) once, decode(prompts) many times
"""
from __future__ import annotations

from vlseg.model.adapters import AdapterSpec, BaseRef, add_adapters, load_adapter, save_adapter
from vlseg.model.checkpoint import checkpoint_sha256, load_checkpoint, save_checkpoint
from vlseg.model.config import ModelConfig
from vlseg.model.loading import ModelSource, describe_source, load_model, resolve_model
from vlseg.model.registry import build_model, list_models
from vlseg.model.vlseg_model import VLSegModel

__all__ = ["ModelConfig", "VLSegModel", "build_model", "list_models", "load_model", "resolve_model",
           "ModelSource", "describe_source", "load_checkpoint", "save_checkpoint", "checkpoint_sha256",
           "AdapterSpec", "BaseRef", "add_adapters", "save_adapter", "load_adapter"]
