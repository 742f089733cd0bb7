"""The second stage: a small prompt-conditioned U-Net that refines the first stage's probabilities
at 1 mm, in a crop around the tumor (nnU-Net's cascade idea, text-conditioned).

    images (B, 4, D, H, W) + present (B, 4) ─► image trunk (once per crop)
    trunk + stage-1 probabilities (B, P, D, H, W) + text embeddings (P, T) ─► logits (B, P, D, H, W)

Every prompt has its own stage-1 probability channel. The prompt conditions every decoder level
through FiLM (a per-channel scale and shift from the text embedding), and
the output is a residual on the stage-1 logit, so an untrained refiner starts from the first
stage's answer.

The refiner reads the *frozen* text backbone's embedding (no LoRA) and the stage-1 probability
only, never the first stage's features or prompt embeddings: it is trained on simulated stage-1
probabilities (``vlseg.training.refine_data``) and stays valid when the first stage is retrained.
It has no normalisation layer, so a sliding window of any size computes the same function.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from vlseg import vocab
from vlseg.errors import ModelError
from vlseg.model.config import BIAS_CORRECTIONS, CONFIG_DIR

REFINER_CONFIG_DIR = CONFIG_DIR / "refiner"
PROB_EPS = 1e-3  # stage-1 probabilities are clamped to [eps, 1 - eps] before their logit


@dataclass(frozen=True)
class RefinerConfig:
    """Everything needed to rebuild a Refiner (saved beside its weights)."""

    name: str
    channels: tuple[int, ...] = (8, 16, 24, 32)  # per level, finest first
    text_encoder: str = "minilm"      # whose frozen embedding conditions the refiner
    text_dim: int = 384
    film_hidden: int = 64
    spacing_mm: float = 1.0           # the refinement grid (the scan's own, when that is coarser)
    patch_size: tuple[int, int, int] = (128, 128, 128)  # sliding-window roi over the crop
    crop_margin_mm: float = 10.0      # around the first stage's tumor
    crop_threshold: float = 0.3       # stage-1 probability that marks tumor for the crop
    # What it refines: the tumor's region chain (WT, TC, ET); other concepts stay stage 1's
    concepts: tuple[str, ...] = field(default_factory=vocab.region_chain)
    bias_correction: str = "n4"       # the preprocessing it was trained on (must match stage 1's)
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        for name in ("channels", "patch_size"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        object.__setattr__(self, "concepts", tuple(str(c) for c in self.concepts))
        for name in ("spacing_mm", "crop_margin_mm", "crop_threshold"):
            object.__setattr__(self, name, float(getattr(self, name)))
        problems = []
        if not self.name:
            problems.append("name is empty")
        if len(self.channels) < 2 or min(self.channels) <= 0:
            problems.append(f"channels needs >= 2 positive entries, got {self.channels}")
        if self.text_dim <= 0 or self.film_hidden <= 0:
            problems.append("text_dim and film_hidden must be positive")
        if not self.spacing_mm > 0:
            problems.append(f"spacing_mm must be > 0, got {self.spacing_mm}")
        if len(self.patch_size) != 3 or any(p % self.size_divisor or p <= 0 for p in self.patch_size):
            problems.append(f"patch_size must be 3 positive multiples of {self.size_divisor}, got {self.patch_size}")
        if self.crop_margin_mm < 0 or not 0.0 < self.crop_threshold < 1.0:
            problems.append("crop_margin_mm must be >= 0 and crop_threshold in (0, 1)")
        unknown = [c for c in self.concepts if c not in vocab.codes()]
        if not self.concepts or unknown or len(set(self.concepts)) != len(self.concepts):
            problems.append(f"concepts must be distinct registered concepts, got {list(self.concepts)}")
        if self.bias_correction not in BIAS_CORRECTIONS:
            problems.append(f"bias_correction must be one of {list(BIAS_CORRECTIONS)}")
        if problems:
            raise ModelError(f"refiner config {self.name!r}: " + "; ".join(problems))

    @property
    def size_divisor(self) -> int:
        return 2 ** (len(self.channels) - 1)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RefinerConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ModelError(f"refiner config has unknown fields {unknown}; known: {sorted(known)}")
        if "name" not in d:
            raise ModelError("refiner config has no 'name'")
        try:
            return cls(**dict(d))
        except (TypeError, ValueError) as e:
            raise ModelError(f"refiner config {d.get('name')!r}: {e}") from e


def list_refiners() -> list[str]:
    """Preset names accepted by ``build_refiner`` (``vlseg/configs/refiner/*.json``)."""
    return sorted(p.stem for p in REFINER_CONFIG_DIR.glob("*.json"))


def resolve_refiner_config(name_or_config: str | RefinerConfig | Mapping[str, Any]) -> RefinerConfig:
    if isinstance(name_or_config, RefinerConfig):
        return name_or_config
    if isinstance(name_or_config, Mapping):
        return RefinerConfig.from_dict(name_or_config)
    path = REFINER_CONFIG_DIR / f"{name_or_config}.json"
    if not path.is_file():
        raise ModelError(f"unknown refiner {name_or_config!r}; known: {', '.join(list_refiners())}")
    return RefinerConfig.from_dict(json.loads(path.read_text()))


# ----------------------------------------------------------------------------- the network


def _conv(c_in: int, c_out: int, *, stride: int = 1, kernel_size: int = 3) -> nn.Conv3d:
    conv = nn.Conv3d(c_in, c_out, kernel_size, stride=stride, padding=kernel_size // 2)
    nn.init.kaiming_normal_(conv.weight, a=0.01, nonlinearity="leaky_relu")
    nn.init.zeros_(conv.bias)
    return conv


class FiLMBlock(nn.Module):
    """conv -> FiLM (scale 1 + gamma, shift beta, both from the prompt) -> leaky ReLU."""

    def __init__(self, c_in: int, c_out: int, *, film_hidden: int, stride: int = 1, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = _conv(c_in, c_out, stride=stride, kernel_size=kernel_size)
        self.film = nn.Linear(film_hidden, 2 * c_out)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.film(cond).chunk(2, dim=-1)  # (N, C) each
        y = self.conv(x)
        y = y * (1 + gamma[:, :, None, None, None]) + beta[:, :, None, None, None]
        return F.leaky_relu(y, 0.01)


class Refiner(nn.Module):
    """The refinement U-Net (see the module docstring).

    The image trunk (encoder) runs once per crop whatever the number of prompts; the decoder runs
    once per prompt, conditioned by FiLM and fed the stage-1 probability at every scale, down to
    1/2 resolution. At full resolution each prompt only adds a prompt-weighted sum of the stem's
    channels and the stage-1 logit to its upsampled logit: the trunk's stem is the only 3x3x3
    convolution at 1 mm, and it runs once.
    """

    def __init__(self, *, config: RefinerConfig) -> None:
        super().__init__()
        self.config = config
        ch, h = config.channels, config.film_hidden
        self.text_proj = nn.Sequential(nn.Linear(config.text_dim, h), nn.GELU(), nn.Linear(h, h))
        # Image trunk (prompt-free): sequences + presence indicators
        self.stem = _conv(2 * 4, ch[0])
        self.down = nn.ModuleList(_conv(a, b, stride=2) for a, b in zip(ch[:-1], ch[1:]))
        # Prompt decoder (coarsest to 1/2 resolution): every block also reads the stage-1 probability
        self.bottom = FiLMBlock(ch[-1] + 1, ch[-1], film_hidden=h)
        self.up = nn.ModuleList(nn.ConvTranspose3d(b, a, 2, stride=2) for a, b in zip(ch[1:-1], ch[2:]))
        self.fuse = nn.ModuleList(FiLMBlock(2 * a + 1, a, film_hidden=h) for a in ch[1:-1])
        self.out = nn.Conv3d(ch[1], 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        # Full resolution: a per-prompt 1x1x1 combination of the stem's channels (weights from
        # the prompt, as the first stage's dynamic head) added to the upsampled logit
        self.fine = nn.Linear(h, ch[0] + 1)
        nn.init.zeros_(self.fine.weight)
        nn.init.zeros_(self.fine.bias)
        self.prior_gain = nn.Parameter(torch.ones(()))  # weight of the stage-1 logit in the output

    @property
    def device(self) -> torch.device:
        return self.out.weight.device

    def encode(self, images: torch.Tensor, present: torch.Tensor) -> list[torch.Tensor]:
        """images (B, 4, D, H, W), present (B, 4) -> trunk features, finest first."""
        div = self.config.size_divisor
        if images.dim() != 5 or images.shape[1] != 4:
            raise ValueError(f"images must be (B, 4, D, H, W), got {tuple(images.shape)}")
        if any(s % div for s in images.shape[2:]):
            raise ValueError(f"spatial size {tuple(images.shape[2:])} must be a multiple of {div}")
        ind = present.to(images.dtype)[:, :, None, None, None].expand_as(images)  # (B, 4, D, H, W)
        feats = [F.leaky_relu(self.stem(torch.cat([images * ind, ind], dim=1)), 0.01)]
        for conv in self.down:
            feats.append(F.leaky_relu(conv(feats[-1]), 0.01))
        return feats

    def decode(self, feats: list[torch.Tensor], stage1: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """feats from ``encode`` (batch B), stage1 (B, P, D, H, W) in [0, 1], text (P, T) or
        (B, P, T) -> logits (B, P, D, H, W)."""
        B, P = stage1.shape[:2]
        if text.dim() == 2:
            text = text.unsqueeze(0).expand(B, -1, -1)
        cond = self.text_proj(text.reshape(B * P, -1).to(stage1.dtype))  # (B*P, h)
        s1 = stage1.reshape(B * P, 1, *stage1.shape[2:])                   # (B*P, 1, D, H, W)

        def per_prompt(f: torch.Tensor) -> torch.Tensor:  # (B, C, ...) -> (B*P, C, ...)
            return f.unsqueeze(1).expand(B, P, *f.shape[1:]).reshape(B * P, *f.shape[1:])

        def prob_at(level: int) -> torch.Tensor:
            return F.avg_pool3d(s1, 2 ** level) if level else s1

        # Condition on the prompt at the coarsest scale, then up with the skips to 1/2 resolution
        n = len(feats) - 1
        y = self.bottom(torch.cat([per_prompt(feats[n]), prob_at(n)], dim=1), cond)
        for level in range(n - 1, 0, -1):
            y = self.up[level - 1](y)
            y = self.fuse[level - 1](torch.cat([y, per_prompt(feats[level]), prob_at(level)], dim=1), cond)
        coarse = F.interpolate(self.out(y), scale_factor=2, mode="trilinear", align_corners=False)  # (B*P, 1, D, H, W)
        # Full resolution: prompt-weighted stem channels, the stage-1 logit as residual
        w = self.fine(cond)                                                        # (B*P, c0 + 1)
        stem = feats[0]                                                            # (B, c0, D, H, W)
        fine = torch.einsum("bpc,bc...->bp...", w[:, :-1].view(B, P, -1), stem)    # (B, P, D, H, W)
        prior = torch.logit(stage1.clamp(PROB_EPS, 1 - PROB_EPS))                  # (B, P, D, H, W)
        fine = fine + w[:, -1].view(B, P, 1, 1, 1) + self.prior_gain * prior
        return fine + coarse.view(B, P, *stage1.shape[2:])                         # (B, P, D, H, W)

    def forward(self, images: torch.Tensor, present: torch.Tensor, stage1: torch.Tensor,
                text: torch.Tensor) -> torch.Tensor:
        """images (B, 4, D, H, W), present (B, 4), stage1 (B, P, D, H, W), text (P, T) or (B, P, T)
        -> logits (B, P, D, H, W). Sizes must be multiples of ``config.size_divisor``."""
        return self.decode(self.encode(images, present), stage1, text)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_refiner(name_or_config: str | RefinerConfig | Mapping[str, Any] = "refine_tiny") -> Refiner:
    """An (untrained) refiner from a preset name, a RefinerConfig or a config dict; eval mode."""
    refiner = Refiner(config=resolve_refiner_config(name_or_config))
    refiner.eval()
    return refiner
