"""The bundled all-MiniLM-L6-v2 (``minilm``) as a small plain-torch BERT.

Same module names as Hugging Face's ``BertModel`` (``encoder.layer.0.attention.self.query``, ...),
so its ``model.safetensors`` loads key for key and LoRA adapters (PEFT, by module name) land on the
same layers as before; the tokenizer is the package's own ``tokenizer.json`` through the
``tokenizers`` library. Why not ``transformers.AutoModel``: importing the BERT modelling code of
transformers 5 (with torch.distributed, generation utils, hub kernels) took 2.5-9 s of every
model load on these machines, for a 6-layer encoder. ``tests/test_text_bert.py`` checks the
embeddings against ``transformers`` (max abs difference < 1e-5).

Sentence embedding = attention-masked mean of the last hidden states, L2-normalised.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from vlseg.errors import ModelError
from vlseg.text.base import TextEncoder


# The backbone is built without random initialisation (its weights are always loaded, with
# ``assign=True``): Linear layers on the meta device, embeddings over uninitialised memory.
# Initialising 22 M parameters that are overwritten at once took ~1 s of each load.
def _linear(c_in: int, c_out: int) -> nn.Linear:
    return nn.Linear(c_in, c_out, device="meta")


def _embedding(n: int, dim: int) -> nn.Embedding:
    return nn.Embedding(n, dim, _weight=torch.empty(n, dim))


class _Embeddings(nn.Module):
    def __init__(self, cfg: dict) -> None:
        super().__init__()
        h = cfg["hidden_size"]
        self.word_embeddings = _embedding(cfg["vocab_size"], h)
        self.position_embeddings = _embedding(cfg["max_position_embeddings"], h)
        self.token_type_embeddings = _embedding(cfg["type_vocab_size"], h)
        self.LayerNorm = nn.LayerNorm(h, eps=cfg["layer_norm_eps"])
        self.dropout = nn.Dropout(cfg["hidden_dropout_prob"])

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)  # (1, L)
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids) \
            + self.position_embeddings(pos)
        return self.dropout(self.LayerNorm(x))


class _SelfAttention(nn.Module):
    def __init__(self, cfg: dict) -> None:
        super().__init__()
        h = cfg["hidden_size"]
        self.heads = cfg["num_attention_heads"]
        self.query, self.key, self.value = _linear(h, h), _linear(h, h), _linear(h, h)
        self.dropout_p = cfg["attention_probs_dropout_prob"]

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        split = lambda t: t.view(B, L, self.heads, C // self.heads).transpose(1, 2)  # (B, h, L, d)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        att = (q @ k.transpose(-1, -2)) / math.sqrt(C // self.heads) + bias  # (B, h, L, L)
        att = F.dropout(att.softmax(dim=-1), self.dropout_p, self.training)
        return (att @ v).transpose(1, 2).reshape(B, L, C)


class _Output(nn.Module):
    """dense -> dropout -> LayerNorm(residual + .): BERT's ``SelfOutput`` and ``Output``."""

    def __init__(self, c_in: int, c_out: int, eps: float, p: float) -> None:
        super().__init__()
        self.dense = _linear(c_in, c_out)
        self.LayerNorm = nn.LayerNorm(c_out, eps=eps)
        self.dropout = nn.Dropout(p)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class _Attention(nn.Module):
    def __init__(self, cfg: dict) -> None:
        super().__init__()
        self.self = _SelfAttention(cfg)
        self.output = _Output(cfg["hidden_size"], cfg["hidden_size"], cfg["layer_norm_eps"],
                              cfg["hidden_dropout_prob"])

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, bias), x)


class _Intermediate(nn.Module):
    def __init__(self, cfg: dict) -> None:
        super().__init__()
        self.dense = _linear(cfg["hidden_size"], cfg["intermediate_size"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))  # exact (erf) GELU, BERT's "gelu"


class _Layer(nn.Module):
    def __init__(self, cfg: dict) -> None:
        super().__init__()
        self.attention = _Attention(cfg)
        self.intermediate = _Intermediate(cfg)
        self.output = _Output(cfg["intermediate_size"], cfg["hidden_size"], cfg["layer_norm_eps"],
                              cfg["hidden_dropout_prob"])

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        a = self.attention(x, bias)
        return self.output(self.intermediate(a), a)


class _Encoder(nn.Module):
    def __init__(self, cfg: dict) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(cfg) for _ in range(cfg["num_hidden_layers"]))


class _Pooler(nn.Module):  # unused for sentence embeddings; kept so the weights load key for key
    def __init__(self, cfg: dict) -> None:
        super().__init__()
        self.dense = _linear(cfg["hidden_size"], cfg["hidden_size"])


class BertBackbone(nn.Module):
    """``BertModel`` (absolute positions, GELU) returning the last hidden states ``(N, L, C)``."""

    def __init__(self, cfg: dict) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = _Embeddings(cfg)
        self.encoder = _Encoder(cfg)
        self.pooler = _Pooler(cfg)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)  # (N, L, C)
        # Padding keys get the most negative float, as BERT's extended attention mask.
        bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min  # (N, 1, 1, L)
        for layer in self.encoder.layer:
            x = layer(x, bias)
        return x


def _read_config(model_dir: Path) -> dict:
    try:
        cfg = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{model_dir}: cannot read the text encoder's config.json ({e})") from e
    if cfg.get("model_type") != "bert" or cfg.get("hidden_act", "gelu") != "gelu" \
            or cfg.get("position_embedding_type", "absolute") != "absolute":
        raise ModelError(f"{model_dir}: not a plain BERT encoder (model_type bert, gelu, absolute "
                         "positions); load it with hf:<folder> instead")
    return cfg


class BertTextEncoder(TextEncoder):
    """A BERT sentence encoder from a folder with ``config.json``, ``model.safetensors`` and
    ``tokenizer.json`` (the ``minilm`` text encoder)."""

    lora_target_modules = ("query", "value")

    def __init__(self, *, name: str, model_dir: str | Path, max_length: int = 64) -> None:
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        cfg = _read_config(model_dir)
        backbone = BertBackbone(cfg)  # uninitialised: every weight is loaded next
        try:
            state = load_file(str(model_dir / "model.safetensors"))
            tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        except Exception as e:  # safetensors/tokenizers raise their own error types
            raise ModelError(f"{model_dir}: cannot load text encoder: {e}".splitlines()[0]) from e
        state.pop("embeddings.position_ids", None)  # a buffer in older transformers, not a weight
        missing, unexpected = backbone.load_state_dict(state, strict=False, assign=True)
        if missing or unexpected or any(p.is_meta for p in backbone.parameters()):
            raise ModelError(f"{model_dir}: weights do not match a BERT of this config "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        super().__init__(name=name, dim=int(cfg["hidden_size"]))
        tokenizer.enable_truncation(max_length=int(max_length))
        tokenizer.enable_padding(pad_id=int(cfg.get("pad_token_id", 0)), pad_token="[PAD]")
        self.tokenizer = tokenizer
        self.backbone = backbone
        self.max_length = int(max_length)

    def tokenize(self, phrases: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer.encode_batch([str(p) for p in phrases])
        return {"input_ids": torch.tensor([e.ids for e in enc], dtype=torch.long),
                "attention_mask": torch.tensor([e.attention_mask for e in enc], dtype=torch.long)}

    def _embed(self, **tokens: torch.Tensor) -> torch.Tensor:
        # Phrases of equal length run together without padding: the masked mean is the same,
        # and a bank of short phrases padded to its longest one costs about twice as much.
        ids, mask = tokens["input_ids"], tokens["attention_mask"]  # (N, L)
        lengths = mask.sum(1)
        rows: list[torch.Tensor] = [torch.empty(0)] * ids.shape[0]
        for n in lengths.unique().tolist():
            idx = (lengths == n).nonzero().flatten().tolist()
            n = max(int(n), 1)
            hidden = self.backbone(ids[idx, :n], mask[idx, :n])  # (k, n, dim)
            m = mask[idx, :n].unsqueeze(-1).to(hidden.dtype)  # (k, n, 1)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)  # (k, dim)
            for i, row in zip(idx, pooled):
                rows[i] = row
        return torch.stack(rows)  # (N, dim)
