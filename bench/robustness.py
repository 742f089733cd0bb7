"""Robustness of checkpoints to shifted scans: Dice/HD95 per concept per shift family.

    python bench/robustness.py [--model A --model B] [--cases-per-family N] [--out DIR]
                               [--families clean noise ...] [--threads T] [--cache DIR]

A fixed, seeded test set per shift family (clean, anatomy_warp, contrast, bias_field,
thick_slices on their own 5 mm grid, noise, combined; plus T1c+FLAIR and T1c only on clean and
combined) is generated once into ``--cache`` and reused (see ``vlseg/benchmarks/robustness.py`` for the
seed namespace and ``vlseg/synth/shifts.py`` for the shifts). Every case goes through the
predictor's own path for each checkpoint. Writes ``robustness.json``, ``robustness.png`` and
``robustness.md`` into ``--out`` and prints the Markdown table (checkpoints side by side).
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CASES = 12
MAX_CASES = 200


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from vlseg.benchmarks.robustness import FAMILIES

    p = _Parser(prog="bench/robustness.py", description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", default=None,
                   help="checkpoint folder or bundled name (repeat to compare); default: the bundled default")
    p.add_argument("--cases-per-family", type=int, default=DEFAULT_CASES, metavar="N")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "robustness")
    p.add_argument("--families", nargs="+", default=list(FAMILIES), metavar="FAMILY",
                   help=f"subset of: {' '.join(FAMILIES)}")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--cache", type=Path, default=REPO / "work_data" / "robustness",
                   help="where generated cases are kept and reused")
    p.add_argument("--spacing", type=float, default=1.0, help="phantom voxel size in mm (1 = BraTS-like)")
    p.add_argument("--first-case", type=int, default=0, metavar="K",
                   help="score cases K .. K+N-1 (default 0); another range is a fresh draw of the test set")
    args = p.parse_args(argv)
    bad = [f for f in args.families if f not in FAMILIES]
    if bad:
        p.error(f"unknown family {bad[0]!r}; choose from {', '.join(FAMILIES)}")
    args.families = [f for f in FAMILIES if f in args.families]  # canonical order, no duplicates
    if not 1 <= args.cases_per_family <= MAX_CASES:
        p.error(f"--cases-per-family must be between 1 and {MAX_CASES}, got {args.cases_per_family}")
    if not 0 <= args.first_case <= 999 - args.cases_per_family:
        p.error(f"--first-case must be between 0 and {999 - args.cases_per_family}, got {args.first_case}")
    if args.threads < 1:
        p.error(f"--threads must be at least 1, got {args.threads}")
    if not 0.5 <= args.spacing <= 4.0:
        p.error(f"--spacing must be between 0.5 and 4 mm, got {args.spacing}")
    for name in ("out", "cache"):
        path = getattr(args, name)
        if path.exists() and not path.is_dir():
            p.error(f"--{name} {path} exists and is not a folder")
    return args


def run(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)  # this script is the entry point: it decides
    import vlseg
    from vlseg.benchmarks import robustness as rb

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    models = args.model or [None]
    t0 = time.perf_counter()
    testset = rb.build_testset(args.cache, cases_per_family=args.cases_per_family, families=args.families,
                               spacing_mm=args.spacing, first_case=args.first_case, log=log)
    generation_s = time.perf_counter() - t0
    result: dict = {
        "benchmark": "vlseg robustness",
        "command": "python bench/robustness.py " + " ".join(sys.argv[1:]),
        "test_set": {**rb.testset_description(args.cases_per_family, args.spacing, args.families,
                                              args.first_case),
                     "cache": str(rb.cache_folder(args.cache, args.spacing)),
                     "records": rb.load_records(testset)},
        "models": [], "summary": {}, "per_case": {},
        "runtime_s": {"generation_or_reuse": round(generation_s, 1)},
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "torch_threads": args.threads, "torch": torch.__version__, "vlseg": vlseg.__version__},
    }
    for label, model in zip(rb.model_labels(models), models):
        t1 = time.perf_counter()
        seg = vlseg.Segmenter.from_pretrained(model)
        log(f"scoring {label}")
        rows = rb.score_model(seg, testset, log=log)
        result["models"].append({"label": label, "argument": model, **seg.model_info()})
        result["summary"][label] = rb.summarize(rows)
        result["per_case"][label] = rows
        result["runtime_s"][label] = round(time.perf_counter() - t1, 1)
        first = rb.first_stage_rows(rows)
        if first:  # a model with a refinement stage: its first stage alone, from the same encodings
            fast = f"{label} --fast"
            result["models"].append({"label": fast, "argument": model, "first_stage_of": label})
            result["summary"][fast] = rb.summarize(first)
    return result


def main(argv: list[str] | None = None) -> int:
    from vlseg.errors import VlsegError

    args = parse_args(argv)
    try:
        from vlseg.benchmarks import robustness as rb
        from vlseg.fileio import write_bytes_atomic, write_json_atomic

        result = run(args)
        table = rb.markdown_tables(result)
        args.out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(args.out / "robustness.json", result)
        write_bytes_atomic(args.out / "robustness.md", table.encode())
        rb.plot_chart(result, args.out / "robustness.png")
    except (VlsegError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table)
    print(f"wrote {args.out / 'robustness.json'}, robustness.png, robustness.md "
          f"(runtime s: {result['runtime_s']})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
