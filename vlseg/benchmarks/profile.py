"""`vlseg bench --profile`: where every second of a first answer and of a follow-up goes.

On each case of :data:`vlseg.benchmarks.cases.PROFILE_CASES` (realistic cases unlike the
generator's defaults), ``runs`` times: set the case and ask the first question, then each
follow-up, each answer saved like the CLI saves it. The library's stages
(``vlseg.benchmarks.stages.STAGES``: read, reorient, N4, normalisation, resampling, encode, parse,
decode, labelling, atlas, measurement, relations, case facts, intervals, answer text, masks out,
save) are recorded per answer; ``other`` is the rest of the wall time. Reported: medians over
runs per case and stage, first answer and follow-up (a follow-up's figure is the median over
all follow-ups of all runs; its slowest is given too).
"""
from __future__ import annotations

import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

from vlseg.benchmarks.cases import PROFILE_CASES, write_profile_case
from vlseg.benchmarks.stages import STAGES, THREADED, recording

FIRST_QUERY = "segment the enhancing tumor"
FOLLOW_UPS = ("how big is it?", "and the edema?", "where is the necrotic core?",
              "what fraction of the core is necrotic?", "does the tumor cross the midline?")


def _timed(step) -> dict[str, float]:
    """Run ``step()`` inside a recording: ``{stage: s, ..., "other": s, "total": s}``."""
    with recording() as times:
        t0 = time.perf_counter()
        step()
        total = time.perf_counter() - t0
    out = dict(times)
    out["other"] = max(0.0, total - sum(v for k, v in times.items() if not k.endswith(THREADED)))
    out["total"] = total
    return out


def _medians(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = [s for s in (*STAGES, "other", "total", *(s + THREADED for s in STAGES)) if any(s in r for r in rows)]
    return {k: round(statistics.median(r.get(k, 0.0) for r in rows), 4) for k in keys}


def profile_case(seg, case_dir: Path, *, runs: int, out_dir: Path) -> dict:
    """Profile one case: medians per stage of the first answer and of the follow-ups."""
    first, follow = [], []
    for r in range(runs):
        def first_answer() -> None:
            seg.set_case(case_dir)
            seg.ask(FIRST_QUERY).save(out_dir / f"run{r}-first")

        first.append(_timed(first_answer))
        for i, q in enumerate(FOLLOW_UPS):
            follow.append(_timed(lambda: seg.ask(q).save(out_dir / f"run{r}-q{i}")))
    return {
        "first_answer": _medians(first),
        "first_answer_all_s": [round(x["total"], 3) for x in first],
        "follow_up": _medians(follow),
        "follow_up_max_s": round(max(x["total"] for x in follow), 3),
        "follow_up_by_question_s": {q: round(statistics.median(follow[j]["total"] for j in
                                                               range(i, len(follow), len(FOLLOW_UPS))), 3)
                                    for i, q in enumerate(FOLLOW_UPS)},
    }


def run_profile(*, runs: int = 3, model: str | None = None, device: str = "cpu",
                cases: tuple[str, ...] = PROFILE_CASES, work: Path | None = None) -> dict:
    """Profile the Segmenter (with the torch threads the caller set) on the realistic cases."""
    import torch

    from vlseg.segmenter import Segmenter

    with tempfile.TemporaryDirectory(prefix="vlseg-profile-") as tmp:
        work = Path(work or tmp)
        t0 = time.perf_counter()
        seg = Segmenter.from_pretrained(model, device=device)
        load_s = time.perf_counter() - t0
        result: dict = {
            "runs": runs, "device": device, "threads": torch.get_num_threads(),
            "model_load_s": round(load_s, 3), "first_query": FIRST_QUERY, "follow_ups": list(FOLLOW_UPS),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load "
                       f"average {', '.join(f'{x:.1f}' for x in os.getloadavg())} at start",
            "cases": {},
        }
        for name in cases:
            case_dir = write_profile_case(work / "cases", name)
            result["cases"][name] = profile_case(seg, case_dir, runs=runs, out_dir=work / "answers" / name)
        result["load_average_at_end"] = [round(x, 1) for x in os.getloadavg()]
        result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def format_profile(result: dict) -> str:
    """A table: one row per stage, a first-answer and a follow-up column per case."""
    names = list(result["cases"])
    rows = [s for s in (*STAGES, "other", "total", *(s + THREADED for s in STAGES))
            if any(s in result["cases"][n][k] for n in names for k in ("first_answer", "follow_up"))]
    head = f"{'stage (median s)':<20}" + "".join(f"{n[:10]:>11}{'(f-up)':>8}" for n in names)
    lines = [f"vlseg bench --profile: {result['runs']} runs, device {result['device']}, "
             f"{result['threads']} threads; {result['machine']}", head]
    for s in rows:
        cells = "".join(f"{result['cases'][n]['first_answer'].get(s, 0.0):>11.3f}"
                        f"{result['cases'][n]['follow_up'].get(s, 0.0):>8.3f}" for n in names)
        lines.append(f"{s:<20}{cells}")
    lines.append(f"{'f-up slowest':<20}" + "".join(f"{'':>11}{result['cases'][n]['follow_up_max_s']:>8.3f}"
                                                   for n in names))
    lines.append(f"model load {result['model_load_s']} s, peak RSS {result['peak_rss_mb']} MB; "
                 f"'{THREADED.strip()}' rows: seconds summed over worker threads, overlapping the "
                 "'preprocess' wall time")
    return "\n".join(lines)


__all__ = ["FIRST_QUERY", "FOLLOW_UPS", "format_profile", "profile_case", "run_profile"]
