"""VLSegModel: wires the image encoder, text encoder, prompt encoder and dynamic head together.

    images (B, 4, D, H, W) + present (B, 4) ──► encode_image ──► features [coarse .. fine]   (once per scan)
    phrases ──► text encoder (cached) ──► prompt encoder ──► prompts (P, E)
    decode(features, prompts) ──► logits (B, P, D, H, W)                                    (cheap per prompt)
"""
from __future__ import annotations

import torch
from torch import nn

from vlseg.model.config import ModelConfig
from vlseg.model.image_encoder import ImageEncoder
from vlseg.model.prompt_head import DynamicHead, PromptEncoder
from vlseg.text import TextEncoder

TEXT_PREFIX = "text_encoder."


class VLSegModel(nn.Module):
    def __init__(self, *, config: ModelConfig, text_encoder: TextEncoder) -> None:
        super().__init__()
        self.config = config
        self.text_encoder = text_encoder
        self.image_encoder = ImageEncoder(
            in_channels=2 * config.in_sequences,
            channels=config.channels,
            res_blocks=config.res_blocks,
            head_scales=config.head_scales,
            feature_dim=config.feature_dim,
            dropout=config.dropout,
        )
        self.prompt_encoder = PromptEncoder(text_dim=text_encoder.dim, prompt_dim=config.prompt_dim)
        self.head = DynamicHead(
            prompt_dim=config.prompt_dim, feature_dim=config.feature_dim,
            hidden=config.head_hidden, scales=config.head_scales,
        )

    @property
    def device(self) -> torch.device:
        return next(self.image_encoder.parameters()).device

    # -- image side -------------------------------------------------------------------------
    def encode_image(self, images: torch.Tensor, present: torch.Tensor) -> list[torch.Tensor]:
        """images (B, 4, D, H, W) in SEQUENCES order, present (B, 4) bool -> features coarse..fine.

        Spatial sizes must be multiples of ``config.size_divisor``. Channels of absent sequences
        are zeroed here, whatever the caller passed.
        """
        n_seq = self.config.in_sequences
        if images.dim() != 5 or images.shape[1] != n_seq:
            raise ValueError(f"images must be (B, {n_seq}, D, H, W), got {tuple(images.shape)}")
        if present.shape != images.shape[:2]:
            raise ValueError(f"present must be (B, {n_seq}) = {tuple(images.shape[:2])}, got {tuple(present.shape)}")
        div = self.config.size_divisor
        if any(s % div for s in images.shape[2:]):
            raise ValueError(f"spatial size {tuple(images.shape[2:])} must be a multiple of {div}")
        # Mark missing sequences: zero their channel, add the indicator channels.
        present = present.to(device=images.device, dtype=images.dtype)  # (B, 4)
        indicators = present[:, :, None, None, None].expand_as(images)  # (B, 4, D, H, W)
        x = torch.cat([images * indicators, indicators], dim=1)  # (B, 8, D, H, W)
        return self.image_encoder(x)

    # -- prompt side ------------------------------------------------------------------------
    def embed_prompts(self, phrases: list[str]) -> torch.Tensor:
        """Phrases -> prompt embeddings (P, E); the text encoder part is cached per phrase."""
        text_emb = self.text_encoder.encode(list(phrases))  # (P, text_dim), no grad
        return self.prompt_embeddings_from_text(text_emb)

    def prompt_embeddings_from_text(self, text_emb: torch.Tensor) -> torch.Tensor:
        """(P, text_dim) -> (P, E); differentiable (training feeds text_encoder.forward output)."""
        return self.prompt_encoder(text_emb.to(self.device))

    def decode(self, features: list[torch.Tensor], prompts: torch.Tensor) -> torch.Tensor:
        """features from encode_image, prompts (P, E) or (B, P, E) -> logits (B, P, D, H, W)."""
        return self.head(features, prompts)

    def forward(self, images: torch.Tensor, present: torch.Tensor,
                prompts: torch.Tensor | list[str]) -> torch.Tensor:
        # Encode image once
        features = self.encode_image(images, present)
        # Condition on prompts (phrases go through the cached text path)
        if not isinstance(prompts, torch.Tensor):
            prompts = self.embed_prompts(list(prompts))
        return self.decode(features, prompts)  # (B, P, D, H, W)

    # -- checkpoint helpers -----------------------------------------------------------------
    def is_frozen_text_base_key(self, key: str) -> bool:
        """State-dict keys of the frozen text backbone: not stored in checkpoints."""
        return key.startswith(TEXT_PREFIX) and "lora_" not in key

    def checkpoint_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not self.is_frozen_text_base_key(k)}

    def num_parameters(self, *, include_text_base: bool = False) -> int:
        return sum(p.numel() for n, p in self.named_parameters()
                   if include_text_base or not self.is_frozen_text_base_key(n))
