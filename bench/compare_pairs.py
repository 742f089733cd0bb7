"""Two time points on fresh phantom pairs (issue 23): RANO category, change errors, new lesions,
registration error and the cost of one comparison against one single-scan answer.

    python bench/compare_pairs.py --n 12 --seed 2026 --pairs-dir /tmp/vlseg-pairs \
        --out bench/results/compare_pairs.json

Pairs come from ``vlseg synth --pairs`` (``vlseg.synth.pairs``; scenarios in turn: progression,
new lesion, partial response, complete response, stable, edema only), seeded apart from every
training and test phantom. Per pair, with one loaded model:

* on the first ``--timed`` pairs, one single-scan answer on the baseline (``set_case`` + the
  comparison's own query, what `vlseg segment` runs after the model load), timed;
* ``Segmenter.compare(baseline, followup)`` (registration included), timed;
* scored against ``truth.json`` (the same rules applied to the true label maps): the RANO
  category, |change_pct error| of ET and WT in percentage points, new measurable lesions found,
  and the registration error (mm, at points 60 mm around the brain centre).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _probe_error_mm(found: np.ndarray, truth: np.ndarray) -> float:
    pts = np.array([[x, y, z, 1.0] for x in (-60, 60) for y in (-60, 60) for z in (-30, 50)])
    return float(np.max(np.linalg.norm((pts @ found.T - pts @ truth.T)[:, :3], axis=1)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--pairs-dir", default="/tmp/vlseg-compare-pairs")
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timed", type=int, default=3, help="pairs whose single answer is also timed")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import torch

    from vlseg.segmenter import PAIR_QUERY, Segmenter
    from vlseg.synth.pairs import pair_cases, write_pair

    torch.set_num_threads(args.threads)
    seg = Segmenter.from_pretrained(args.model)
    # Warm-up (imports, first torch and ITK runs), untimed: every timed answer then runs warm,
    # as in a server or a cohort, and the first pair's ratio is not skewed by it.
    warm = write_pair(args.pairs_dir, args.seed + 1, 0)
    seg.compare(*pair_cases(warm))
    rows = []
    for i in range(args.n):
        folder = write_pair(args.pairs_dir, args.seed, i)
        truth = json.loads((folder / "truth.json").read_text())
        b, f = pair_cases(folder)
        single_s = None
        if i < args.timed:  # one single-scan answer on the baseline, as `vlseg segment` gives it
            t0 = time.perf_counter()
            seg.set_case(b)
            seg.ask(PAIR_QUERY)
            single_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        doc = seg.compare(b, f).doc
        compare_s = time.perf_counter() - t1
        row = {"pair": folder.name, "scenario": truth["scenario"],
               "truth_category": truth["rano_category"], "category": doc["rano_category"],
               "basis": doc["rano_basis"],
               "truth_new": truth["new_lesions"], "new": doc["new_lesions"],
               "registration_error_mm": round(_probe_error_mm(
                   np.array(doc["registration"]["baseline_to_followup_ras"]),
                   np.array(truth["followup"]["baseline_to_followup_ras"])), 2),
               "brain_dice": doc["registration"]["residual"]["brain_dice"],
               "single_s": None if single_s is None else round(single_s, 2), "compare_s": round(compare_s, 2),
               "compare_parts_s": doc["timing_s"]}
        for c in ("ET", "WT"):
            t, p = truth["regions"][c]["change_pct"], doc["regions"][c]["change_pct"]
            iv = doc["regions"][c]["change_pct_interval"]
            row[f"{c}_truth_pct"], row[f"{c}_pct"] = t, p
            row[f"{c}_abs_err_pp"] = None if t is None or p is None else round(abs(p - t), 1)
            row[f"{c}_interval"] = iv
            row[f"{c}_covered"] = (None if t is None or iv is None else
                                   bool(iv[0] <= t and (iv[1] is None or t <= iv[1])))
        rows.append(row)
        print(json.dumps(row), flush=True)

    def med(key: str) -> float | None:
        vals = [r[key] for r in rows if r[key] is not None]
        return round(float(np.median(vals)), 1) if vals else None

    with_new = [r for r in rows if r["truth_new"] > 0]
    summary = {
        "pairs": len(rows), "seed": args.seed, "model": seg.model_info().get("name"),
        "checkpoint_sha256": seg.model_info().get("checkpoint_sha256"),
        "rano_category_right": sum(r["category"] == r["truth_category"] for r in rows),
        "median_abs_err_ET_change_pp": med("ET_abs_err_pp"),
        "median_abs_err_WT_change_pp": med("WT_abs_err_pp"),
        "ET_interval_coverage": f"{sum(bool(r['ET_covered']) for r in rows)}/{sum(r['ET_covered'] is not None for r in rows)}",
        "WT_interval_coverage": f"{sum(bool(r['WT_covered']) for r in rows)}/{sum(r['WT_covered'] is not None for r in rows)}",
        "new_lesion_pairs_found": f"{sum(r['new'] >= r['truth_new'] for r in with_new)}/{len(with_new)}",
        "false_new_lesion_pairs": sum(r["new"] > 0 for r in rows if r["truth_new"] == 0),
        "registration_error_mm_max": max(r["registration_error_mm"] for r in rows),
        "median_single_s": med("single_s"), "median_compare_s": med("compare_s"),
        "median_compare_over_single": round(float(np.median([r["compare_s"] / r["single_s"] for r in rows
                                                             if r["single_s"]])), 2),
        "threads": args.threads,
    }
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"summary": summary, "pairs": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
