"""The smallest tumor core found, with and without the refinement stage (issue 21).

    python bench/small_cores.py [--radii 2 2.5 3 3.5 4 5 6] [--seeds 2] [--out bench/results/small_cores.json]

Single small lesions at 1 mm from the phantom generator (``vlseg.synth``: its "small" layout
with the core radius fixed per row, a ring around a necrotic centre where the radius allows,
little edema; seeds from their own namespace, ``SEED_BASE`` + k, which no training or selection
seed reaches), all four sequences and T1c + FLAIR. Each case is set once on a ``Predictor`` with
the bundled refinement stage: the refined masks are what ``Segmenter`` answers, the first
stage's (``first_stage_masks``) what ``--fast`` answers. A core is *found* when the predicted
tumor core overlaps the true one (and the presence model did not call the tumor absent); the
table gives, per core radius, the true core volume and how many cases each stage found, with
the core Dice (and how many the refined masks found before the presence gate). "Smallest core found" is the smallest true core volume found in every case of
its row and all larger rows.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SEED_BASE = 880_000  # + k: this benchmark's phantoms (training seeds are small integers < 100)
SUBSETS = {"all4": ("t1n", "t1c", "t2w", "t2f"), "t1c+t2f": ("t1c", "t2f")}
STAGES = ("first", "refined")


def _case(radius: float, seed: int, folder: Path):
    """The phantom written in the BraTS layout under ``folder`` and read back as users' cases are."""
    import nibabel as nib

    from vlseg.benchmarks.robustness import small_ring_ranges
    from vlseg.io import load_case
    from vlseg.synth import DEFAULT_RANGES, generate_case_with_info

    imgs, _ = generate_case_with_info(seed, spacing_mm=1.0, ranges=small_ring_ranges(DEFAULT_RANGES, (radius, radius)))
    cid = f"SMALL-r{radius:g}-{seed}"
    out = folder / cid
    out.mkdir(parents=True, exist_ok=True)
    for key, img in imgs.items():
        nib.save(img, out / f"{cid}-{key}.nii.gz")
    return load_case(out)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def run(radii: list[float], seeds: int, threads: int) -> dict:
    import torch

    from vlseg.evaluation import with_sequences
    from vlseg.model import describe_source, load_model
    from vlseg.model.loading import load_refiner
    from vlseg.predict import Predictor
    from vlseg.reasoning.labelling import final_masks

    torch.set_num_threads(threads)
    model = load_model(None)
    refiner = load_refiner(model.source)
    if refiner is None:
        raise SystemExit("small_cores: the bundled model has no refinement stage")
    rows = []
    tmp = tempfile.TemporaryDirectory(prefix="vlseg-small-cores-")
    for radius in radii:
        for k in range(seeds):
            case = _case(radius, SEED_BASE + int(round(radius * 10)) * 100 + k, Path(tmp.name))
            vml = abs(float(np.linalg.det(case.affine[:3, :3]))) / 1000.0
            truth = case.labels["TC"]
            for name, seqs in SUBSETS.items():
                predictor = Predictor(model, refiner=refiner)
                t0 = time.perf_counter()
                predictor.set_case(with_sequences(case, seqs))
                masks = {"refined": predictor.masks(("TC", "WT", "ET"))}
                seconds = time.perf_counter() - t0
                masks["first"] = predictor.first_stage_masks()
                row = {"radius_mm": radius, "case": case.case_id, "subset": name, "tc_true_ml": round(float(truth.sum()) * vml, 4),
                       "et_true_ml": round(float(case.labels["ET"].sum()) * vml, 4), "seconds": round(seconds, 2),
                       "p_wt": predictor.presence().get("WT")}
                for stage in STAGES:
                    tc = masks[stage]["TC"]
                    row[stage] = {"found": bool((tc & truth).any()), "tc_dice": round(_dice(tc, truth), 4),
                                  "tc_ml": round(float(tc.sum()) * vml, 4)}
                # The refined masks before the presence gate (is it the gate or the segmentation?)
                ungated = final_masks(predictor.probabilities(), case.affine)["TC"]
                row["refined"]["found_ungated"] = bool((ungated & truth).any())
                rows.append(row)
                print(f"{case.case_id} {name}: TC {row['tc_true_ml']:.3f} mL  " + "  ".join(
                    f"{s} {'found' if row[s]['found'] else 'missed'} Dice {row[s]['tc_dice']:.3f}" for s in STAGES),
                    flush=True)
    tmp.cleanup()
    summary = {}
    for name in SUBSETS:
        sub = [r for r in rows if r["subset"] == name]
        per_radius = []
        for radius in radii:
            rs = [r for r in sub if r["radius_mm"] == radius]
            per_radius.append({"radius_mm": radius, "tc_true_ml": round(float(np.mean([r["tc_true_ml"] for r in rs])), 4),
                               **{s: {"found": sum(r[s]["found"] for r in rs), "of": len(rs),
                                      "tc_dice": round(float(np.mean([r[s]["tc_dice"] for r in rs])), 4)}
                                  for s in STAGES},
                               "refined_found_before_presence_gate": sum(r["refined"]["found_ungated"] for r in rs)})
        smallest = {}
        for s in STAGES:
            ok = None
            for entry in reversed(per_radius):  # from the largest down, while every case is found
                if entry[s]["found"] < entry[s]["of"]:
                    break
                ok = entry["tc_true_ml"]
            smallest[s] = ok
        summary[name] = {"per_radius": per_radius, "smallest_core_found_ml": smallest}
    return {"benchmark": "vlseg small cores", "command": "python bench/small_cores.py " + " ".join(sys.argv[1:]),
            "weights": describe_source(model.source), "seed_base": SEED_BASE, "summary": summary, "per_case": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/small_cores.py", description=__doc__.splitlines()[0])
    p.add_argument("--radii", type=float, nargs="+", default=[2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0],
                   help="tumor-core radii (mm)")
    p.add_argument("--seeds", type=int, default=2, help="cases per radius")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "small_cores.json")
    args = p.parse_args(argv)
    if args.seeds < 1 or any(not 1.0 <= r <= 15.0 for r in args.radii):
        p.error("--seeds must be >= 1 and every radius between 1 and 15 mm")
    result = run(sorted(args.radii), args.seeds, args.threads)
    from vlseg.fileio import write_json_atomic

    write_json_atomic(args.out, result)
    for name, s in result["summary"].items():
        print(f"\n{name}: smallest core found (every case from there up): "
              + ", ".join(f"{k} {v} mL" for k, v in s["smallest_core_found_ml"].items()))
        print("| core radius mm | true core mL | first stage found | refined found | first TC Dice | refined TC Dice |")
        print("|---|---|---|---|---|---|")
        for e in s["per_radius"]:
            print(f"| {e['radius_mm']:g} | {e['tc_true_ml']:.3f} | {e['first']['found']}/{e['first']['of']} | "
                  f"{e['refined']['found']}/{e['refined']['of']} | {e['first']['tc_dice']:.3f} | {e['refined']['tc_dice']:.3f} |")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
