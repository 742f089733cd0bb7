"""``vlseg segment --cases ...``: a cohort, in one process or split over ``accelerate launch``.

    vlseg segment --cases data/brats/ --query "segment the enhancing tumor" --out runs/et
    accelerate launch --num_processes 2 -m vlseg segment --cases data/brats/ --query ... --out ...
    vlseg segment --dicomweb URL --search "ModalitiesInStudy=MR&StudyDate=2024" --query ... --out ... [--store]

Everything a user can get wrong is checked before the model is loaded (exit 2). Each process
loads the model once and runs every K-th case; the main process then writes
``measurements.csv`` and ``failures.csv`` from the output folder (``tables.py``), the same bytes
one process would write. Exit 0 when every case is answered, 3 when some failed.

The process environment (``WORLD_SIZE``/``RANK`` set by ``accelerate launch``) is read here and
nowhere below.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from vlseg.cohort.cases import CaseRef, find_cases, server_cases, shard
from vlseg.cohort.tables import FAILURES, MEASUREMENTS, weights_id, write_tables
from vlseg.vocab import SEQUENCES
from vlseg.errors import InputError

if TYPE_CHECKING:
    from vlseg.io.dicomweb import Pacs
    from vlseg.language import QueryParser

EXIT_SOME_FAILED = 3
# A rank that finishes its share waits for the slowest one; allow long imbalanced cohorts.
BARRIER_TIMEOUT = datetime.timedelta(hours=48)


@dataclass(frozen=True)
class Processes:
    """This process's place in the run (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    wait: Callable[[], None] = lambda: None  # barrier across processes

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _processes(device: str) -> Processes:
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return Processes()
    from accelerate import PartialState

    state = PartialState(cpu=device == "cpu", timeout=BARRIER_TIMEOUT)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", state.num_processes) or state.num_processes)
    return Processes(rank=state.process_index, world_size=state.num_processes,
                     local_rank=state.local_process_index, local_world_size=local_world,
                     wait=state.wait_for_everyone)


def check_args(args: argparse.Namespace, out: Path) -> tuple[list[CaseRef], "QueryParser", "Pacs | None"]:
    """The cohort's own checks, after the ones it shares with one case
    (``vlseg.segmenter_cli.check_common``, which gave ``out``), all before the model loads
    (exit 2): the cases (a DICOMweb search is run here), an output folder apart from them, and
    a query the parser answers. Returns the cases, that parser (the model gets it, so the query
    is parsed once) and the DICOMweb server the cases are on (None for local cases)."""
    if args.case or any(getattr(args, s, None) for s in SEQUENCES):
        raise InputError("give either --cases (a cohort) or --case/--t1n/--t1c/--t2w/--t2f (one case), not both")
    if getattr(args, "series", None):
        raise InputError("--series goes with --case DIR (one DICOM study); a cohort's series are "
                         "mapped per study")
    pacs = None
    if getattr(args, "search", None):
        from vlseg.pacs_cli import pacs_from_args

        pacs = pacs_from_args(args)
        cases = server_cases(pacs.search_studies(args.search))
    else:
        cases = find_cases(args.cases)
    inputs = {ref.folder.resolve() for ref in cases if ref.folder is not None}
    if out.resolve() in inputs or any(out.resolve() / ref.case_id in inputs for ref in cases):
        raise InputError("would write answers into the input case folders; choose another --out", str(out))
    from vlseg.language import QueryParser

    parser = QueryParser()
    parse = parser.parse(args.query)
    if parse.refused:
        raise InputError(f"the query is refused: {parse.reason}; ask about tumor regions, e.g. "
                         "\"segment the enhancing tumor\"")
    return cases, parser, pacs


def run(args: argparse.Namespace, out: Path) -> int:
    """A cohort run; ``out`` is the output folder ``check_common`` checked."""
    cases, parser, pacs = check_args(args, out)
    store = bool(getattr(args, "store", False)) and pacs is not None
    procs = _processes(args.device)
    threads = args.threads
    if args.device == "cuda" and procs.world_size > 1:
        import torch

        torch.cuda.set_device(procs.local_rank)  # "cuda" below is this rank's GPU
    elif threads is None and procs.local_world_size > 1:
        threads = max(1, (os.cpu_count() or 1) // procs.local_world_size)  # no oversubscription

    from vlseg.cohort.runner import run_cases
    from vlseg.segmenter import Segmenter

    if threads is not None:  # the process's thread count is the CLI's to set
        import torch

        torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    seg = Segmenter.from_pretrained(args.model, device=args.device, confidence=args.confidence,
                                    parser=parser, timepoint=getattr(args, "timepoint", "auto"),
                                    fast=getattr(args, "fast", False))
    load_s = time.perf_counter() - t0

    mine = shard(cases, procs.rank, procs.world_size)
    tag = f"rank {procs.rank}/{procs.world_size}: " if procs.world_size > 1 else ""
    if procs.is_main:
        print(f"vlseg segment: {tag}{len(cases)} case(s), model loaded in {load_s:.1f} s", file=sys.stderr)
    summary = run_cases(seg, mine, query=args.query, out=out, overwrite=args.overwrite,
                        rank=procs.rank, progress=procs.is_main and not args.no_progress,
                        desc=f"{tag}cases", label_convention=getattr(args, "label_convention", None),
                        force=getattr(args, "force", False), pacs=pacs, store=store)
    procs.wait()
    if not procs.is_main:
        return EXIT_SOME_FAILED if summary.failed else 0
    answered, failed = write_tables(out, cases, args.query, weights_id(seg.model_info()),
                                    getattr(seg, "confidence", None), store=store)
    skipped = f", {summary.skipped} already answered" if summary.skipped and procs.world_size == 1 else ""
    stored = " and stored its DICOM-SEG and SR report" if store else ""
    print(f"answered{stored} {answered} of {len(cases)} case(s){skipped}; {failed} failed"
          f"{f' (see {out / FAILURES})' if failed else ''}; wrote {out / MEASUREMENTS}")
    return EXIT_SOME_FAILED if failed else 0
