"""Specks are not lesions (issue 22): hemisphere and lesion count against the phantoms' truth,
with the tiny-focus rule (``vlseg.reasoning.measure.FOCUS_*``) and without it.

    python bench/specks.py --cases DIR [DIR ...] [--out bench/results/specks.json]

For every case: the predictor's final masks (as the Segmenter measures them), one atlas
registration, then ``measure_target`` for WT (hemisphere) and TC (lesion count, per tumor
core: the phantoms' multifocal cases have 2–3 cores) on the prediction and on the truth labels
with the same registration and the same counting rules. "Without the rule"
(``focus_rule=False``) every counted piece is a lesion, as before issue 22. Multifocal cases
(truth TC count > 1) are reported apart.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/specks.py", description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=Path, nargs="+", required=True, help="folders of labelled cases")
    p.add_argument("--model", default=None, help="bundled name or checkpoint folder (default model)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n", type=int, default=None, help="at most this many cases per folder")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "specks.json")
    args = p.parse_args(argv)

    import torch

    from vlseg.fileio import write_json_atomic
    from vlseg.io import load_case
    from vlseg.model import load_model
    from vlseg.predict import Predictor
    from vlseg.reasoning import measure
    from vlseg.reasoning.atlas import AtlasLocator
    from vlseg.reasoning.grouping import lesion_masks

    torch.set_num_threads(args.threads)
    pred = Predictor(load_model(args.model))
    rows = []
    t0 = time.perf_counter()
    folders = [c for f in args.cases for c in sorted(x for x in f.iterdir() if x.is_dir())[:args.n]]
    for i, folder in enumerate(folders):
        case = load_case(folder)
        pred.set_case(case)
        pred.masks(("WT", "TC"))
        probs, masks = pred.labelling()
        seq = next(s for s in ("t1n", "t1c", "t2w", "t2f") if s in case.images)
        loc = AtlasLocator.fit(case.images[seq], case.affine)
        truth = {c: case.labels[c].astype(bool) for c in ("WT", "TC")}

        def read(c, m, p, *, rule=True):
            return measure.measure_target(c, p, case.affine, locator=loc, mask=m[c], distances=False,
                                          focus_rule=rule, **lesion_masks(c, m))

        t_wt = read("WT", truth, truth["WT"].astype("float32"))
        t_tc = read("TC", truth, truth["TC"].astype("float32"))
        row = {"case": folder.name, "truth": {"hemisphere": t_wt.hemisphere, "n_cores": t_tc.n_lesions}}
        for rule in (True, False):
            wt, tc = read("WT", masks, probs["WT"], rule=rule), read("TC", masks, probs["TC"], rule=rule)
            row["rule" if rule else "no_rule"] = {
                "hemisphere": wt.hemisphere, "n_cores": tc.n_lesions,
                "foci_ml": [round(f.volume_ml, 3) for f in (*wt.foci, *tc.foci)]}
        rows.append(row)
        print(f"{folder.name} ({i + 1}/{len(folders)}, {time.perf_counter() - t0:.0f} s): {row}", flush=True)

    def score(sel, key):
        return {"hemisphere_right": sum(r[key]["hemisphere"] == r["truth"]["hemisphere"] for r in sel),
                "lesion_count_right": sum(r[key]["n_cores"] == r["truth"]["n_cores"] for r in sel),
                "n": len(sel)}

    single = [r for r in rows if r["truth"]["n_cores"] <= 1]
    multi = [r for r in rows if r["truth"]["n_cores"] > 1]
    result = {"cases": [str(c) for c in args.cases], "model": args.model or "default",
              "rule": {"max_ml": measure.FOCUS_MAX_ML, "near_mm": measure.FOCUS_NEAR_MM,
                       "min_mean_p": measure.FOCUS_MIN_MEAN_P},
              "single_tumor": {"rule": score(single, "rule"), "no_rule": score(single, "no_rule")},
              "multifocal": {"rule": score(multi, "rule"), "no_rule": score(multi, "no_rule")},
              "seconds": round(time.perf_counter() - t0, 1), "per_case": rows}
    write_json_atomic(args.out, result)
    for k in ("single_tumor", "multifocal"):
        print(k, json.dumps(result[k]))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
