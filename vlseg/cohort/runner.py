"""Answer one query on many cases with one loaded model: the loop each process runs.

Per case: skip it if its answer is already there for this query and these weights (unless
``overwrite``); else read -> encode -> ask (decode, measure) -> save, each stage timed. A study on
a DICOMweb server (``pacs``) is retrieved into a private temporary folder for its turn (removed
after); with ``store`` its DICOM-SEG and SR report go back to the server, and a case answered
but not yet stored (the server failed last time) is only stored on the next run. A case
that fails is recorded with its one-line error and the loop goes on. Between cases the
predictor forgets the case and freed memory is handed back to the OS, so a long cohort runs in
flat memory.
"""
from __future__ import annotations

import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, TextIO

from vlseg.cohort.cases import CaseRef
from vlseg.cohort.tables import (
    ANSWER_FILE,
    append_log,
    clear_failure,
    is_done,
    is_stored,
    read_answer,
    record_failure,
    record_stored,
    weights_id,
)
from vlseg.errors import one_line
from vlseg.io import open_case
from vlseg.memory import release_memory
from vlseg.segmenter import Segmenter

if TYPE_CHECKING:
    from vlseg.io.dicomweb import Pacs

STAGES = ("read", "encode", "decode", "measure", "write")


@dataclass
class RunSummary:
    """What one process did: counts and per-stage seconds summed over the cases it ran."""

    answered: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (case_id, one-line error)
    stage_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    wall_s: float = 0.0


@contextmanager
def _source(ref: CaseRef, pacs: Pacs | None) -> Iterator[Path]:
    """The case's folder: its own, or a server's study retrieved into a temporary folder that
    lives until the answer (whose DICOM-SEG reads the source files) is saved."""
    if ref.study_uid is None:
        assert ref.folder is not None
        yield ref.folder
        return
    if pacs is None:
        raise ValueError(f"case {ref.case_id} is a study on a DICOMweb server; no server given")
    with tempfile.TemporaryDirectory(prefix="vlseg-dicomweb-") as tmp:
        yield pacs.retrieve_study(ref.study_uid, Path(tmp) / "study")


def _store(pacs: Pacs, out: Path, case_id: str) -> None:
    from vlseg.pacs_cli import store_answer

    record_stored(out, case_id, store_answer(pacs, out / case_id / ANSWER_FILE))


def answer_case(seg: Segmenter, ref: CaseRef, query: str, out: Path, *,
                label_convention: str | None = None, force: bool = False,
                pacs: Pacs | None = None, store: bool = False) -> dict[str, float]:
    """Read, encode, ask and save one case (with a ``labels.nii.gz`` in ``label_convention``
    when given); returns the stage times (raises on failure). ``force``: answer foreign-looking
    images too (``open_case``), with a warning. ``pacs``: the server a study is retrieved from
    (and, with ``store``, its DICOM-SEG and SR report sent back to)."""
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    with _source(ref, pacs) as folder:
        case = open_case(folder, force=force)
        t1 = time.perf_counter()
        seg.set_case(case)  # validate + encode the image once
        t2 = time.perf_counter()
        answer = seg.ask(query)
        t3 = time.perf_counter()
        times.update(read=t1 - t0, encode=t2 - t1)
        times["decode"] = answer.timing_s.get("parse", 0.0) + answer.timing_s.get("decode", 0.0)
        times["measure"] = (t3 - t2) - times["decode"]  # measure + compose
        answer.timing_s.update(read=times["read"], encode=times["encode"])
        answer.save(out / ref.case_id, label_convention=label_convention)
    if store and pacs is not None:
        _store(pacs, out, ref.case_id)
    times["write"] = time.perf_counter() - t3
    return times


def run_cases(seg: Segmenter, cases: list[CaseRef], *, query: str, out: Path, overwrite: bool = False,
              rank: int = 0, progress: bool = True, stream: TextIO | None = None,
              desc: str = "cases", label_convention: str | None = None, force: bool = False,
              pacs: Pacs | None = None, store: bool = False,
              after_case: Callable[[CaseRef, dict[str, Any]], None] | None = None) -> RunSummary:
    """Run ``cases`` (this process's share) and return what happened; never raises for a case.

    ``after_case(ref, record)`` is called after each case that ran (record: status, error or
    stage times), once its memory has been released (benchmarks and tests look there).
    ``force``, ``pacs``, ``store``: as for :func:`answer_case`.
    """
    from tqdm import tqdm

    stream = stream if stream is not None else sys.stderr
    weights = weights_id(seg.model_info())
    summary = RunSummary()
    start = time.perf_counter()
    bar = tqdm(total=len(cases), desc=desc, unit="case", file=stream, disable=not progress,
               dynamic_ncols=True, smoothing=0.1)
    try:
        confidence = getattr(seg, "confidence", None)
        for ref in cases:
            answered = not overwrite and is_done(read_answer(out, ref.case_id), query, weights, confidence)
            if answered and (not store or is_stored(out, ref.case_id)):
                summary.skipped += 1
                bar.update(1)
                continue
            record: dict[str, Any] = {"case": ref.case_id, "rank": rank}
            try:
                if answered:  # answered before, not yet stored: store only
                    assert pacs is not None
                    t0 = time.perf_counter()
                    _store(pacs, out, ref.case_id)
                    times = {"write": time.perf_counter() - t0}
                else:
                    times = answer_case(seg, ref, query, out, label_convention=label_convention,
                                        force=force, pacs=pacs, store=store)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as e:  # noqa: BLE001 - one bad case never stops the cohort
                error = one_line(e, typed=True, limit=None)  # the single-case CLI's line
                record_failure(out, ref.case_id, error, query=query)
                summary.failed.append((ref.case_id, error))
                record.update(status="failed", error=error)
                bar.write(f"vlseg segment: {ref.case_id}: error: {error}", file=stream)
            else:
                clear_failure(out, ref.case_id)
                summary.answered += 1
                for k, v in times.items():
                    summary.stage_s[k] += v
                record.update(status="answered", **{f"{k}_s": round(v, 4) for k, v in times.items()})
            finally:
                seg.reset()
                release_memory()
            append_log(out, rank, record)
            if after_case is not None:
                after_case(ref, record)
            bar.set_postfix(failed=len(summary.failed), refresh=False)
            bar.update(1)
    finally:
        bar.close()
        summary.wall_s = time.perf_counter() - start
    return summary
