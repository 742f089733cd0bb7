"""``vlseg compare --pairs FILE.csv``: many baseline/follow-up pairs with one loaded model.

The CSV has the columns ``pair_id, baseline, followup`` (a header row naming them; relative
paths are read from the CSV's folder). Each pair is written to ``OUT/<pair_id>/`` as
``vlseg compare`` writes one; a pair whose ``comparison.json`` is there is skipped (resumable;
``--overwrite`` redoes it); a pair that fails is recorded in ``OUT/failures.csv`` with its one
line and the run goes on (exit 3). ``OUT/changes.csv`` is rebuilt from every comparison.json at
the end: one row per pair. Split over processes like ``segment --cases``:

    accelerate launch --num_processes 2 -m vlseg compare --pairs pairs.csv --out OUT/
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlseg.cohort.cli import EXIT_SOME_FAILED, _processes
from vlseg.cohort.tables import _csv
from vlseg.errors import InputError, VlsegError, one_line
from vlseg.fileio import write_bytes_atomic
from vlseg.memory import release_memory
from vlseg.reasoning.change import default_regions

CHANGES = "changes.csv"
FAILURES = "failures.csv"
COLUMNS = ("pair_id", "baseline", "followup")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class PairRef:
    pair_id: str
    baseline: Path
    followup: Path


def read_pairs(path: str | Path) -> list[PairRef]:
    """The pairs a CSV lists; one clear error for a missing file, header or column, a bad or
    repeated pair id."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError("not found; give a CSV with columns pair_id, baseline, followup", str(path)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot be read as a text CSV ({one_line(e)})", str(path)) from None
    rows = list(csv.DictReader(text.splitlines()))
    header = set(rows[0]) if rows else set()
    missing = [c for c in COLUMNS if c not in header]
    if not rows or missing:
        raise InputError(f"needs a header row with the columns {', '.join(COLUMNS)} and one row per pair"
                         + (f" (missing: {', '.join(missing)})" if rows and missing else ""), str(path))
    pairs, seen = [], set()
    for n, row in enumerate(rows, start=2):
        pid = (row.get("pair_id") or "").strip()
        if not _SAFE_ID.match(pid):
            raise InputError(f"line {n}: pair_id {pid!r} must be a plain name (letters, digits, . _ -)", str(path))
        if pid in seen:
            raise InputError(f"line {n}: pair_id {pid!r} appears twice", str(path))
        seen.add(pid)
        paths = []
        for col in ("baseline", "followup"):
            value = (row.get(col) or "").strip()
            if not value:
                raise InputError(f"line {n}: no {col} path for pair {pid}", str(path))
            p = Path(value).expanduser()
            paths.append(p if p.is_absolute() else path.parent / p)
        pairs.append(PairRef(pid, paths[0], paths[1]))
    return pairs


def change_row(pair_id: str, doc: dict[str, Any]) -> dict[str, Any]:
    """One changes.csv row from a comparison.json."""
    row: dict[str, Any] = {"pair_id": pair_id, "rano_category": doc["rano_category"],
                           "rano_basis": doc["rano_basis"], "new_lesions": doc["new_lesions"],
                           "spd_baseline_mm2": doc["spd_mm2"]["baseline"],
                           "spd_followup_mm2": doc["spd_mm2"]["followup"],
                           "spd_change_pct": doc["spd_mm2"]["change_pct"],
                           "registration_ok": doc["registration"]["ok"],
                           "brain_dice": doc["registration"]["residual"]["brain_dice"]}
    for c, r in doc["regions"].items():
        iv = r.get("change_pct_interval") or [None, None]
        row.update({f"{c}_baseline_ml": r["baseline_ml"], f"{c}_followup_ml": r["followup_ml"],
                    f"{c}_change_pct": r["change_pct"], f"{c}_change_pct_lo": iv[0], f"{c}_change_pct_hi": iv[1]})
    return row


def write_changes(out: Path, pairs: list[PairRef], failures: dict[str, str]) -> tuple[int, int]:
    """changes.csv from every pair's comparison.json, failures.csv from this run's failures."""
    rows = []
    for ref in pairs:
        try:
            rows.append(change_row(ref.pair_id, json.loads((out / ref.pair_id / "comparison.json").read_text())))
        except (OSError, ValueError, KeyError):
            continue
    columns: list[str] = list(dict.fromkeys(k for r in rows for k in r)) or ["pair_id", "rano_category"]
    write_bytes_atomic(out / CHANGES, _csv(columns, rows))
    write_bytes_atomic(out / FAILURES, _csv(("pair_id", "error"),
                                            [{"pair_id": k, "error": v} for k, v in failures.items()]))
    return len(rows), len(failures)


def run(args: argparse.Namespace, out: Path) -> int:
    """A cohort of pairs; ``out`` was checked by the caller."""
    pairs = read_pairs(args.pairs)
    procs = _processes(args.device)
    import torch

    from vlseg.segmenter import Segmenter

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    seg = Segmenter.from_pretrained(args.model, device=args.device, confidence=args.confidence,
                                    timepoint=args.timepoint)
    if procs.is_main:
        print(f"vlseg compare: {len(pairs)} pair(s), model loaded in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
    failures: dict[str, str] = {}
    done = skipped = 0
    for ref in pairs[procs.rank::procs.world_size]:
        folder = out / ref.pair_id
        if (folder / "comparison.json").exists() and not args.overwrite:
            skipped += 1
            continue
        try:
            seg.compare(ref.baseline, ref.followup, force=args.force).save(folder)
            done += 1
        except (VlsegError, OSError, ValueError) as e:
            failures[ref.pair_id] = one_line(e)
            print(f"{ref.pair_id}: {one_line(e)}", file=sys.stderr)
        finally:
            seg.reset()
            release_memory()
    procs.wait()
    if not procs.is_main:
        return EXIT_SOME_FAILED if failures else 0
    n_rows, n_failed = write_changes(out, pairs, failures)
    regions = ", ".join(default_regions())
    print(f"compared {n_rows} of {len(pairs)} pair(s) ({skipped} already done); {n_failed} failed; "
          f"wrote {out / CHANGES} ({regions} change and RANO category per pair)")
    return EXIT_SOME_FAILED if failures else 0
