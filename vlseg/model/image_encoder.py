"""Image encoder-decoder: a residual U-Net (MONAI-layout blocks, ``blocks.py``) returning prompt-agnostic multi-scale features.

Input: the four sequences (SEQUENCES order, missing ones zero) plus four "present" indicator
channels, so the network knows which zeros mean "not acquired" rather than "dark".
Output: decoder feature maps at ``head_scales`` scales, coarse -> fine, each projected to
``feature_dim`` channels. Computed once per scan; the prompt head reads them.
"""
from __future__ import annotations

import torch
from torch import nn

from vlseg.model.blocks import OutBlock, ResBlock, conv_transpose


class _Down(nn.Sequential):
    """Strided residual block, then ``n_extra`` residual blocks at the new scale."""

    def __init__(self, *, spatial_dims: int, c_in: int, c_out: int, n_extra: int, dropout: float) -> None:
        blocks = [ResBlock(spatial_dims, c_in, c_out, 3, 2, dropout=dropout or None)]
        blocks += [ResBlock(spatial_dims, c_out, c_out, 3, 1, dropout=dropout or None)
                   for _ in range(n_extra)]
        super().__init__(*blocks)


class _Up(nn.Module):
    """Transposed-conv upsample, concatenate the skip, one residual block."""

    def __init__(self, *, spatial_dims: int, c_in: int, c_skip: int, c_out: int) -> None:
        super().__init__()
        conv_t = conv_transpose(spatial_dims)
        self.up = conv_t(c_in, c_out, kernel_size=2, stride=2, bias=False)
        self.block = ResBlock(spatial_dims, c_out + c_skip, c_out, 3, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.up(x), skip], dim=1))


class ImageEncoder(nn.Module):
    """Residual U-Net; ``forward(x) -> [features coarse .. fine]``, each (B, feature_dim, *scale)."""

    def __init__(
        self,
        *,
        in_channels: int,
        channels: tuple[int, ...],
        res_blocks: int,
        head_scales: int,
        feature_dim: int,
        dropout: float = 0.0,
        spatial_dims: int = 3,
    ) -> None:
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f"channels needs >= 2 levels, got {channels}")
        if not 1 <= head_scales <= len(channels) - 1:
            raise ValueError(f"head_scales must be in 1..{len(channels) - 1}, got {head_scales}")
        self.channels = tuple(channels)
        self.head_scales = head_scales
        self.stem = nn.Sequential(
            ResBlock(spatial_dims, in_channels, channels[0], 3, 1),
            *[ResBlock(spatial_dims, channels[0], channels[0], 3, 1)
              for _ in range(max(res_blocks - 1, 0))],
        )
        self.downs = nn.ModuleList(
            _Down(spatial_dims=spatial_dims, c_in=channels[i], c_out=channels[i + 1],
                  n_extra=res_blocks, dropout=dropout)
            for i in range(len(channels) - 1)
        )
        # ups[i] brings level i+1 up to level i (applied deepest first).
        self.ups = nn.ModuleList(
            _Up(spatial_dims=spatial_dims, c_in=channels[i + 1], c_skip=channels[i], c_out=channels[i])
            for i in range(len(channels) - 1)
        )
        # 1x1 projections of the decoder levels the head reads, coarse -> fine.
        self.necks = nn.ModuleList(
            OutBlock(spatial_dims, channels[level], feature_dim)
            for level in reversed(range(head_scales))
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # Encoder: keep each level's output as a skip connection.
        skips = [self.stem(x)]  # level 0: (B, c0, D, H, W)
        for down in self.downs:
            skips.append(down(skips[-1]))  # level i: (B, ci, D/2^i, ...)
        # Decoder: deepest -> finest, keep the levels the head reads.
        y = skips[-1]
        decoded: dict[int, torch.Tensor] = {}
        for level in reversed(range(len(self.channels) - 1)):
            y = self.ups[level](y, skips[level])
            decoded[level] = y
        levels = list(reversed(range(self.head_scales)))  # coarse -> fine
        return [neck(decoded[lvl]) for neck, lvl in zip(self.necks, levels)]
