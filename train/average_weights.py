"""Average two checkpoints of one model in weight space (WiSE-FT): (1 - w) * FIRST + w * SECOND.

    python train/average_weights.py --first default --second runs/x/checkpoints/step_0000250 \\
        --weight 0.5 --out runs/wise_0.5

Typical use: FIRST is the model a fine-tune started from, SECOND the fine-tune. The output is a
normal checkpoint folder (config.json records both inputs and the weight).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    from vlseg.errors import VlsegError
    from vlseg.model.checkpoint import average_checkpoints

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first", required=True, help="checkpoint folder or bundled name")
    parser.add_argument("--second", required=True, help="checkpoint folder or bundled name")
    parser.add_argument("--weight", type=float, required=True, help="share of SECOND, in [0, 1]")
    parser.add_argument("--out", required=True, help="new checkpoint folder")
    args = parser.parse_args(argv)
    if Path(args.out).exists() and any(Path(args.out).iterdir()):
        print(f"average_weights: error: {args.out} exists and is not empty; choose a new folder", file=sys.stderr)
        return 2
    try:
        out = average_checkpoints(args.first, args.second, args.out, weight=args.weight)
    except VlsegError as exc:
        print(f"average_weights: error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
