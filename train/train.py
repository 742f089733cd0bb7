"""Train vlseg from a YAML config (single process, or any number with ``accelerate launch``).

    accelerate launch train/train.py --config train/configs/tiny_phantoms.yaml
    accelerate launch --num_processes 2 --cpu train/train.py --config train/configs/tiny_test.yaml
    accelerate launch train/train.py --config ... --override max_steps=5000 optim.lr=1e-3 --resume

Environment variables are read here only: VLSEG_THREADS (torch CPU threads per process).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Allow `python train/train.py` from a checkout without installing.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="training YAML (train/configs/*.yaml)")
    p.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. max_steps=100 data.batch_size=1 (values are YAML)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to log.jsonl)")
    args = p.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    from vlseg.errors import VlsegError
    from vlseg.training.config import load_config

    try:
        overrides = list(args.override)
        if os.environ.get("VLSEG_THREADS"):
            overrides.append(f"threads={int(os.environ['VLSEG_THREADS'])}")
        config = load_config(args.config, overrides)
        if config.threads:
            torch.set_num_threads(config.threads)
        from vlseg.training.loop import train
        from vlseg.training.refine_loop import train_refiner

        command = " ".join(["train/train.py", *(argv if argv is not None else sys.argv[1:])])
        run = train_refiner if config.refine is not None else train  # the refinement stage, or a first stage
        summary = run(config, resume=args.resume, progress=not args.no_progress, command=command)
    except VlsegError as e:
        print(f"train: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("train: interrupted (resume with --resume)", file=sys.stderr)
        return 130
    if summary.get("last_val"):
        print(f"train: step {summary['step']}, validation {summary['last_val']}")
    print(f"train: done, step {summary['step']}, checkpoints in {summary['output_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
