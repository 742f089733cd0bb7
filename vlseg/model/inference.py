"""Predictor core: ``prepare(model, case)`` once per scan, ``decode(model, prepared, prompts)`` per query.

prepare:  resample to the model spacing, bias-correct and normalise there -> crop to the brain (+ margin) -> pad to a
          multiple of 2^levels -> encode_image once (whole cropped brain in one pass when it fits,
          else MONAI sliding-window over the encoder features) -> keep the features.
decode:   prompt head on the cached features -> sigmoid -> uncrop -> resample back to the case's
          own RAS+ grid: probabilities (P, X, Y, Z).

A brain at 2 mm is about 96x112x96 voxels, which the tiny model encodes in one pass on CPU; the
sliding window only engages for volumes above ``whole_max_voxels`` (default: 3 patches).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vlseg.errors import InputError, ModelError
from vlseg.model.preprocess import (
    CaseGridBoxes, model_grid_preprocess, nonzero_bbox, pad_to_multiple, uncrop_resample,
)
from vlseg.model.vlseg_model import VLSegModel

CROP_MARGIN = 4  # voxels at model spacing kept around the brain


@dataclass
class PreparedCase:
    """Encoder output for one scan plus the geometry to map predictions back."""

    features: list[torch.Tensor]  # coarse..fine, each (1, F, d, h, w) on the model's device
    input_shape: tuple[int, int, int]  # the case's RAS+ grid
    model_shape: tuple[int, int, int]  # the case resampled to the model spacing
    crop: tuple[slice, slice, slice]  # brain box in the model-spacing grid
    valid: tuple[slice, slice, slice]  # region of the padded network input that is the crop
    present: tuple[bool, ...]  # per SEQUENCES
    spacing_in: tuple[float, float, float]
    spacing_model: float
    case_id: str
    model_id: int  # id() of the model that made the features
    sliding_window: bool = False
    # Boxes of the input grid normalised as in the refinement stage's training (prepare(keep_images=True))
    images: CaseGridBoxes | None = None


def _check_device(model: VLSegModel, device) -> torch.device:
    dev = model.device
    if device is not None and torch.device(device).type != dev.type:
        raise ModelError(f"model is on {dev} but {device} was requested; load it with device={device!r}")
    return dev


@torch.no_grad()
def prepare(model: VLSegModel, case, *, device: str | torch.device | None = None,
            whole_max_voxels: int | None = None, overlap: float = 0.25,
            keep_images: bool = False) -> PreparedCase:
    """Normalise, resample, crop and encode ``case`` (a ``vlseg.io.Case``) once. ``keep_images``:
    also keep the means to normalise boxes of the input grid (``CaseGridBoxes``: the N4 fields and
    brain statistics of the model grid, the scan itself) for the refinement stage.

    Reads the model's weights only: a worker thread may prepare one case while the model
    decodes another (``Segmenter.compare`` does)."""
    dev = _check_device(model, device)
    cfg = model.config
    model.eval()
    # Bias-correct, normalise and resample: the case at the model spacing (work done on that grid)
    vol, present, boxes = model_grid_preprocess(case, cfg.spacing_mm, bias_correction=cfg.bias_correction)
    spacing_in = tuple(float(s) for s in case.spacing)
    model_shape = tuple(vol.shape[1:])
    check_network_size(model_shape, cfg.spacing_mm, cfg.size_divisor)
    # Crop to the brain and pad to what the U-Net accepts (at least 2 voxels at its bottleneck:
    # instance norm needs more than one, so a small brain box in a big volume is padded more)
    crop = nonzero_bbox(vol, margin=CROP_MARGIN)
    x, valid = pad_to_multiple(vol[(slice(None), *crop)], cfg.size_divisor,
                               min_size=(2 * cfg.size_divisor,) * 3)  # (4, d, h, w)
    x = x.unsqueeze(0).to(dev)  # (1, 4, d, h, w)
    pres = torch.from_numpy(present).unsqueeze(0).to(dev)  # (1, 4)
    # Encode image once
    limit = whole_max_voxels if whole_max_voxels is not None else 3 * int(np.prod(cfg.patch_size))
    sliding = int(np.prod(x.shape[2:])) > limit
    if not sliding:
        features = model.encode_image(x, pres)
    else:
        features = _sliding_features(model, x, pres, overlap=overlap)
    return PreparedCase(
        features=features, input_shape=tuple(case.shape), model_shape=model_shape, crop=crop,
        valid=valid, present=tuple(bool(p) for p in present), spacing_in=spacing_in,
        spacing_model=cfg.spacing_mm, case_id=str(getattr(case, "case_id", "")), model_id=id(model),
        sliding_window=sliding, images=boxes if keep_images else None,
    )


def check_network_size(model_shape: tuple[int, ...], spacing_mm: float, divisor: int) -> None:
    """Refuse a scan that is smaller than one voxel at the network's coarsest level."""
    if min(model_shape) < divisor:
        fov = "x".join(f"{n * spacing_mm:g}" for n in model_shape)
        raise InputError(f"the scan is only {fov} mm ({'x'.join(map(str, model_shape))} voxels at the "
                         f"model's {spacing_mm:g} mm spacing); the network needs at least {divisor} "
                         f"voxels ({divisor * spacing_mm:g} mm) along each axis: give the whole-brain scan")


def _sliding_features(model: VLSegModel, x: torch.Tensor, present: torch.Tensor, *, overlap: float
                      ) -> list[torch.Tensor]:
    """Encoder features of a large volume, blended over overlapping patches (MONAI)."""
    from vlseg.model.monai_inferer import sliding_window

    sliding_window_inference = sliding_window()

    roi = tuple(min(p, s) for p, s in zip(model.config.patch_size, x.shape[2:]))

    def predictor(patch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # Fine first: MONAI (1.6) mis-sizes its blend maps when the first output is the coarser one.
        return tuple(reversed(model.encode_image(patch, present.expand(patch.shape[0], -1))))

    # "constant" blending: MONAI's gaussian weights are wrong for outputs at a zoomed scale.
    out = sliding_window_inference(x, roi, sw_batch_size=1, predictor=predictor, overlap=overlap,
                                   mode="constant", progress=False)
    return [t.as_tensor() if hasattr(t, "as_tensor") else t for t in reversed(out)]


@torch.no_grad()
def decode(model: VLSegModel, prepared: PreparedCase, prompts: torch.Tensor | list[str]) -> np.ndarray:
    """Per-prompt probabilities (P, X, Y, Z) float32 in the case's RAS+ input grid.

    ``prompts``: prompt embeddings (P, E) from ``model.embed_prompts`` or a list of phrases.
    """
    if not isinstance(prepared, PreparedCase):
        raise TypeError("decode() needs the PreparedCase returned by prepare(model, case)")
    if prepared.model_id != id(model):
        raise ModelError("this case was prepared with a different model; call prepare() with this model first")
    if not isinstance(prompts, torch.Tensor):
        prompts = model.embed_prompts(list(prompts))
    if prompts.dim() != 2 or prompts.shape[0] == 0:
        raise ValueError(f"prompts must be (P, E) with P >= 1, got {tuple(prompts.shape)}")
    # Condition on prompts (cheap: a few 1x1x1 convs on the cached features)
    logits = model.decode(prepared.features, prompts.to(model.device))[0]  # (P, d, h, w)
    probs = torch.sigmoid(logits.float())[(slice(None), *prepared.valid)].cpu()  # (P, crop)
    # Back to input space: uncrop into the model-spacing grid, resample to the input grid
    # (zero outside the crop, so only the crop's share of the input grid is interpolated)
    # (linear interpolation of values in [0, 1] stays in [0, 1]: no clamp needed)
    return uncrop_resample(probs, prepared.crop, prepared.model_shape, prepared.input_shape)  # (P, X, Y, Z)


def predict_probabilities(model: VLSegModel, case, prompts: list[str] | torch.Tensor, *,
                          device: str | torch.device | None = None) -> dict[str, np.ndarray] | np.ndarray:
    """One-shot: prepare + decode. Phrases -> {phrase: (X, Y, Z)}; embeddings -> (P, X, Y, Z)."""
    prepared = prepare(model, case, device=device)
    probs = decode(model, prepared, prompts)
    if isinstance(prompts, torch.Tensor):
        return probs
    return {p: probs[i] for i, p in enumerate(prompts)}
