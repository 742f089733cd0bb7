"""The training loop (accelerate): single process on CPU, DDP over processes/GPUs/nodes.

    accelerate launch train/train.py --config train/configs/tiny_phantoms.yaml

Output folder layout (``output_dir``)::

    config.yaml                 resolved training config
    log.jsonl                   one JSON object per log / validation event
    checkpoints/step_000500/    model.safetensors + config.json (vlseg.model.checkpoint), or the
                                LoRA adapter when fine-tuning, plus optimizer.safetensors and
                                state.json (step, scheduler, wall time); the newest K are kept
    last -> newest checkpoint (a copy, see ``last.json``), best/ (best validation mean Dice)

Nothing is pickled: optimizer state goes to safetensors, the rest to JSON.
"""
from __future__ import annotations

import json
import math
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import yaml
from torch import nn

from vlseg.errors import InputError, ModelError
from vlseg.fileio import atomic_path, write_json_atomic
from vlseg.model.adapters import AdapterSpec, BaseRef, save_adapter
from vlseg.model.checkpoint import save_checkpoint
from vlseg.model.storage import check_safetensors, git_commit
from vlseg.training.build import base_ref, build_training_model
from vlseg.training.cache import build_cache, load_labelled_case
from vlseg.training.config import TrainConfig, config_to_dict
from vlseg.training.losses import MaskedPromptLoss
from vlseg.training.sources import MixtureDataset, SourceEntries, collate, discover_cases
from vlseg.training.validate import validate_cases

if TYPE_CHECKING:
    from accelerate import Accelerator

STATE_FILE = "state.json"
OPTIM_FILE = "optimizer.safetensors"


# --------------------------------------------------------------------------------------------
# the training-time wrapper

class PromptedSegmenter(nn.Module):
    """Training-time wrapper (what DDP sees): phrases -> text (LoRA, differentiable) -> logits.

    Keeps prompt sampling out of the model's own forward; duplicate phrases in a batch are
    encoded once.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.text_trainable = any(p.requires_grad for p in model.text_encoder.parameters())

    def forward(self, images: torch.Tensor, present: torch.Tensor, phrases: list[list[str]]) -> torch.Tensor:
        B, P = len(phrases), len(phrases[0])
        flat = [p for row in phrases for p in row]
        unique = list(dict.fromkeys(flat))
        index = torch.tensor([unique.index(p) for p in flat], device=images.device)
        # Text -> prompt embeddings
        te = self.model.text_encoder
        if self.text_trainable:
            tokens = {k: v.to(images.device) for k, v in te.tokenize(unique).items()}
            text = te(**tokens)                                           # (U, T)
        else:
            text = te.encode(unique).to(images.device)                    # (U, T)
        prompts = self.model.prompt_embeddings_from_text(text)[index]     # (B*P, E)
        prompts = prompts.view(B, P, -1)                                  # (B, P, E)
        # Encode image once, decode every prompt
        features = self.model.encode_image(images, present)
        return self.model.decode(features, prompts)                       # (B, P, D, H, W)


# --------------------------------------------------------------------------------------------
# optimizer, schedule, state files

def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    o = config.optim
    text, decay, no_decay = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("text_encoder."):
            text.append(p)
        elif p.ndim > 1:
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [g for g in (
        {"params": decay, "lr": o.lr, "weight_decay": o.weight_decay},
        {"params": no_decay, "lr": o.lr, "weight_decay": 0.0},
        {"params": text, "lr": o.text_lr, "weight_decay": 0.0},
    ) if g["params"]]
    return torch.optim.AdamW(groups, betas=tuple(o.betas))


def lr_factor(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine / poly decay to ``min_lr_ratio`` (or constant)."""
    o = config.optim
    if step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    if o.scheduler == "constant":
        return 1.0
    t = min(1.0, (step - o.warmup_steps) / max(1, config.max_steps - o.warmup_steps))
    decay = 0.5 * (1 + math.cos(math.pi * t)) if o.scheduler == "cosine" else (1 - t) ** 0.9
    return o.min_lr_ratio + (1 - o.min_lr_ratio) * decay


def save_optimizer(optimizer: torch.optim.Optimizer, path: Path) -> dict[str, Any]:
    """Optimizer tensors -> safetensors; returns the JSON-able rest (param groups, scalars)."""
    from safetensors.torch import save_file

    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{idx}.{k}"] = v.detach().cpu().contiguous().clone()
            else:
                scalars[f"{idx}.{k}"] = v
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return {"param_groups": groups, "scalars": scalars}


def load_optimizer(optimizer: torch.optim.Optimizer, path: Path, meta: dict[str, Any]) -> None:
    from safetensors.torch import load_file

    check_safetensors(path)
    tensors = load_file(str(path), device="cpu")
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    for key, v in meta.get("scalars", {}).items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def optimization(module: nn.Module, config: TrainConfig, resume_dir: Path | None, state: dict[str, Any]
                 ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR, MaskedPromptLoss]:
    """The optimizer, the learning-rate schedule and the loss of a run, restored when resuming
    (the schedule itself is a function of the step, recomputed from this config)."""
    optimizer = build_optimizer(module, config)
    if resume_dir is not None:
        load_optimizer(optimizer, resume_dir / OPTIM_FILE, state["optimizer"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    if resume_dir is not None:
        scheduler.load_state_dict({**state["scheduler"], "lr_lambdas": [None] * len(optimizer.param_groups)})
    loss_fn = MaskedPromptLoss(bce_weight=config.loss.bce_weight, dice_weight=config.loss.dice_weight,
                               smooth=config.loss.dice_smooth)
    return optimizer, scheduler, loss_fn


def find_last_checkpoint(output_dir: str | Path) -> Path | None:
    """Newest complete checkpoint (its state.json is written last)."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return None
    done = sorted(p for p in root.glob("step_*") if (p / STATE_FILE).is_file())
    return done[-1] if done else None


def _hardware(accelerator) -> dict[str, Any]:
    hw = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
          "processes": accelerator.num_processes, "device": str(accelerator.device)}
    if torch.cuda.is_available() and accelerator.device.type == "cuda":
        hw["gpu"] = torch.cuda.get_device_name(accelerator.device)
    return hw


# --------------------------------------------------------------------------------------------
# the loop

@dataclass
class _Run:
    """One training run: what the steps below share (the model, its optimizer, where it writes)
    and its progress (step, best and last validation, wall time)."""

    config: TrainConfig
    accelerator: Accelerator
    out: Path
    wrapper: nn.Module  # PromptedSegmenter, as prepared by accelerate (DDP over ranks)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    loss_fn: MaskedPromptLoss
    spec: AdapterSpec | None  # the LoRA adapter when fine-tuning
    base: BaseRef | None  # the base checkpoint an adapter names
    provenance: dict[str, Any]
    step: int
    best: dict[str, Any] | None
    last_val: dict[str, Any] | None
    wall_before: float  # wall time of the run before this resume
    t_start: float = 0.0

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def model(self) -> nn.Module:
        """The vlseg model being trained (unwrapped)."""
        return self.accelerator.unwrap_model(self.wrapper).model

    def wall(self) -> float:
        return self.wall_before + time.perf_counter() - self.t_start


def train(config: TrainConfig, *, resume: bool = False, progress: bool = True,
          command: str | None = None) -> dict[str, Any]:
    """Train as configured; returns a summary (final step, last/best validation, paths).

    ``command``: the launching command line, recorded in checkpoint provenance.
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=not torch.cuda.is_available())
    resume_dir, state = _resume_point(config, resume=resume, main=accelerator.is_main_process)
    run, loader, val_refs = _set_up(config, accelerator, resume_dir, state, progress=progress, command=command)
    run.t_start = time.perf_counter()
    bar = tqdm(total=config.max_steps, initial=run.step, disable=not (progress and run.main),
               desc=config.name, unit="step", dynamic_ncols=True)
    data_iter = iter(loader)
    running: list[float] = []
    run.wrapper.train()
    while run.step < config.max_steps:
        t0 = time.perf_counter()
        running.append(_train_step(run, next(data_iter)))
        bar.update()
        last = run.step == config.max_steps
        if run.main and (run.step % config.log_every == 0 or last):
            _log_losses(run, running, step_time_s=time.perf_counter() - t0, bar=bar)
        if run.main and config.val.sources and ((config.val.every and run.step % config.val.every == 0) or last):
            _validate(run, val_refs)
        if run.step % config.checkpoint_every == 0 or last:
            _checkpoint(run)
    bar.close()
    return _finish(run)


def _resume_point(config: TrainConfig, *, resume: bool, main: bool) -> tuple[Path | None, dict[str, Any]]:
    """The checkpoint to resume from (None: start at step 0) and its state.json."""
    out = Path(config.output_dir)
    resume_dir = find_last_checkpoint(out) if resume else None
    if resume and resume_dir is None and main:
        print(f"train: no checkpoint to resume in {out / 'checkpoints'}; starting from step 0")
    state: dict[str, Any] = json.loads((resume_dir / STATE_FILE).read_text()) if resume_dir else {}
    return resume_dir, state


def _set_up(config: TrainConfig, accelerator: Accelerator, resume_dir: Path | None, state: dict[str, Any], *,
            progress: bool, command: str | None
            ) -> tuple[_Run, torch.utils.data.DataLoader, list[tuple[Any, Any]]]:
    """Seed, model, optimizer and schedule (restored when resuming), data, validation cases;
    the output folder's config.yaml and the log's start event. Returns the run, the training
    data loader and the validation cases."""
    from accelerate.utils import set_seed

    main = accelerator.is_main_process
    out = Path(config.output_dir)
    start_step = int(state.get("step", 0))
    set_seed(config.seed + start_step)

    # Model (+ the base checkpoint an adapter names), optimizer, schedule
    model, spec = build_training_model(config, resume_dir=resume_dir)
    base = base_ref(config)
    optimizer, scheduler, loss_fn = optimization(model, config, resume_dir, state)
    wrapper, optimizer = accelerator.prepare(PromptedSegmenter(model), optimizer)

    entries, loader = _training_data(config, accelerator, model, start_step=start_step, progress=progress)
    val_refs = _val_refs(config) if main else []

    provenance = {
        "training_config": config.name, "seed": config.seed,
        "data_sources": [_describe_source(s, e) for s, e in zip(config.data.sources, entries)],
        "validation_sources": [{"name": s.name, "kind": s.kind, "path": s.path} for s in config.val.sources],
        "hardware": _hardware(accelerator), "git_commit": git_commit(), "command": command,
    }
    if main:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "config.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
        if base is not None:
            provenance["base_checkpoint"] = base.to_json()
        _log(out, {"event": "start", "step": start_step, "resumed_from": str(resume_dir) if resume_dir else None,
                   "processes": accelerator.num_processes,
                   "distributed": f"{accelerator.distributed_type.value} ({accelerator.state.backend or 'none'})",
                   "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
                   "cases": {e.name: len(e.files) for e in entries}})
    run = _Run(config=config, accelerator=accelerator, out=out, wrapper=wrapper, optimizer=optimizer,
               scheduler=scheduler, loss_fn=loss_fn, spec=spec, base=base, provenance=provenance,
               step=start_step, best=state.get("best"), last_val=state.get("last_val"),
               wall_before=float(state.get("wall_time_s", 0.0)))
    return run, loader, val_refs


def _training_data(config: TrainConfig, accelerator: Accelerator, model: nn.Module, *, start_step: int,
                   progress: bool) -> tuple[list[SourceEntries], torch.utils.data.DataLoader]:
    """Build the cache once (main process first), then every rank streams its own samples
    (from ``start_step`` on when resuming)."""
    with accelerator.main_process_first():
        entries = build_cache(config.data.sources, cache_dir=config.data.cache_dir,
                              spacing_mm=model.config.spacing_mm, workers=config.data.cache_workers,
                              progress=progress and accelerator.is_main_process,
                              bias_correction=model.config.bias_correction)
    dataset = MixtureDataset(
        sources=entries, crop_size=config.data.crop_size, prompts_per_sample=config.data.prompts_per_sample,
        foreground_prob=config.data.foreground_prob, augment_config=config.augment, seed=config.seed,
        rank=accelerator.process_index, start_step=start_step, keep_in_memory=config.data.keep_in_memory,
        concepts=model.config.concepts,
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.data.batch_size, collate_fn=collate,
                                         num_workers=config.data.num_workers,
                                         persistent_workers=config.data.num_workers > 0)
    return entries, loader


def _train_step(run: _Run, batch: dict[str, Any]) -> float:
    """One optimizer step on ``batch``; the loss, averaged over ranks."""
    device = run.accelerator.device
    images = batch["images"].to(device)                  # (B, 4, D, H, W)
    present = batch["present"].to(device)                # (B, 4)
    targets = batch["targets"].to(device)                # (B, P, D, H, W)
    loss_mask = batch["loss_mask"].to(device)            # (B, P)
    with run.accelerator.autocast():
        logits = run.wrapper(images, present, batch["phrases"])
    result = run.loss_fn(logits, targets, loss_mask)
    if not torch.isfinite(result.loss):
        raise ModelError(f"training loss became {result.loss.item()} at step {run.step}; lower optim.lr")
    run.accelerator.backward(result.loss)
    if run.config.optim.grad_clip > 0:
        run.accelerator.clip_grad_norm_(run.wrapper.parameters(), run.config.optim.grad_clip)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.step += 1
    return float(run.accelerator.reduce(result.loss.detach(), reduction="mean"))


def _log_losses(run: _Run, running: list[float], *, step_time_s: float, bar) -> None:
    """Log the mean loss since the last log (and show it on the progress bar); empties ``running``."""
    loss_avg = float(np.mean(running))
    bar.set_postfix(loss=f"{loss_avg:.4f}")
    _log(run.out, {"event": "train", "step": run.step, "loss": loss_avg, "lr": run.scheduler.get_last_lr()[0],
                   "step_time_s": step_time_s, "wall_time_s": run.wall()})
    running.clear()


def _validate(run: _Run, val_refs: list[tuple[Any, Any]]) -> None:
    """Score the validation cases (main process); save ``best/`` when the first concept's mean
    Dice improves."""
    run.last_val = run_validation(run.model, val_refs, run.config, run.accelerator.device)
    _log(run.out, {"event": "val", "step": run.step, **run.last_val})
    score = run.last_val.get(next(iter(run.last_val)), {}).get("mean") if run.last_val else None
    if score is not None and (run.best is None or score > run.best["score"]):
        run.best = {"step": run.step, "score": score}
        _save(run.out / "best", run.model, run.spec, run.base, run.config, run.provenance,
              step=run.step, wall=run.wall(), val=run.last_val)
    run.wrapper.train()


def _checkpoint(run: _Run) -> None:
    """``checkpoints/step_NNNNNNN/``: weights (or adapter), optimizer, then state.json (last, so a
    folder with it is complete); the oldest pruned; last.json. Every rank waits for it."""
    if run.main:
        wall = run.wall()
        ckpt = run.out / "checkpoints" / f"step_{run.step:07d}"
        _save(ckpt, run.model, run.spec, run.base, run.config, run.provenance,
              step=run.step, wall=wall, val=run.last_val)
        meta = save_optimizer(run.optimizer, ckpt / OPTIM_FILE)
        write_json_atomic(ckpt / STATE_FILE, {
            "step": run.step, "wall_time_s": wall, "seed": run.config.seed, "optimizer": meta,
            "scheduler": {k: v for k, v in run.scheduler.state_dict().items() if k != "lr_lambdas"},
            "best": run.best, "last_val": run.last_val, "processes": run.accelerator.num_processes,
        })
        _prune(run.out / "checkpoints", run.config.keep_checkpoints)
        write_json_atomic(run.out / "last.json", {"step": run.step, "checkpoint": str(ckpt)})
    run.accelerator.wait_for_everyone()


def _finish(run: _Run) -> dict[str, Any]:
    """Per-rank weight digests (several processes), the log's end event; the run's summary."""
    accelerator = run.accelerator
    accelerator.wait_for_everyone()
    if accelerator.num_processes > 1:
        # Every rank records a digest of its weights: DDP keeps them identical (checked in tests)
        write_json_atomic(run.out / "ranks" / f"rank{accelerator.process_index}.json",
                          {"rank": accelerator.process_index, "step": run.step,
                           "weights_sha256": state_digest(run.model)})
        accelerator.wait_for_everyone()
    summary = {"step": run.step, "wall_time_s": run.wall(), "last_val": run.last_val, "best": run.best,
               "last_checkpoint": str(find_last_checkpoint(run.out)), "output_dir": str(run.out)}
    if run.main:
        _log(run.out, {"event": "end", **summary})
    accelerator.end_training()
    return summary


def state_digest(model: nn.Module) -> str:
    """SHA-256 over every trainable tensor (name + bytes), in name order."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if p.requires_grad:
            h.update(name.encode())
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _describe_source(source, entry) -> dict[str, Any]:
    return {"name": source.name, "kind": source.kind, "path": source.path, "cases": len(entry.files),
            "supervises": list(entry.supervised), "weight": source.weight}


def _val_refs(config: TrainConfig) -> list[tuple[Any, Any]]:
    refs = []
    for s in config.val.sources:
        cases = discover_cases(s)
        refs += [(s, r) for r in cases[: config.val.max_cases or len(cases)]]
    train_paths = set()
    for s in config.data.sources:
        for r in discover_cases(s):
            train_paths.update(str(p.resolve()) for p in r.paths())
    overlap = [r.case_id for _, r in refs if any(str(p.resolve()) in train_paths for p in r.paths())]
    if overlap:
        raise InputError(f"validation cases are also training cases ({overlap[:3]}); use separate folders")
    return refs


def run_validation(model: nn.Module, refs, config: TrainConfig, device) -> dict[str, dict[str, float]]:
    """Load each validation case fresh (input resolution) and score it; see validate.py."""
    def cases():
        for source, ref in refs:
            case, masks = load_labelled_case(ref, source)
            yield _with_labels(case, masks)

    return validate_cases(model, _Lazy(cases), sequence_sets=config.val.sequence_sets,
                          threshold=config.val.threshold, heldout=config.val.heldout_phrases, device=device)


class _Lazy:
    """An iterable that loads validation cases one at a time (keeps memory flat)."""

    def __init__(self, factory) -> None:
        self.factory = factory

    def __iter__(self):
        return self.factory()


def _with_labels(case, masks):
    """The case with exactly the concepts its source labels (others are not scored)."""
    import dataclasses

    return dataclasses.replace(case, labels=dict(masks))


def _save(folder: Path, model: nn.Module, spec, base, config: TrainConfig, provenance_base: dict[str, Any], *,
          step: int, wall: float, val: dict[str, Any] | None) -> None:
    """A full checkpoint, or (fine-tuning with LoRA) an adapter naming its base checkpoint."""
    prov = {**provenance_base, "steps": step, "wall_time_s": round(wall, 1), "validation": val}
    if spec is not None:
        save_adapter(model, spec, folder, base=base, provenance=prov)
    else:
        save_checkpoint(model, folder, prov)


def _prune(root: Path, keep: int) -> None:
    done = sorted(p for p in root.glob("step_*") if (p / STATE_FILE).is_file())
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _log(out: Path, record: dict[str, Any]) -> None:
    record = {"time": round(time.time(), 3), **record}
    with open(out / "log.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
