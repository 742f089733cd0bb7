"""`vlseg segment`: answer one query on a scan, write answer.json and one mask per target."""
from __future__ import annotations

import argparse
import sys
import time

from vlseg.concepts import SEQUENCES
from vlseg.errors import InputError


def run(args: argparse.Namespace) -> int:
    files = {s: getattr(args, s) for s in SEQUENCES if getattr(args, s, None)}
    if args.case and files:
        raise InputError("give either --case DIR or per-sequence files (--t1n/--t1c/--t2w/--t2f), not both")
    if not args.case and not files:
        raise InputError("no scan given: pass --case DIR or at least one of --t1n/--t1c/--t2w/--t2f")
    if not args.query or not args.query.strip():
        raise InputError("--query is empty; ask e.g. \"segment the necrotic core\"")

    from vlseg.segmenter import Segmenter

    t0 = time.perf_counter()
    seg = Segmenter.from_pretrained(args.model, device=args.device, threads=args.threads)
    load_s = time.perf_counter() - t0
    seg.set_case(args.case if args.case else files)
    answer = seg.ask(args.query)
    answer.timing_s["model_load"] = load_s
    answer.timing_s["wall"] = time.perf_counter() - t0
    path = answer.save(args.out)
    print(answer.text)
    print(f"wrote {path} and {len(answer.masks)} mask(s)", file=sys.stderr)
    return 0
