"""Training the refinement stage (accelerate; the same launcher, flags and --resume as stage 1).

    accelerate launch train/train.py --config train/configs/refine_1mm.yaml --resume

The mixture is the first stage's (``MixtureDataset``: sources by weight, partial labels, random
phrasings), cached at the refiner's spacing (1 mm); each slot also gets a simulated first-stage
probability (``refine_data``), so no first-stage model is loaded. The text embeddings are the
frozen backbone's (cached per phrase). Output folder::

    config.yaml, log.jsonl (train events also log hard Dice of the simulated stage 1 and of the
    refined output on the supervised slots: the refiner must beat its input)
    checkpoints/step_NNNNNNN/  refiner.safetensors + refiner.json, optimizer.safetensors, state.json
    last.json
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from vlseg.errors import ModelError
from vlseg.fileio import atomic_path, write_json_atomic
from vlseg.model.refiner import Refiner, build_refiner
from vlseg.model.refiner_checkpoint import REFINER_WEIGHTS, load_state, save_refiner
from vlseg.model.storage import git_commit
from vlseg.text import build_text_encoder
from vlseg.training.cache import build_cache
from vlseg.training.config import TrainConfig, config_to_dict
from vlseg.training.loop import (
    OPTIM_FILE, STATE_FILE, _hardware, _log, _prune, _resume_point, optimization, save_optimizer,
)
from vlseg.training.refine_data import RefineMixture, collate_refine
from vlseg.training.sources import MixtureDataset


def hard_dice(prob: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean hard Dice (p >= 0.5) over the supervised slots with a non-empty target; (B, P, ...)."""
    pred, tgt = (prob >= 0.5).flatten(2).float(), target.flatten(2).float()
    inter, denom = (pred * tgt).sum(-1), pred.sum(-1) + tgt.sum(-1)
    keep = (mask > 0) & (tgt.sum(-1) > 0)
    return float((2 * inter / denom.clamp_min(1))[keep].mean()) if keep.any() else float("nan")


def train_refiner(config: TrainConfig, *, resume: bool = False, progress: bool = True,
                  command: str | None = None) -> dict[str, Any]:
    """Train the refiner as configured; returns a summary (final step, paths)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    assert config.refine is not None
    accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=not torch.cuda.is_available())
    main = accelerator.is_main_process
    out = Path(config.output_dir)
    resume_dir, state = _resume_point(config, resume=resume, main=main)
    step = int(state.get("step", 0))
    set_seed(config.seed + step)

    # Refiner (restored when resuming), frozen text encoder, optimizer, schedule
    refiner = build_refiner(config.refine.model)
    if resume_dir is not None:
        load_state(refiner, resume_dir / REFINER_WEIGHTS)
    refiner.train()
    text = build_text_encoder(refiner.config.text_encoder).eval()
    for p in text.parameters():
        p.requires_grad_(False)
    optimizer, scheduler, loss_fn = optimization(refiner, config, resume_dir, state)
    wrapper, optimizer = accelerator.prepare(refiner, optimizer)
    text = text.to(accelerator.device)

    # Data: the mixture at the refiner's spacing + simulated stage-1 probabilities
    with accelerator.main_process_first():
        entries = build_cache(config.data.sources, cache_dir=config.data.cache_dir,
                              spacing_mm=refiner.config.spacing_mm, workers=config.data.cache_workers,
                              progress=progress and main, bias_correction=refiner.config.bias_correction)
    mixture = MixtureDataset(
        sources=entries, crop_size=config.data.crop_size, prompts_per_sample=config.data.prompts_per_sample,
        foreground_prob=config.data.foreground_prob, augment_config=config.augment, seed=config.seed,
        rank=accelerator.process_index, start_step=step, keep_in_memory=config.data.keep_in_memory,
        concepts=refiner.config.concepts,
    )
    loader = torch.utils.data.DataLoader(RefineMixture(mixture, config.refine.simulate),
                                         batch_size=config.data.batch_size, collate_fn=collate_refine,
                                         num_workers=config.data.num_workers,
                                         persistent_workers=config.data.num_workers > 0)
    provenance = {
        "training_config": config.name, "seed": config.seed, "stage": "refine",
        "first_stage": "none: trained on simulated first-stage probabilities (any first stage can precede it)",
        "simulate": config_to_dict(config.refine.simulate),
        "data_sources": [{"name": s.name, "kind": s.kind, "path": s.path, "cases": len(e.files),
                          "supervises": list(e.supervised), "weight": s.weight}
                         for s, e in zip(config.data.sources, entries)],
        "hardware": _hardware(accelerator), "git_commit": git_commit(), "command": command,
    }
    if main:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "config.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
        _log(out, {"event": "start", "stage": "refine", "step": step,
                   "resumed_from": str(resume_dir) if resume_dir else None,
                   "trainable_parameters": refiner.num_parameters(),
                   "cases": {e.name: len(e.files) for e in entries}})

    wall_before, t_start = float(state.get("wall_time_s", 0.0)), time.perf_counter()
    running: dict[str, list[float]] = {"loss": [], "dice_stage1": [], "dice_refined": []}
    data_iter = iter(loader)
    while step < config.max_steps:
        t0 = time.perf_counter()
        batch = next(data_iter)
        dev = accelerator.device
        stage1 = batch["stage1"].to(dev)                                   # (B, P, D, H, W)
        targets, loss_mask = batch["targets"].to(dev), batch["loss_mask"].to(dev)
        phrases = batch["phrases"]
        B, P = len(phrases), len(phrases[0])
        emb = text.encode([p for row in phrases for p in row]).view(B, P, -1).to(dev)  # (B, P, T)
        with accelerator.autocast():
            logits = wrapper(batch["images"].to(dev), batch["present"].to(dev), stage1, emb)
        result = loss_fn(logits, targets, loss_mask)
        if not torch.isfinite(result.loss):
            raise ModelError(f"training loss became {result.loss.item()} at step {step}; lower optim.lr")
        accelerator.backward(result.loss)
        if config.optim.grad_clip > 0:
            accelerator.clip_grad_norm_(wrapper.parameters(), config.optim.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        running["loss"].append(float(accelerator.reduce(result.loss.detach(), reduction="mean")))
        running["dice_stage1"].append(hard_dice(stage1, targets, loss_mask))
        running["dice_refined"].append(hard_dice(torch.sigmoid(logits.detach().float()), targets, loss_mask))
        last = step == config.max_steps
        wall = wall_before + time.perf_counter() - t_start
        if main and (step % config.log_every == 0 or last):
            _log(out, {"event": "train", "step": step, **{k: float(np.nanmean(v)) if v else None
                                                          for k, v in running.items()},
                       "lr": scheduler.get_last_lr()[0], "step_time_s": time.perf_counter() - t0,
                       "wall_time_s": wall})
            for v in running.values():
                v.clear()
        if step % config.checkpoint_every == 0 or last:
            if main:
                _checkpoint(out, accelerator.unwrap_model(wrapper), optimizer, scheduler, config,
                            provenance, step=step, wall=wall)
            accelerator.wait_for_everyone()
    summary = {"step": step, "wall_time_s": wall_before + time.perf_counter() - t_start,
               "output_dir": str(out), "last_val": None}
    if main:
        _log(out, {"event": "end", **summary})
    accelerator.end_training()
    return summary


def _checkpoint(out: Path, refiner: Refiner, optimizer, scheduler, config: TrainConfig,
                provenance: dict[str, Any], *, step: int, wall: float) -> None:
    """``checkpoints/step_NNNNNNN/``: refiner weights + config, optimizer, then state.json (last,
    so a folder with it is complete); the oldest pruned; last.json."""
    ckpt = out / "checkpoints" / f"step_{step:07d}"
    save_refiner(refiner, ckpt, {**provenance, "steps": step, "wall_time_s": round(wall, 1)})
    meta = save_optimizer(optimizer, ckpt / OPTIM_FILE)
    write_json_atomic(ckpt / STATE_FILE, {
        "step": step, "wall_time_s": wall, "seed": config.seed, "optimizer": meta,
        "scheduler": {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"},
    })
    _prune(out / "checkpoints", config.keep_checkpoints)
    write_json_atomic(out / "last.json", {"step": step, "checkpoint": str(ckpt)})
