"""``vlseg evaluate``: score a folder of predictions against a folder of ground truth.

Cases are matched by id (see :mod:`vlseg.metrics.sources` for the accepted layouts; a
``vlseg segment --cases`` output folder is one: ``OUT/<case>/<CONCEPT>.nii.gz``). A ground truth
case without a prediction is reported and scored as an empty prediction; predictions without
ground truth are reported and ignored. Shows a progress bar, prints a per-concept table and
writes ``metrics.csv`` (one row per case and concept) and ``metrics.json`` (per case + summary)
atomically.

``definition`` picks the rule: ``brats2023`` (the official BraTS 2023 lesion-wise script, the
default) or ``brats2025`` (the official BraTS 2025 evaluation, ``brats-evaluation``/panoptica,
:mod:`vlseg.metrics.panoptic`: global and lesion-wise Dice, NSD and HD95, TP/FP/FN). Spacing is
the ground truth's, and a prediction on another grid is refused: the official 2023 script takes
the spacing from the *prediction's* header, so a prediction saved with a wrong or default (1 mm)
header silently changes every mm figure there.

Regions are vlseg's concepts (NCR, ED, ET, TC, WT, RC); each row also carries ``region``, the
challenge's name in the ground truth's convention (BraTS 2024: NCR -> NETC, ED -> SNFH), which
the table prints. A ground truth named like BraTS 2023 whose labels include 4 (resection
cavity) is read as BraTS 2024 unless ``gt_convention`` is given; predictions are read in the
default convention (brats2023), or in BraTS 2024 when the ground truth is, unless
``pred_convention`` says otherwise. Under ``brats2025`` a
region absent from both masks scores NaN (as the official package), and the summary's
statistics skip NaN (as its pandas report); metrics.json writes NaN and infinity as the strings
"nan" and "inf".
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
from vlseg.metrics.panoptic import HD95_REPORTED_EMPTY
from vlseg.metrics.sources import discover, guess_convention, load_labels, precheck_grids

DILATION_ITERS = 3
MIN_LESION_MM3 = 50.0
CSV_COLUMNS = ("case_id", "concept", "region", "prediction", "dice", "hd95", "nsd", "lesion_dice",
               "lesion_hd95", "lesion_nsd", "n_tp", "n_fn", "n_fp", "rq", "gt_voxels", "pred_voxels",
               "gt_ml", "pred_ml")
SUMMARY_METRICS = ("dice", "hd95", "lesion_dice", "lesion_hd95")
SUMMARY_METRICS_2025 = ("dice", "nsd", "hd95", "lesion_dice", "lesion_nsd", "lesion_hd95")


def _stats(values: list[float]) -> dict[str, float]:
    """mean/sd/median/min/max, NaN skipped (pandas' way); all NaN gives NaN."""
    a = np.asarray(values, dtype=np.float64)
    a = a[~np.isnan(a)]
    if a.size == 0:
        return {k: float("nan") for k in ("mean", "sd", "median", "min", "max")}
    with np.errstate(invalid="ignore"):  # inf - inf in the sd of an infinite HD95
        sd = float(a.std(ddof=1)) if a.size > 1 else 0.0
    return {"mean": float(a.mean()), "sd": sd, "median": float(np.median(a)),
            "min": float(a.min()), "max": float(a.max())}


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per concept: n cases, its region name(s), mean/sd/median/min/max of each metric, and
    lesion counts summed."""
    out: dict[str, dict[str, Any]] = {}
    for concept in vocab.codes():
        sel = [r for r in rows if r["concept"] == concept]
        if not sel:
            continue
        entry: dict[str, Any] = {"n": len(sel), "region": "/".join(sorted({r["region"] for r in sel}))}
        for m in (SUMMARY_METRICS_2025 if "nsd" in sel[0] else SUMMARY_METRICS):
            entry[m] = _stats([r[m] for r in sel])
        for m in ("n_tp", "n_fn", "n_fp"):
            entry[m] = int(sum(r[m] for r in sel))
        out[concept] = entry
    return out


_HEADS = {"dice": "Dice", "nsd": "NSD", "hd95": "HD95 mm", "lesion_dice": "LW Dice",
          "lesion_nsd": "LW NSD", "lesion_hd95": "LW HD95 mm"}


def format_table(summary: Mapping[str, Mapping[str, Any]]) -> str:
    """Plain-text table: region (challenge name, vlseg's concept in brackets where it differs),
    n, mean ± sd of each summary metric."""
    metrics = [m for m in _HEADS if all(m in s for s in summary.values())]
    head = f"{'region':<12}{'n':>5}  " + "  ".join(f"{_HEADS[m]:>15}" for m in metrics)
    lines = [head, "-" * len(head)]
    for concept, s in summary.items():
        region = s.get("region", concept)
        label = concept if region == concept else f"{region} ({concept})"
        cells = [f"{s[m]['mean']:.3f} ± {s[m]['sd']:.3f}" if "hd95" not in m
                 else f"{s[m]['mean']:.2f} ± {s[m]['sd']:.2f}" for m in metrics]
        lines.append(f"{label:<12}{s['n']:>5}  " + "  ".join(f"{c:>15}" for c in cells))
    return "\n".join(lines)


def _json_safe(obj: Any) -> Any:
    """NaN and infinity as the strings "nan" / "inf" (JSON has neither)."""
    if isinstance(obj, float) and not np.isfinite(obj):
        return "nan" if np.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _csv_bytes(rows: list[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue().encode()


def evaluate_folders(pred: str | Path, gt: str | Path, *, pred_convention: str | None = None,
                     gt_convention: str | None = None, definition: str = "brats2023",
                     log: TextIO | None = None, progress: bool = False) -> dict[str, Any]:
    """Score every ground-truth case; return the ``metrics.json`` content (``rows`` included).

    ``gt_convention=None`` takes it from the layout (MSD ``labelsTr/`` -> msd, ``*_seg`` ->
    brats2021, else brats2023, or brats2024 when the labels hold a resection cavity, 4);
    ``pred_convention=None`` reads predictions as brats2023, or brats2024 where the ground
    truth is post-treatment.
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
        truth = load_labels(gsrc, gt_convention or guess_convention(gsrc), option="gt_convention=",
                            detect=gt_convention is None)
        conv = truth.convention or gt_convention or guess_convention(gsrc)
        psrc = pred_sources.get(case_id)
        if psrc is not None:
            p = load_labels(psrc, pred_convention or _pred_convention(conv), option="pred_convention=")
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
            rows.append({"case_id": case_id, "concept": concept, "prediction": status,
                         "region": vocab.convention(conv).region_name(concept), **s,
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
        "settings": {"pred": str(pred), "gt": str(gt), "pred_convention": pred_convention or "auto",
                     "gt_convention": gt_convention or "auto", "definition": definition,
                     "dilation_iters": DILATION_ITERS, "min_lesion_mm3": MIN_LESION_MM3,
                     "hd95": "surface-area weighted (surface-distance method), mm at the GT spacing",
                     "hd95_empty_mm": HD95_EMPTY},
        "versions": _versions(),
        "rows": rows,
    }


def _pred_convention(gt_convention: str) -> str:
    """Predictions' default convention: the ground truth's for post-treatment data (BraTS 2024
    numbers 1-3 as 2023 and adds the cavity), else the default (what vlseg writes)."""
    return gt_convention if vocab.convention(gt_convention).timepoint == "post" else vocab.default_convention()


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
    write_json_atomic(out / "metrics.json", _json_safe(result))

    print(format_table(result["summary"]))
    n = len(result["cases"])
    if definition == "brats2023":
        print(f"\n{n} case(s) scored; HD95 surface-weighted in mm; lesion-wise: BraTS 2023 rule "
              f"(dilation {DILATION_ITERS}, GT lesions <= {MIN_LESION_MM3:g} mm3 ignored, "
              f"missed/spurious = Dice 0, HD95 {HD95_EMPTY:g} mm)")
    else:
        print(f"\n{n} case(s) scored; BraTS 2025 evaluation (as brats-evaluation/panoptica): lesions "
              f"matched one-to-one on Dice, LW = mean over matched lesions (missed/spurious counted "
              f"in n_fn/n_fp), HD95 pooled in mm, NSD at the smallest spacing (global 0.5 mm), "
              f"global HD95 {HD95_REPORTED_EMPTY:g} mm without overlap, NaN where a region is in neither")
    if result["missing_predictions"]:
        print(f"missing predictions, scored as empty: {', '.join(result['missing_predictions'])}")
    if result["unmatched_predictions"]:
        print(f"predictions without ground truth, ignored: {', '.join(result['unmatched_predictions'])}")
    for role, notes in result["skipped"].items():
        if notes:
            print(f"skipped in {role}: {', '.join(notes)}")
    print(f"wrote {out / 'metrics.csv'} and {out / 'metrics.json'}")
    return 0
