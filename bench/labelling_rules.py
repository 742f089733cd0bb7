"""Compare the two core-evidence rules of the labelling on the robustness test set.

    python bench/labelling_rules.py [--model M] [--first-case K] [--cases-per-family N]
                                    [--families clean combined ...] [--threads T] [--out FILE]
                                    [--cache DIR] [--spacing MM]

The core-less rule drops a whole-tumor piece that holds no tumor core
(``vlseg.reasoning.labelling``). What counts as "holds a core" is ``core_evidence``: the cleaned
core mask (``cleaned``, what ``Segmenter`` uses) or also uncleaned core voxels (``raw``). Each
case and sequence subset of the robustness test set (``bench/robustness.py``, same cache) is
decoded once and labelled both ways; prints mean Dice WT / TC / ET per condition for both rules
and the cases where they differ, and writes the per-case rows as JSON to ``--out``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RULES = ("cleaned", "raw")
SHOWN = ("WT", "TC", "ET")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from vlseg.benchmarks.robustness import FAMILIES

    p = argparse.ArgumentParser(prog="bench/labelling_rules.py", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="checkpoint folder or bundled name (default: the bundled default)")
    p.add_argument("--first-case", type=int, default=0, metavar="K")
    p.add_argument("--cases-per-family", type=int, default=12, metavar="N")
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES, metavar="FAMILY")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache", type=Path, default=REPO / "work_data" / "robustness")
    p.add_argument("--spacing", type=float, default=1.0, help="phantom voxel size in mm (as bench/robustness.py)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "labelling_rules.json")
    args = p.parse_args(argv)
    if args.cases_per_family < 1 or args.first_case < 0 or args.threads < 1:
        p.error("--cases-per-family and --threads must be at least 1, --first-case at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)  # this script is the entry point: it decides

    import vlseg
    from vlseg.benchmarks import robustness as rb
    from vlseg.evaluation import with_sequences
    from vlseg.fileio import write_json_atomic
    from vlseg.io import load_case
    from vlseg.metrics import case_metrics
    from vlseg.predict import concept_prompts, predict_probabilities
    from vlseg.reasoning.labelling import final_masks

    testset = rb.build_testset(args.cache, cases_per_family=args.cases_per_family, families=args.families,
                               spacing_mm=args.spacing, first_case=args.first_case, log=lambda m: print(m, file=sys.stderr))
    seg = vlseg.Segmenter.from_pretrained(args.model)
    prompts = concept_prompts(seg.model)
    rows = []
    for family, folders in testset.items():
        subsets = [s for _, s in rb.conditions([family])]
        for folder in folders:
            case = load_case(folder)
            for subset in subsets:
                probs = predict_probabilities(seg.model, with_sequences(case, rb.SUBSETS[subset]),
                                              prompts=prompts, device=seg.device)
                row = {"family": family, "subset": subset, "case": case.case_id}
                for rule in RULES:
                    masks = final_masks(probs, case.affine, threshold=seg.threshold, core_evidence=rule)
                    m = case_metrics(masks, case.labels, case.spacing, include_lesion_wise=False)
                    row[rule] = {c: round(float(m[c]["dice"]), 4) for c in SHOWN}
                rows.append(row)
                if row["cleaned"] != row["raw"]:
                    print(f"{case.case_id} {subset}: " + " | ".join(
                        f"{r} " + " ".join(f"{c} {row[r][c]:.3f}" for c in SHOWN) for r in RULES))
    print(f"\ncondition: mean Dice {' / '.join(SHOWN)}, " + " vs ".join(RULES))
    for family, subset in rb.conditions(args.families):
        sel = [r for r in rows if r["family"] == family and r["subset"] == subset]
        means = [" / ".join(f"{np.mean([r[rule][c] for r in sel]):.3f}" for c in SHOWN) for rule in RULES]
        print(f"{rb.condition_name(family, subset)}: " + "  vs  ".join(means))
    write_json_atomic(args.out, {"model": seg.model_info(), "command": "python bench/labelling_rules.py "
                                 + " ".join(sys.argv[1:]), "rows": rows})
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
