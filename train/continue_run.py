"""Continue a training run for a bounded number of steps into a new folder, on whatever device
is present (CUDA with bf16 when there is one; CPU otherwise).

    python train/continue_run.py --config train/configs/tiny_randomized.yaml \
        --from runs/tiny_randomized --steps 600 --out $OUT/tiny_randomized [--override ...]

``--from`` is a run folder (its newest complete checkpoint is used), one checkpoint folder
(``.../checkpoints/step_NNNNNNN``) or ``none`` (start as the config says: its init_checkpoint or
from scratch). The checkpoint is copied into ``<out>/checkpoints/`` and training resumes from it
(weights, optimizer, step) up to ``step + --steps``; the final step is always checkpointed and
validated. ``<out>`` then holds config.yaml, log.jsonl, checkpoints/, best/ and summary.json.
Used by ``train/gpu_recipe.sh``. Environment variables are not read here.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _resume_point(src: str) -> Path | None:
    """The checkpoint folder ``--from`` names (None for 'none')."""
    from vlseg.errors import InputError
    from vlseg.training.loop import STATE_FILE, find_last_checkpoint

    if src == "none":
        return None
    path = Path(src)
    if (path / STATE_FILE).is_file():
        return path
    if path.is_dir():
        found = find_last_checkpoint(path)
        if found is not None:
            return found
    raise InputError("no complete checkpoint there (expected a run folder or checkpoints/step_*/ "
                     "with state.json); pass --from none to start fresh", str(path))


def _checkpoint_model_name(folder: Path) -> str | None:
    """The model config a checkpoint folder holds: a full checkpoint's (its config.json), or a
    LoRA adapter's base model (its adapter.json); None when the folder records neither."""
    from vlseg.model.adapters import is_adapter_folder, read_adapter
    from vlseg.model.checkpoint import CONFIG_FILE, read_checkpoint_config

    if is_adapter_folder(folder):
        return read_adapter(folder).spec.base_model
    if (folder / CONFIG_FILE).is_file():
        name = read_checkpoint_config(folder)["model"].get("name")
        return None if name is None else str(name)
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="training YAML (train/configs/*.yaml)")
    p.add_argument("--from", dest="source", required=True, help="run folder, checkpoint folder, or 'none'")
    p.add_argument("--steps", type=int, required=True, help="steps to train beyond the resume point")
    p.add_argument("--out", required=True, help="output folder (the new run's output_dir)")
    p.add_argument("--mixed-precision", choices=("auto", "no", "bf16", "fp16"), default="auto",
                   help="auto: bf16 on CUDA, none on CPU")
    p.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides (YAML values)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    import torch

    from vlseg.errors import VlsegError
    from vlseg.training.config import load_config
    from vlseg.training.build import resolve_model_config
    from vlseg.training.loop import STATE_FILE, train

    try:
        if args.steps < 1:
            raise VlsegError("--steps must be >= 1")
        out = Path(args.out)
        if out.exists() and any(out.iterdir()):
            raise VlsegError(f"{out}: output folder is not empty; choose a new --out")
        resume = _resume_point(args.source)
        start = json.loads((resume / STATE_FILE).read_text())["step"] if resume else 0
        precision = args.mixed_precision
        if precision == "auto":
            precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
        overrides = [*args.override, f"output_dir={out}", f"max_steps={start + args.steps}",
                     f"mixed_precision='{precision}'"]
        config = load_config(args.config, overrides)
        if config.threads:
            torch.set_num_threads(config.threads)
        if resume is not None:
            # The checkpoint must hold the model this config trains.
            want = resolve_model_config(config).name
            have = _checkpoint_model_name(resume)
            if have is not None and have != want:
                raise VlsegError(f"{resume}: checkpoint is a {have!r} model but the config trains {want!r}")
            dest = out / "checkpoints" / resume.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(resume, dest)
        command = " ".join(["train/continue_run.py", *(argv if argv is not None else sys.argv[1:])])
        summary = train(config, resume=resume is not None, progress=not args.no_progress, command=command)
    except VlsegError as e:
        print(f"continue_run: error: {e}", file=sys.stderr)
        return 2
    summary = {**summary, "resumed_from": str(resume) if resume else None, "start_step": start,
               "mixed_precision": precision, "device": "cuda" if torch.cuda.is_available() else "cpu"}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"continue_run: step {start} -> {summary['step']} on {summary['device']} ({precision}); "
          f"validation {summary.get('last_val')}; folder {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
