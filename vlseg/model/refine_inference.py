"""The refinement stage at inference: a crop around the first stage's tumor, at 1 mm (or the
scan's own finest spacing when it is coarser), MONAI's sliding window over that crop only.

    stage-1 probabilities (P, X, Y, Z) ──► tumor box (p >= crop_threshold, + margin) in the input grid
    normalised images of the box (prepare's CaseGridBoxes) + stage-1 probabilities ──► resample to the refinement grid
    ──► pad ──► sliding window (refiner: trunk once per window, decoder per prompt) ──► sigmoid
    ──► back to the box in the input grid; outside the box the first stage's probabilities stay

Nothing runs (``RefineResult.ran`` False, the reason said) when the first stage found no tumor,
or when the scan is no finer than the first stage's grid (a 2 mm crop adds nothing to a 2 mm
model).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from vlseg.errors import ModelError
from vlseg.model.monai_inferer import sliding_window
from vlseg.model.preprocess import CaseGridBoxes, pad_to_multiple, resample_to_shape, target_shape
from vlseg.model.refiner import Refiner
from vlseg.text import TextEncoder
from vlseg.text.lora import lora_disabled


@dataclass(frozen=True)
class RefineResult:
    """What the refinement did for one case."""

    probs: np.ndarray | None  # (P, X, Y, Z) in the input grid (None: not run)
    ran: bool
    reason: str  # "refined", or why it did not run
    spacing_mm: float | None = None
    box: tuple[slice, slice, slice] | None = None  # in the case's RAS+ input grid
    grid: tuple[int, int, int] | None = None  # the crop at the refinement spacing
    windows: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ran": self.ran, "reason": self.reason, "seconds": round(self.seconds, 3)}
        if self.ran:
            out.update(spacing_mm=self.spacing_mm, grid=list(self.grid or ()), windows=self.windows,
                       box_ras_voxels=[[s.start, s.stop] for s in self.box or ()])
        return out


def base_text_embeddings(text_encoder: TextEncoder, refiner: Refiner, phrases: Sequence[str]) -> torch.Tensor:
    """The frozen text backbone's embeddings of ``phrases`` (P, T): what the refiner was trained on,
    whatever LoRA the first stage put into the shared text encoder (disabled for this call; the
    encoder's own cache is not touched)."""
    if text_encoder.name != refiner.config.text_encoder or text_encoder.dim != refiner.config.text_dim:
        raise ModelError(f"the refiner reads {refiner.config.text_encoder!r} embeddings ({refiner.config.text_dim}-d) "
                         f"but the first stage's text encoder is {text_encoder.name!r} ({text_encoder.dim}-d)")
    with torch.no_grad(), lora_disabled(text_encoder):
        return text_encoder(**text_encoder.tokenize(list(phrases))).detach()  # (P, T)


def refine_spacing(refiner: Refiner, spacing_in: Sequence[float]) -> float:
    """The refinement grid: the refiner's spacing, or the scan's finest spacing when coarser."""
    return max(refiner.config.spacing_mm, float(min(spacing_in)))


def tumor_box(stage1: np.ndarray, threshold: float, margin_vox: Sequence[int]) -> tuple[slice, slice, slice] | None:
    """Bounding box of ``max_p stage1 >= threshold`` grown by ``margin_vox``; None if empty."""
    found = (np.asarray(stage1) >= threshold).any(axis=0)  # (X, Y, Z)
    if not found.any():
        return None
    box = []
    for axis in range(3):
        idx = np.flatnonzero(found.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(max(0, int(idx[0]) - margin_vox[axis]),
                         min(found.shape[axis], int(idx[-1]) + 1 + margin_vox[axis])))
    return tuple(box)  # type: ignore[return-value]


@torch.no_grad()
def refine(refiner: Refiner, *, images: CaseGridBoxes, present: Sequence[bool],
           spacing_in: Sequence[float], stage1: np.ndarray, text: torch.Tensor, stage1_spacing_mm: float,
           overlap: float = 0.25) -> RefineResult:
    """Refine the first stage's probabilities ``stage1`` (P, X, Y, Z) of one case.

    ``images``: the case's images, normalised box by box (``prepare(keep_images=True)``);
    ``text``: (P, T) from :func:`base_text_embeddings`.
    """
    t0 = time.perf_counter()
    cfg = refiner.config
    spacing = refine_spacing(refiner, spacing_in)
    if spacing >= stage1_spacing_mm - 1e-6:
        return RefineResult(None, False, f"the scan's finest spacing ({min(spacing_in):g} mm) is no finer than the "
                                         f"first stage's {stage1_spacing_mm:g} mm grid",
                            seconds=time.perf_counter() - t0)
    margin = [int(math.ceil(cfg.crop_margin_mm / s)) for s in spacing_in]
    box = tumor_box(stage1, cfg.crop_threshold, margin)
    if box is None or any(b.stop <= b.start for b in box):
        return RefineResult(None, False, "the first stage found no tumor", seconds=time.perf_counter() - t0)
    # Crop the box, resample it to the refinement grid
    img = images.crop(box)                                                      # (4, bx, by, bz)
    s1 = torch.from_numpy(np.ascontiguousarray(stage1[(slice(None), *box)])).float()  # (P, bx, by, bz)
    grid = target_shape(img.shape[1:], spacing_in, spacing)
    x = resample_to_shape(torch.cat([img, s1]), grid, "trilinear")             # (4 + P, gx, gy, gz)
    x, valid = pad_to_multiple(x, cfg.size_divisor, min_size=(2 * cfg.size_divisor,) * 3)
    x = x.unsqueeze(0).to(refiner.device)                                       # (1, 4 + P, ...)
    pres = torch.tensor([list(present)], dtype=torch.bool, device=refiner.device)  # (1, 4)
    text = text.to(refiner.device)
    roi = tuple(min(p, s) for p, s in zip(cfg.patch_size, x.shape[2:]))
    windows = 0

    def predictor(patch: torch.Tensor) -> torch.Tensor:  # (n, 4 + P, ...) -> (n, P, ...)
        nonlocal windows
        windows += patch.shape[0]
        return refiner(patch[:, :4], pres.expand(patch.shape[0], -1), patch[:, 4:].clamp(0, 1), text)

    # Sliding window over the crop only (one window when the crop fits the roi); MONAI is imported
    # here, after any background import has ended (vlseg.model.monai_inferer)
    sliding_window_inference = sliding_window()
    logits = sliding_window_inference(x, roi, sw_batch_size=1, predictor=predictor, overlap=overlap,
                                      mode="gaussian", progress=False)
    logits = logits.as_tensor() if hasattr(logits, "as_tensor") else logits
    probs = torch.sigmoid(logits[0].float())[(slice(None), *valid)].cpu()     # (P, gx, gy, gz)
    # Back to the box in the input grid; the first stage's probabilities elsewhere
    back = resample_to_shape(probs, tuple(b.stop - b.start for b in box), "trilinear").clamp(0, 1)
    out = np.array(stage1, dtype=np.float32, copy=True)
    out[(slice(None), *box)] = back.numpy()
    return RefineResult(out, True, "refined", spacing_mm=spacing, box=box, grid=tuple(grid), windows=windows,
                        seconds=time.perf_counter() - t0)
