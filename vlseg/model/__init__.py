"""Text-conditioned 3D segmentation model (SAM-style: one module per part).

    config.py         ModelConfig (frozen) + named presets in vlseg/configs/*.json
    image_encoder.py  residual U-Net -> multi-scale decoder features (once per scan)
    prompt_head.py    text emb -> prompt emb -> dynamic per-prompt 1x1x1 conv head
    vlseg_model.py    VLSegModel wiring them together
    registry.py       build_model(name), list_models(), `vlseg models`
    checkpoint.py     save_checkpoint / load_model (safetensors + JSON, never pickle)
    preprocess.py     normalisation + resampling shared by training and inference
    inference.py      prepare(case) once, decode(prompts) many times
"""
from __future__ import annotations

from vlseg.model.checkpoint import checkpoint_sha256, load_model, save_checkpoint
from vlseg.model.config import ModelConfig
from vlseg.model.registry import build_model, list_models
from vlseg.model.vlseg_model import VLSegModel

__all__ = ["ModelConfig", "VLSegModel", "build_model", "list_models", "load_model",
           "save_checkpoint", "checkpoint_sha256"]
