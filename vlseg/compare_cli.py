"""`vlseg compare`: two scans of one patient -> OUT/comparison.json, both answers, the registration.

    vlseg compare --baseline B/ --followup F/ --out OUT/
    vlseg compare --baseline-t1n a.nii.gz ... --followup-t1n b.nii.gz ... --out OUT/
    vlseg compare --pairs pairs.csv --out OUT/      # a cohort of pairs (vlseg/cohort/pairs.py)

Like `vlseg segment`, everything that needs no model is checked first (the arguments, the
output folder, both scans read and validated, their sequences compared and the follow-up
registered to the baseline), so a bad pair costs seconds, not a model load, and writes nothing.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from vlseg.errors import InputError
from vlseg.vocab import SEQUENCES

ROLES = ("baseline", "followup")


def add_arguments(s: argparse.ArgumentParser) -> None:
    """The `compare` subcommand's options (cli.py builds the parser)."""
    g = s.add_argument_group("input (give --baseline/--followup, per-sequence files, or --pairs)")
    for role in ROLES:
        g.add_argument(f"--{role}", default=None, metavar="DIR",
                       help=f"{role} case folder (BraTS, MSD, any subset) or DICOM study folder")
        for seq in SEQUENCES:
            g.add_argument(f"--{role}-{seq}", default=None, metavar="F", help=f"{role} {seq} NIfTI file")
    g.add_argument("--pairs", default=None, metavar="CSV",
                   help="cohort: a CSV with columns pair_id, baseline, followup (as `vlseg synth --pairs` "
                        "writes); writes OUT/<pair_id>/, OUT/changes.csv, OUT/failures.csv (exit 3 if "
                        "some pairs failed); resumable, split with accelerate launch")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--model", default=None, help="bundled name, checkpoint folder or LoRA adapter folder")
    s.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    s.add_argument("--confidence", type=float, default=0.9,
                   help="confidence level of the change intervals (default 0.9)")
    s.add_argument("--timepoint", default="auto", choices=["auto", "pre", "post"],
                   help="pre- or post-treatment scans (as for `vlseg segment`)")
    s.add_argument("--force", action="store_true", help="as for `vlseg segment`")
    s.add_argument("--overwrite", action="store_true", help="with --pairs: redo pairs already compared")
    s.add_argument("--no-progress", action="store_true", help="with --pairs: no progress bar")


def scan_source(args: argparse.Namespace, role: str) -> str | dict[str, str]:
    """The folder or {sequence: file} given for ``role`` (one clear error when neither or both)."""
    folder = getattr(args, role, None)
    files = {s: getattr(args, f"{role}_{s}") for s in SEQUENCES if getattr(args, f"{role}_{s}", None)}
    if folder and files:
        raise InputError(f"give either --{role} DIR or --{role}-<sequence> files, not both")
    if not folder and not files:
        raise InputError(f"no {role} scan given: pass --{role} DIR or --{role}-t1c F (and the other sequences)")
    return folder or files


def check_args(args: argparse.Namespace) -> Path:
    from vlseg.segmenter_cli import check_run_options

    return check_run_options(args)


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    out = check_args(args)
    if args.pairs:
        if args.baseline or args.followup or any(getattr(args, f"{r}_{s}", None) for r in ROLES for s in SEQUENCES):
            raise InputError("give either --pairs (a cohort) or --baseline/--followup (one pair), not both")
        from vlseg.cohort.pairs import run as run_pairs

        return run_pairs(args, out)
    if args.overwrite:
        raise InputError("--overwrite goes with --pairs; a single comparison is always rewritten")

    # Both scans read, checked against each other and registered before the model loads
    from vlseg.io import open_case
    from vlseg.segmenter.compare import register_pair

    base = open_case(scan_source(args, "baseline"), force=args.force)
    follow = open_case(scan_source(args, "followup"), force=args.force)
    inputs = {Path(p).resolve() for c in (base, follow) for p in c.sources.values()}
    if any(p.parent == out.resolve() for p in inputs):
        raise InputError("holds input scans; choose another --out", str(out))
    t_reg = time.perf_counter()
    reg = register_pair(base, follow)  # refused here: different sequences or anatomies
    register_s = time.perf_counter() - t_reg

    import torch

    from vlseg.segmenter import Segmenter

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    t1 = time.perf_counter()
    seg = Segmenter.from_pretrained(args.model, device=args.device, confidence=args.confidence,
                                    timepoint=args.timepoint)
    load_s = time.perf_counter() - t1
    comparison = seg.compare(base, follow, registration=reg)
    comparison.doc["timing_s"]["register"] = round(register_s, 3)
    comparison.doc["timing_s"]["model_load"] = round(load_s, 3)
    comparison.doc["timing_s"]["wall"] = round(time.perf_counter() - t0, 3)
    path = comparison.save(out)
    print(comparison.text)
    print(f"wrote {path}, baseline/, followup/ and the registered masks", file=sys.stderr)
    return 0
