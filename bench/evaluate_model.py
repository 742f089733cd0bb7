"""Accuracy of a checkpoint on held-out cases, through the predictor's own path.

    python bench/evaluate_model.py --model vlseg/weights/default --cases DIR [--out results.json]
    python bench/evaluate_model.py --model runs/finetune_lora/best --cases DIR   # a LoRA fine-tune

``--model`` takes what ``vlseg segment --model`` takes: a bundled name, a checkpoint folder or a
LoRA adapter folder (applied on the base checkpoint it names, whose SHA-256 is checked).

Each case folder is read with ``vlseg.io.load_case``, encoded once per sequence subset (all four;
T1c + FLAIR only), each concept is decoded with its canonical prompt, thresholded and cleaned
exactly as ``Segmenter`` does (``vlseg.reasoning.labelling.final_masks``, with the presence model
beside the weights; ``--timepoint`` also decides pre/post-treatment as ``Segmenter`` does, for a
model that segments the resection cavity), and scored against the case's own
labels with ``vlseg.metrics.case_metrics`` (Dice, HD95, BraTS 2023 lesion-wise). A model with a
refinement stage is scored through it, and its first stage alone from the same encodings (the
``<subset> --fast`` rows; ``--fast`` scores the first stage only). Prints a table of means per
concept and writes per-case + summary JSON.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

SUBSETS = {"all4": ("t1n", "t1c", "t2w", "t2f"), "t1c+t2f": ("t1c", "t2f")}


def _predictor_scores(model, case, threshold: float, timepoint: str, refiner=None):
    """Per subset (name, seconds, case_metrics, the first stage's case_metrics or None) through
    the Predictor with the time point decided as ``Segmenter`` decides it
    (``vlseg.segmenter.timepoint.decide``)."""
    import time

    from vlseg.evaluation import with_sequences
    from vlseg.metrics import case_metrics
    from vlseg.predict import Predictor
    from vlseg.segmenter.timepoint import decide

    predictor = Predictor(model, threshold=threshold, refiner=refiner)
    for name, seqs in SUBSETS.items():
        t0 = time.perf_counter()
        predictor.set_case(with_sequences(case, seqs))
        decide(timepoint, predictor)
        masks = predictor.masks(predictor.concepts)
        seconds = time.perf_counter() - t0
        first = case_metrics(predictor.first_stage_masks(), case.labels, case.spacing) if refiner else None
        yield name, seconds, case_metrics(masks, case.labels, case.spacing), first


def evaluate(model_path: str, cases_dir: Path, *, threshold: float = 0.5, threads: int = 2,
             limit: int | None = None, timepoint: str | None = None, fast: bool = False) -> dict:
    import torch

    from vlseg.evaluation import score_subsets
    from vlseg.io import load_case
    from vlseg.model import describe_source, load_model
    from vlseg.model.loading import load_refiner
    from vlseg.predict import concept_prompts

    torch.set_num_threads(threads)
    model = load_model(model_path)
    refiner = None if fast else load_refiner(model.source)  # the second stage, when the model has one
    concepts = model.config.concepts  # scored where the case's labels have them too
    prompts = None if refiner is not None else concept_prompts(model)  # (3, E)
    folders = sorted(p for p in cases_dir.iterdir() if p.is_dir())[:limit]
    per_case: list[dict] = []
    for folder in folders:
        case = load_case(folder)
        if case.labels is None:
            continue
        # The masks users get: the same labelling as Segmenter and training validation
        scored = (_predictor_scores(model, case, threshold, timepoint, refiner) if timepoint is not None
                  else score_subsets(model, case, SUBSETS, threshold=threshold, prompts=prompts, refiner=refiner))
        for subset_name, seconds, scores, first in scored:
            row = {"case": case.case_id, "subset": subset_name, "seconds": round(seconds, 2), "metrics": scores}
            if first is not None:
                row["first_stage"] = first
            per_case.append(row)
            print(f"{case.case_id} {subset_name}: " + " ".join(
                f"{c} {scores[c]['dice']:.3f}" for c in concepts if c in scores), flush=True)
    summary: dict[str, dict[str, dict[str, float]]] = {}
    # With a refinement stage, "<subset> --fast" is the first stage alone on the same encodings
    stages = [("metrics", "")] + ([("first_stage", " --fast")] if refiner is not None else [])
    for subset_name in SUBSETS:
        for key, suffix in stages:
            rows = [r[key] for r in per_case if r["subset"] == subset_name]
            summary[subset_name + suffix] = {
                c: {k: float(np.mean([r[c][k] for r in rows])) for k in ("dice", "hd95", "lesion_dice", "lesion_hd95")}
                for c in concepts if rows and all(c in r for r in rows)
            }
            summary[subset_name + suffix]["n_cases"] = len(rows)  # type: ignore[assignment]
    return {"model": model_path, "weights": describe_source(model.source), "cases": str(cases_dir),
            "threshold": threshold, "timepoint": timepoint, "refinement": refiner is not None,
            "summary": summary, "per_case": per_case}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="bundled name, checkpoint folder or LoRA adapter folder")
    p.add_argument("--cases", required=True, type=Path, help="folder of labelled case folders")
    p.add_argument("--out", type=Path, default=None, help="write the JSON here")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=None, help="only the first N cases")
    p.add_argument("--timepoint", choices=("auto", "pre", "post"), default=None,
                   help="decide the time point as Segmenter does (auto: the cavity found decides; pre: "
                        "never a cavity); default: every concept decoded, no time point")
    p.add_argument("--fast", action="store_true", help="the first stage alone (the refinement stage not loaded)")
    args = p.parse_args(argv)
    from vlseg.errors import VlsegError

    try:
        result = evaluate(args.model, args.cases, threads=args.threads, limit=args.limit, timepoint=args.timepoint,
                          fast=args.fast)
    except VlsegError as e:
        print(f"evaluate_model: error: {e}", file=sys.stderr)
        return 2
    print(f"\n| sequences | {' | '.join(['NCR', 'ED', 'ET', 'TC', 'WT'])} |")
    print("|---|---|---|---|---|---|")
    for subset, s in result["summary"].items():
        print(f"| {subset} (Dice) | " + " | ".join(f"{s[c]['dice']:.3f}" for c in ("NCR", "ED", "ET", "TC", "WT")) + " |")
        print(f"| {subset} (HD95 mm) | " + " | ".join(f"{s[c]['hd95']:.1f}" for c in ("NCR", "ED", "ET", "TC", "WT")) + " |")
    if args.out:
        from vlseg.fileio import write_json_atomic

        write_json_atomic(args.out, result)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
