"""``vlseg evaluate``: score a folder of predictions against a folder of ground truth.

Cases are matched by id (see :mod:`vlseg.metrics.sources` for the accepted layouts; a
``vlseg segment --cases`` output folder is one: ``OUT/<case>/<CONCEPT>.nii.gz``). A ground truth
case without a prediction is reported and scored as an empty prediction; predictions without
ground truth are reported and ignored. Shows a progress bar, prints a per-concept table and
writes ``metrics.csv`` (one row per case and concept) and ``metrics.json`` (per case + summary)
atomically.

``definition`` picks the lesion-wise rule (:mod:`vlseg.metrics.lesionwise`): ``brats2023`` (the
official BraTS 2023 rule, the default) or ``brats2025`` (one-to-one matching). Case-wise Dice
and HD95 are the same under both. Spacing is the ground truth's, and a prediction on another
grid is refused: the official script takes the spacing from the *prediction's* header, so a
prediction saved with a wrong or default (1 mm) header silently changes every mm figure there.
"""
from __future__ import annotations

import argparse
import csv
import io
import platform
import sys
from pathlib import Path
from typing import Any, Mapping, TextIO

import numpy as np

from vlseg import vocab
from vlseg.errors import InputError
from vlseg.fileio import write_bytes_atomic, write_json_atomic
from vlseg.metrics.casewise import case_metrics
from vlseg.metrics.overlap import HD95_EMPTY
from vlseg.metrics.sources import discover, guess_convention, load_labels, precheck_grids

DILATION_ITERS = 3
MIN_LESION_MM3 = 50.0
CSV_COLUMNS = ("case_id", "concept", "prediction", "dice", "hd95", "lesion_dice", "lesion_hd95",
               "n_tp", "n_fn", "n_fp", "pq", "gt_voxels", "pred_voxels", "gt_ml", "pred_ml")
SUMMARY_METRICS = ("dice", "hd95", "lesion_dice", "lesion_hd95")


def _stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "sd": float(a.std(ddof=1)) if a.size > 1 else 0.0,
            "median": float(np.median(a)), "min": float(a.min()), "max": float(a.max())}


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per concept: n cases, mean/sd/median/min/max of each metric, and lesion counts summed."""
    out: dict[str, dict[str, Any]] = {}
    for concept in vocab.codes():
        sel = [r for r in rows if r["concept"] == concept]
        if not sel:
            continue
        entry: dict[str, Any] = {"n": len(sel)}
        for m in SUMMARY_METRICS:
            entry[m] = _stats([r[m] for r in sel])
        for m in ("n_tp", "n_fn", "n_fp"):
            entry[m] = int(sum(r[m] for r in sel))
        out[concept] = entry
    return out


def format_table(summary: Mapping[str, Mapping[str, Any]]) -> str:
    """Plain-text table: concept, n, mean ± sd of Dice, HD95, lesion-wise Dice and HD95."""
    head = f"{'concept':<8}{'n':>5}  {'Dice':>15}  {'HD95 mm':>15}  {'LW Dice':>15}  {'LW HD95 mm':>15}"
    lines = [head, "-" * len(head)]
    for concept, s in summary.items():
        cells = [f"{s[m]['mean']:.3f} ± {s[m]['sd']:.3f}" if "dice" in m
                 else f"{s[m]['mean']:.2f} ± {s[m]['sd']:.2f}" for m in SUMMARY_METRICS]
        lines.append(f"{concept:<8}{s['n']:>5}  " + "  ".join(f"{c:>15}" for c in cells))
    return "\n".join(lines)


def _csv_bytes(rows: list[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue().encode()


def evaluate_folders(pred: str | Path, gt: str | Path, *, pred_convention: str = "brats2023",
                     gt_convention: str | None = None, definition: str = "brats2023",
                     log: TextIO | None = None, progress: bool = False) -> dict[str, Any]:
    """Score every ground-truth case; return the ``metrics.json`` content (``rows`` included).

    ``gt_convention=None`` takes it from the layout (MSD ``labelsTr/`` -> msd, ``*_seg`` ->
    brats2021, else brats2023).
    """
    gt_sources, gt_skipped = discover(gt, "ground truth")
    pred_is_file, gt_is_file = Path(pred).is_file(), Path(gt).is_file()
    pred_sources, pred_skipped = discover(pred, "prediction")
    if pred_is_file and gt_is_file:  # two single files: compare them whatever their names
        (src,) = pred_sources.values()
        pred_sources = {next(iter(gt_sources)): src}
    matched = sorted(set(gt_sources) & set(pred_sources))
    if not matched:
        raise InputError(
            f"no prediction matches a ground-truth case by id (ground truth: "
            f"{', '.join(sorted(gt_sources)[:3])}...; predictions: {', '.join(sorted(pred_sources)[:3])}...); "
            "name predictions <case>.nii.gz, <case>-seg.nii.gz or <case>/", str(pred))
    missing = sorted(set(gt_sources) - set(pred_sources))
    unmatched = sorted(set(pred_sources) - set(gt_sources))
    precheck_grids([(gt_sources[c], pred_sources[c]) for c in matched])

    from tqdm import tqdm

    rows: list[dict[str, Any]] = []
    cases: dict[str, Any] = {}
    for case_id in tqdm(sorted(gt_sources), desc="evaluate", unit="case", disable=not progress,
                        file=sys.stderr, dynamic_ncols=True, leave=False):
        gsrc = gt_sources[case_id]
        conv = gt_convention or guess_convention(gsrc)
        truth = load_labels(gsrc, conv, option="gt_convention=")
        psrc = pred_sources.get(case_id)
        if psrc is not None:
            p = load_labels(psrc, pred_convention, option="pred_convention=")
            problem = truth.grid.mismatch(p.grid)
            if problem is not None:
                raise InputError(f"grid differs from the ground truth {truth.path.name}: {problem}; "
                                 "write predictions on the ground truth's grid", str(p.path))
            pred_masks = p.masks
        else:
            pred_masks = {c: np.zeros(truth.grid.shape, bool) for c in truth.masks}
        spacing = truth.grid.spacing
        voxel_ml = float(np.prod(spacing)) / 1000.0
        scores = case_metrics(pred_masks, truth.masks, spacing, definition=definition,
                              dilation_iters=DILATION_ITERS, min_volume_mm3=MIN_LESION_MM3)
        status = "found" if psrc is not None else "missing"
        cases[case_id] = {"prediction": psrc.where if psrc else None, "ground_truth": gsrc.where,
                          "gt_convention": conv, "spacing_mm": list(spacing), "concepts": scores}
        for concept, s in scores.items():
            rows.append({"case_id": case_id, "concept": concept, "prediction": status, **s,
                         "gt_ml": s["gt_voxels"] * voxel_ml, "pred_ml": s["pred_voxels"] * voxel_ml})
        if log is not None:  # progress on stdout; stderr stays for the one-line error
            brief = "  ".join(f"{c} {s['dice']:.3f}" for c, s in scores.items())
            print(f"{case_id}: Dice {brief}" + ("  (no prediction)" if psrc is None else ""), file=log)

    return {
        "summary": summarize(rows),
        "cases": cases,
        "missing_predictions": missing,
        "unmatched_predictions": unmatched,
        "skipped": {"ground_truth": gt_skipped, "prediction": pred_skipped},
        "settings": {"pred": str(pred), "gt": str(gt), "pred_convention": pred_convention,
                     "gt_convention": gt_convention or "auto", "definition": definition,
                     "dilation_iters": DILATION_ITERS, "min_lesion_mm3": MIN_LESION_MM3,
                     "hd95": "surface-area weighted (surface-distance method), mm at the GT spacing",
                     "hd95_empty_mm": HD95_EMPTY},
        "versions": _versions(),
        "rows": rows,
    }


def _versions() -> dict[str, str]:
    import scipy

    from vlseg import __version__ as vlseg_version

    return {"vlseg": str(vlseg_version), "numpy": np.__version__, "scipy": scipy.__version__,
            "python": platform.python_version()}


def run_cli(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else (Path(args.pred) if Path(args.pred).is_dir() else Path(args.pred).parent)
    if out.exists() and not out.is_dir():
        raise InputError("--out must be a folder (metrics.csv and metrics.json are written there)", str(out))
    definition = getattr(args, "definition", "brats2023")
    result = evaluate_folders(args.pred, args.gt, pred_convention=args.pred_convention,
                              gt_convention=args.gt_convention, definition=definition,
                              progress=not getattr(args, "no_progress", False))
    rows = result.pop("rows")
    write_bytes_atomic(out / "metrics.csv", _csv_bytes(rows))
    write_json_atomic(out / "metrics.json", result)

    print(format_table(result["summary"]))
    n = len(result["cases"])
    rule = (f"BraTS 2023 rule (dilation {DILATION_ITERS}, GT lesions <= {MIN_LESION_MM3:g} mm3 ignored"
            if definition == "brats2023" else "BraTS 2025 rule (one-to-one, IoU >= 0.5")
    print(f"\n{n} case(s) scored; HD95 surface-weighted in mm; lesion-wise: {rule}, "
          f"missed/spurious = Dice 0, HD95 {HD95_EMPTY:g} mm)")
    if result["missing_predictions"]:
        print(f"missing predictions, scored as empty: {', '.join(result['missing_predictions'])}")
    if result["unmatched_predictions"]:
        print(f"predictions without ground truth, ignored: {', '.join(result['unmatched_predictions'])}")
    for role, notes in result["skipped"].items():
        if notes:
            print(f"skipped in {role}: {', '.join(notes)}")
    print(f"wrote {out / 'metrics.csv'} and {out / 'metrics.json'}")
    return 0
