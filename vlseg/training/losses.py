"""Per-prompt segmentation loss that respects partial labels.

Each prompt slot of each sample gets sigmoid BCE + soft Dice against its own binary target; a
``loss_mask`` of 0 (a concept the sample's source does not annotate, or a padding slot) removes
the slot from the loss entirely, so it never produces a gradient.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossOutput:
    loss: torch.Tensor          # scalar: mean over supervised slots
    per_prompt: torch.Tensor    # (B, P) BCE + Dice per slot (masked slots still computed, not used)
    bce: torch.Tensor           # (B, P)
    dice: torch.Tensor          # (B, P) soft-Dice loss (1 - soft Dice)


class MaskedPromptLoss(torch.nn.Module):
    """``bce_weight * BCE + dice_weight * (1 - soft Dice)``, averaged over supervised slots."""

    def __init__(self, *, bce_weight: float = 1.0, dice_weight: float = 1.0, smooth: float = 1.0) -> None:
        super().__init__()
        if bce_weight < 0 or dice_weight < 0 or bce_weight + dice_weight <= 0:
            raise ValueError("loss weights must be >= 0 and not both 0")
        if smooth <= 0:
            raise ValueError("smooth must be > 0")
        self.bce_weight = bce_weight
        self.dice_weight = dice_weight
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor, loss_mask: torch.Tensor) -> LossOutput:
        """logits, target: (B, P, D, H, W); loss_mask: (B, P) in {0, 1}."""
        if logits.shape != target.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ")
        if loss_mask.shape != logits.shape[:2]:
            raise ValueError(f"loss_mask {tuple(loss_mask.shape)} must be (B, P) = {tuple(logits.shape[:2])}")
        logits = logits.float()
        target = target.to(logits.dtype)
        mask = loss_mask.to(logits.dtype)
        # BCE per slot, mean over voxels
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(2).mean(-1)  # (B, P)
        # Soft Dice per slot (empty targets push the prediction to empty through the smooth term)
        prob = torch.sigmoid(logits).flatten(2)                                   # (B, P, N)
        tgt = target.flatten(2)
        inter = (prob * tgt).sum(-1)
        denom = prob.sum(-1) + tgt.sum(-1)
        dice = 1.0 - (2.0 * inter + self.smooth) / (denom + self.smooth)         # (B, P)
        per_prompt = self.bce_weight * bce + self.dice_weight * dice
        # Only supervised slots count; multiplying by the mask also zeroes their gradient
        loss = (per_prompt * mask).sum() / mask.sum().clamp_min(1.0)
        return LossOutput(loss=loss, per_prompt=per_prompt.detach(), bce=bce.detach(), dice=dice.detach())
