"""`vlseg segment`: answer one query on a scan, write answer.json and one mask per target.

Everything that needs no model is checked first, cheapest first, so a mistake costs a second,
not a model load and a whole case: the arguments, the output folder (a folder this process can
write, not a file, not under a file), then the scan (every file read and validated, the grids
matched, the field of view and slice spacing within what the model answers). Only then does the
model load.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from vlseg.vocab import SEQUENCES
from vlseg.errors import InputError


def check_common(args: argparse.Namespace) -> Path:
    """The checks one case and a cohort share, before either reads a scan or loads a model:
    the query, --threads, --confidence and the output folder (returned)."""
    if not args.query or not args.query.strip():
        raise InputError("--query is empty; ask e.g. \"segment the necrotic core\"")
    return check_run_options(args)


def check_run_options(args: argparse.Namespace) -> Path:
    """--threads, --confidence and the output folder (returned), as every answering command
    checks them (segment, compare)."""
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be at least 1, got {args.threads}")
    if not 0.0 < args.confidence < 1.0:
        raise InputError(f"--confidence must be between 0 and 1 (e.g. 0.9), got {args.confidence}")
    from vlseg.io import check_output_dir

    try:
        return check_output_dir(args.out)
    except InputError as e:
        raise InputError(f"--out {e}") from None


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    # 1. Arguments (2. the output folder is checked with them)
    out = check_common(args)
    from vlseg.pacs_cli import check_pacs_args

    check_pacs_args(args)
    if getattr(args, "cases", None) or getattr(args, "search", None):  # a cohort: vlseg/cohort/cli.py
        from vlseg.cohort.cli import run as run_cohort

        return run_cohort(args, out)
    if getattr(args, "overwrite", False):
        raise InputError("--overwrite goes with --cases (a cohort); a single case is always rewritten")
    if getattr(args, "dicomweb", None):
        return _run_dicomweb(args, out, t0)
    files = {s: getattr(args, s) for s in SEQUENCES if getattr(args, s, None)}
    if args.case and files:
        raise InputError("give either --case DIR or per-sequence files (--t1n/--t1c/--t2w/--t2f), not both")
    if not args.case and not files:
        raise InputError("no scan given: pass --case DIR, at least one of --t1n/--t1c/--t2w/--t2f, "
                         "or --dicomweb URL --study UID")
    if getattr(args, "series", None) and not args.case:
        raise InputError("--series goes with --case DIR (a DICOM study folder)")
    answer_and_save(args, args.case if args.case else files, out, t0)
    return 0


def _run_dicomweb(args: argparse.Namespace, out: Path, t0: float) -> int:
    """One study from a DICOMweb server: retrieved into a private temporary folder (removed
    after), answered as a local study, and with --store its SEG and SR sent back."""
    import tempfile

    from vlseg.pacs_cli import pacs_from_args, store_answer

    pacs = pacs_from_args(args)
    with tempfile.TemporaryDirectory(prefix="vlseg-dicomweb-") as tmp:
        folder = pacs.retrieve_study(args.study, Path(tmp) / "study")
        path = answer_and_save(args, folder, out, t0)
    if getattr(args, "store", False):
        uids = store_answer(pacs, path)
        print(f"stored the DICOM-SEG and the SR report ({len(uids)} instances) into study "
              f"{args.study}", file=sys.stderr)
    return 0


def answer_and_save(args: argparse.Namespace, source, out: Path, t0: float) -> Path:
    """3. the scan, read and validated once; 4. the model; the answer, saved; its answer.json."""
    from vlseg.io import open_case

    case = open_case(source, series=getattr(args, "series", None),
                     force=getattr(args, "force", False))

    # 4. The model, on the thread count asked for (the process is the CLI's)
    import torch

    from vlseg.segmenter import Segmenter

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    t1 = time.perf_counter()
    seg = Segmenter.from_pretrained(args.model, device=args.device, confidence=args.confidence,
                                    timepoint=getattr(args, "timepoint", "auto"),
                                    fast=getattr(args, "fast", False))
    load_s = time.perf_counter() - t1
    seg.set_case(case)
    answer = seg.ask(args.query)
    answer.timing_s["model_load"] = load_s
    answer.timing_s["wall"] = time.perf_counter() - t0
    path = answer.save(out, label_convention=getattr(args, "label_convention", None),
                       probabilities=getattr(args, "save_probabilities", False))
    print(answer.text)
    print(f"wrote {path} and {len(answer.masks)} mask(s)", file=sys.stderr)
    return path
