"""`vlseg bench`: speed and memory of the Segmenter on a generated 240x240x155 4-sequence case.

Reports medians over several runs (never asserted in tests):
  * first answer: ``set_case`` (load, validate, preprocess, encode) + the first ``ask``
    (parse, decode, registration to the atlas, measurements);
  * follow-up: each further ``ask`` on the same case (new concepts and repeated ones);
  * peak RSS of the process (``ru_maxrss``).
With a refinement stage the first answer is also timed from the first stage alone (``--fast``),
alternating with the full one on the same case, so the stage's cost is read from one run.

``--profile`` times every stage on realistic cases instead (``vlseg.benchmarks.profile``).
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

from vlseg.errors import InputError

FIRST_QUERY = "segment the enhancing tumor"
FOLLOW_UPS = ("how big is it?", "and the edema?", "where is the necrotic core?",
              "what fraction of the core is necrotic?", "does the tumor cross the midline?")


def run_benchmark(*, runs: int = 5, model: str | None = None, case_dir: Path | None = None,
                  device: str = "cpu") -> dict:
    """Time the Segmenter with the torch threads the caller set (recorded in the result)."""
    import torch

    from vlseg.segmenter import Segmenter
    from vlseg.synth import write_case

    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="vlseg-bench-") as tmp:
        if case_dir is None:
            case_dir = write_case(Path(tmp), seed=2024, spacing_mm=1.0)
        t0 = time.perf_counter()
        seg = Segmenter.from_pretrained(model, device=device)
        load_s = time.perf_counter() - t0
        fast = seg.fork(fast=True) if seg.predictor.refines else None
        first, first_fast, follow = [], [], []

        def fast_answer() -> None:  # the first stage alone, on the same case, in the same run
            t1 = time.perf_counter()
            fast.set_case(case_dir)
            fast.ask(FIRST_QUERY)
            first_fast.append(time.perf_counter() - t1)
            fast.reset()

        for k in range(runs):
            if fast is not None and k % 2 == 0:  # alternate which goes first (caches warm the second)
                fast_answer()
            t1 = time.perf_counter()
            seg.set_case(case_dir)
            seg.ask(FIRST_QUERY)
            first.append(time.perf_counter() - t1)
            for q in FOLLOW_UPS:
                t2 = time.perf_counter()
                seg.ask(q)
                follow.append(time.perf_counter() - t2)
            if fast is not None and k % 2 == 1:
                fast_answer()
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    extra = {}
    if first_fast:
        extra = {"first_answer_fast_s_median": round(statistics.median(first_fast), 3),
                 "first_answer_fast_s_all": [round(x, 3) for x in first_fast],
                 "refinement_adds_s_median": round(statistics.median(first) - statistics.median(first_fast), 3)}
    return {
        "case": "synthetic 240x240x155, 4 sequences, 1 mm",
        "runs": runs,
        "device": device,
        "threads": threads,
        "model_load_s": round(load_s, 3),
        "first_answer_s_median": round(statistics.median(first), 3),
        "first_answer_s_all": [round(x, 3) for x in first],
        **extra,
        "follow_up_s_median": round(statistics.median(follow), 3),
        "follow_up_s_max": round(max(follow), 3),
        "peak_rss_mb": round(peak_mb, 1),
        "machine": f"{platform.processor() or platform.machine()}, torch threads={threads}",
    }


def run_cli(args: argparse.Namespace) -> int:
    import torch

    if args.threads < 1:
        raise InputError(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else None
    if args.profile:
        from vlseg.benchmarks.cases import PROFILE_CASES
        from vlseg.benchmarks.profile import format_profile, run_profile

        cases = tuple(args.cases or PROFILE_CASES)
        unknown = [c for c in cases if c not in PROFILE_CASES]
        if unknown:
            raise InputError(f"unknown benchmark case {unknown[0]!r}; one of {', '.join(PROFILE_CASES)}")
        result = run_profile(runs=args.runs, model=args.model, device=args.device, cases=cases,
                             work=Path(args.work) if args.work else None)
        table = format_profile(result)
        print(table)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.with_suffix(".txt").write_text(table + "\n")
    else:
        result = run_benchmark(runs=args.runs, model=args.model, device=args.device)
        print(json.dumps(result, indent=2))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    return 0
