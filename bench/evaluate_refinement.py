"""The refinement stage against the first stage alone, on one encoding per case and sequence set.

    python bench/evaluate_refinement.py --model vlseg/weights/default \
        --refiner runs/refine_1mm/checkpoints/step_0000100 --cases /work/main/work_data/phantoms_test_1mm --limit 4

``--model`` as ``vlseg segment --model``; ``--refiner`` a folder with refiner.safetensors + refiner.json
(default: the one beside the model). Each case is read with ``vlseg.io.load_case`` and set once on a
``Predictor`` with the refiner; the first stage's masks (``Predictor.first_stage_masks``) and the
refined masks (``Predictor.masks``) are scored with ``vlseg.metrics.case_metrics`` against the
case's labels (Dice, HD95, lesion-wise). Also reports the seconds the refinement added (crop,
resampling, sliding window, back to the input grid) beside the first stage's decode time.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

SUBSETS = {"all4": ("t1n", "t1c", "t2w", "t2f"), "t1c+t2f": ("t1c", "t2f")}
STAGES = ("first", "refined")


def evaluate(model_path: str | None, refiner_path: str | None, cases_dir: Path, *, threads: int = 2,
             limit: int | None = None, subsets: tuple[str, ...] = tuple(SUBSETS)) -> dict:
    import torch

    from vlseg.evaluation import with_sequences
    from vlseg.io import load_case
    from vlseg.metrics import case_metrics
    from vlseg.model import describe_source, load_model
    from vlseg.model.loading import load_refiner
    from vlseg.predict import Predictor

    torch.set_num_threads(threads)
    model = load_model(model_path, refiner=refiner_path)
    refiner = load_refiner(model.source)
    if refiner is None:
        raise SystemExit("evaluate_refinement: the model has no refinement stage; pass --refiner")
    concepts = model.config.concepts
    per_case: list[dict] = []
    for folder in sorted(p for p in cases_dir.iterdir() if p.is_dir())[:limit]:
        case = load_case(folder)
        if case.labels is None:
            continue
        for name in subsets:
            sub = with_sequences(case, SUBSETS[name])
            predictor = Predictor(model, refiner=refiner)
            t0 = time.perf_counter()
            predictor.set_case(sub)
            refined = predictor.masks(concepts)
            total = time.perf_counter() - t0
            result = predictor.refinement()
            row = {"case": case.case_id, "subset": name, "seconds_total": round(total, 2),
                   "refinement": result.to_json() if result is not None else None}
            for stage, masks in (("first", predictor.first_stage_masks()), ("refined", refined)):
                row[stage] = case_metrics({c: masks[c] for c in concepts}, case.labels, case.spacing)
            per_case.append(row)
            print(f"{case.case_id} {name}: refine {row['refinement']['seconds'] if result else 0:.2f}s  " + "  ".join(
                f"{c} {row['first'][c]['dice']:.3f}->{row['refined'][c]['dice']:.3f}"
                for c in concepts if c in row["first"]), flush=True)
    summary: dict = {}
    for name in subsets:
        rows = [r for r in per_case if r["subset"] == name]
        summary[name] = {"n_cases": len(rows), "refine_seconds_mean": float(np.mean(
            [r["refinement"]["seconds"] for r in rows if r["refinement"]])) if rows else None}
        for stage in STAGES:
            summary[name][stage] = {
                c: {k: float(np.mean([r[stage][c][k] for r in rows]))
                    for k in ("dice", "hd95", "lesion_dice", "lesion_hd95")}
                for c in concepts if rows and all(c in r[stage] for r in rows)}
    return {"model": model_path, "weights": describe_source(model.source), "cases": str(cases_dir),
            "summary": summary, "per_case": per_case}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="bundled name, checkpoint folder or LoRA adapter folder")
    p.add_argument("--refiner", default=None, help="folder with refiner.safetensors + refiner.json")
    p.add_argument("--cases", required=True, type=Path, help="folder of labelled case folders")
    p.add_argument("--out", type=Path, default=None, help="write the JSON here")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=None, help="only the first N cases")
    p.add_argument("--subsets", nargs="+", default=list(SUBSETS), choices=list(SUBSETS))
    args = p.parse_args(argv)
    from vlseg.errors import VlsegError

    try:
        result = evaluate(args.model, args.refiner, args.cases, threads=args.threads, limit=args.limit,
                          subsets=tuple(args.subsets))
    except VlsegError as e:
        print(f"evaluate_refinement: error: {e}", file=sys.stderr)
        return 2
    cs = ("ET", "TC", "WT")
    print(f"\n| sequences | stage | {' | '.join(f'{c} Dice' for c in cs)} | {' | '.join(f'{c} HD95' for c in cs)} | ET lesion Dice |")
    print("|---|---|" + "---|" * (2 * len(cs) + 1))
    for subset, s in result["summary"].items():
        for stage in STAGES:
            m = s[stage]
            print(f"| {subset} (n={s['n_cases']}) | {stage} | " + " | ".join(f"{m[c]['dice']:.3f}" for c in cs)
                  + " | " + " | ".join(f"{m[c]['hd95']:.1f}" for c in cs) + f" | {m['ET']['lesion_dice']:.3f} |")
        print(f"| {subset} | refinement s/case | {s['refine_seconds_mean']:.2f} |")
    if args.out:
        from vlseg.fileio import write_json_atomic

        write_json_atomic(args.out, result)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
