"""`vlseg synth --out DIR --n N --seed S [--start K] [--workers W] [--timepoint pre|post] [--healthy]`.

Case ``i`` (``K <= i < K + N``) is ``BraTS-SYN-{S:04d}-{i:05d}`` and uses a seed derived from
``(S, i)`` only, so the output does not depend on ``--workers`` or on how a run was split.
Complete cases already in DIR are skipped, so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from vlseg.errors import InputError

MAX_CASES = 100_000


def case_seed(base_seed: int, index: int) -> int:
    """Seed of case ``index`` in a run with ``base_seed`` (independent streams per case)."""
    return int(np.random.SeedSequence([int(base_seed), int(index)]).generate_state(1, np.uint32)[0])


def case_name(base_seed: int, index: int) -> str:
    return f"BraTS-SYN-{base_seed:04d}-{index:05d}"


def _one(out: str, base_seed: int, index: int, spacing_mm: float, dicom: dict | None = None,
         kind: dict | None = None) -> tuple[str, bool, float]:
    import torch

    from vlseg.synth.phantom import case_files, write_case

    torch.set_num_threads(1)
    name = case_name(base_seed, index)
    kind = kind or {}
    if dicom is not None:  # --format dicom: vlseg/synth/dicom.py
        from vlseg.synth.dicom import write_dicom_case

        t0 = time.perf_counter()
        path, done = write_dicom_case(Path(out), name, case_seed(base_seed, index),
                                      spacing_mm=spacing_mm, **dicom, **kind)
        return str(path), done, time.perf_counter() - t0
    done = all(p.exists() for p in case_files(Path(out) / name, name).values())
    t0 = time.perf_counter()
    path = write_case(out, case_seed(base_seed, index), case_id=name, spacing_mm=spacing_mm, **kind)
    return str(path), done, time.perf_counter() - t0


def run(args: argparse.Namespace) -> int:
    out, n, seed, start = Path(args.out), int(args.n), int(args.seed), int(args.start)
    workers = int(getattr(args, "workers", 1) or 1)
    pairs = getattr(args, "pairs", None)
    if pairs is not None:
        n = int(pairs)
    default_spacing = 2.0 if pairs is not None else 1.0
    spacing = float(getattr(args, "spacing", None) if getattr(args, "spacing", None) is not None
                    else default_spacing)
    if not 1 <= n <= MAX_CASES:
        raise InputError(f"--n must be between 1 and {MAX_CASES}, got {n}")
    if not 0.5 <= spacing <= 8.0:
        raise InputError(f"--spacing must be between 0.5 and 8 mm, got {spacing}")
    if seed < 0 or start < 0:
        raise InputError("--seed and --start must not be negative")
    if not 1 <= workers <= (os.cpu_count() or 1) * 4:
        raise InputError(f"--workers must be between 1 and {(os.cpu_count() or 1) * 4}, got {workers}")
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a folder; choose another --out", path=str(out))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create the output folder ({e.strerror})", path=str(out)) from e

    if pairs is not None:
        if getattr(args, "format", "nifti") != "nifti" or getattr(args, "healthy", False) \
                or getattr(args, "timepoint", "pre") != "pre":
            raise InputError("--pairs writes untreated NIfTI pairs; it does not go with --format dicom, "
                             "--healthy or --timepoint post")
        return _run_pairs(out, n, seed, start, spacing, workers)

    dicom = None
    if getattr(args, "format", "nifti") == "dicom":
        if not 1 <= int(getattr(args, "slice_step", 1) or 1) <= 8:
            raise InputError("--slice-step must be between 1 and 8")
        dicom = {"layout": getattr(args, "dicom_layout", "flat"), "oblique": bool(getattr(args, "oblique", False)),
                 "slice_step": int(getattr(args, "slice_step", 1) or 1),
                 "enhanced": bool(getattr(args, "enhanced", False))}
    timepoint = getattr(args, "timepoint", "pre") or "pre"
    healthy = bool(getattr(args, "healthy", False))
    if healthy and timepoint == "post":
        raise InputError("--healthy makes tumor-free brains; it does not go with --timepoint post")
    kind = {"timepoint": timepoint, "healthy": healthy}
    indices = range(start, start + n)
    t0 = time.perf_counter()
    report = lambda p, skipped, dt: print(  # noqa: E731
        f"{p}  {'already complete, skipped' if skipped else f'written in {dt:.1f} s'}", flush=True)
    if workers == 1:
        for i in indices:
            report(*_one(str(out), seed, i, spacing, dicom, kind))
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_one, str(out), seed, i, spacing, dicom, kind) for i in indices]
            for fut in as_completed(futures):
                report(*fut.result())
    print(f"{n} case(s) in {out} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    return 0


def _one_pair(out: str, base_seed: int, index: int, spacing_mm: float) -> tuple[str, bool, float]:
    import torch

    from vlseg.synth.pairs import TRUTH_FILE, pair_name, write_pair

    torch.set_num_threads(1)
    done = (Path(out) / pair_name(base_seed, index) / TRUTH_FILE).exists()
    t0 = time.perf_counter()
    path = write_pair(out, base_seed, index, spacing_mm=spacing_mm)
    return str(path), done, time.perf_counter() - t0


def _run_pairs(out: Path, n: int, seed: int, start: int, spacing: float, workers: int) -> int:
    """``--pairs N``: pairs ``start .. start + N - 1`` and ``OUT/pairs.csv`` listing every pair there."""
    from vlseg.synth.pairs import TRUTH_FILE, write_pairs_csv

    t0 = time.perf_counter()
    jobs = [(str(out), seed, i, spacing) for i in range(start, start + n)]
    if workers == 1:
        results = [_one_pair(*job) for job in jobs]
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            results = [f.result() for f in as_completed([pool.submit(_one_pair, *job) for job in jobs])]
    for path, skipped, dt in results:
        print(f"{path}  {'already complete, skipped' if skipped else f'written in {dt:.1f} s'}", flush=True)
    csv_path = write_pairs_csv(out, [p.parent for p in out.glob(f"*/{TRUTH_FILE}")])
    print(f"{n} pair(s) in {out}, listed in {csv_path} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    return 0
