"""Calibration of a checkpoint's probabilities and coverage of its volume / ratio intervals.

    python bench/calibration.py fit      [--model vlseg/weights/default] [--cases DIR] [--n 200] [--seed 1401]
    python bench/calibration.py coverage [--model vlseg/weights/default] [--cases DIR] [--n 120] [--seed 1403]

``fit`` runs the checkpoint over labelled validation phantoms through the predictor's own path
(``prepare``/``decode`` the region chain with canonical prompts, ``final_probabilities`` and
``final_masks`` as ``Segmenter`` does; all four sequences), fits one temperature per concept on
the first ``--temperature-cases`` cases (per-voxel NLL over brain voxels, stratified subsample
with inverse-probability weights), then stores the split-conformal scores of the remaining cases
and writes ``calibration.json`` beside the checkpoint's weights (``--out`` to write elsewhere).

``coverage`` runs the checkpoint over *test* phantoms from another seed and reports, for
Q = 0.8, 0.9, 0.95, how often the calibrated intervals (and, for comparison, the uncalibrated
probability-band ones) hold the true volume / ratio, their median width, and the per-voxel ECE and
NLL before and after temperature scaling. Writes ``bench/results/calibration.json`` and prints a
table.

Phantoms (``vlseg synth --spacing 2``; generated into ``--cases`` when that folder is missing):
seed 1401 for fitting and 1403 for coverage (1402 held the first, smaller coverage run); training
uses seed 1, checkpoint selection seed 2
and MODEL_CARD.md's test set seed 3, so no case here was seen in training or selection.
Everything runs at 2 mm, the model's own spacing, to keep both steps within minutes on a CPU.

``--stage refined`` (a model with a refinement stage) fits and measures the calibration of the
refined outputs instead: 1 mm phantoms (the same seeds, ``--spacing 1``), the refinement stage
run as ``Segmenter`` runs it; ``fit`` adds it to calibration.json under ``"refined"`` (the first
stage's fit is kept), ``coverage`` writes ``bench/results/calibration_refined.json``.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
LEVELS = (0.8, 0.9, 0.95)
FIT_SEED, TEST_SEED = 1401, 1403  # 1402: the first coverage run (80 cases, 80 conformal cases)
SAMPLE_UNCERTAIN, SAMPLE_REST = 20000, 5000  # voxels per case and concept for the NLL fit


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


# ----------------------------------------------------------------------------- cases
def ensure_cases(folder: Path, n: int, seed: int, spacing: float = 2.0) -> list[Path]:
    """The first ``n`` case folders of ``folder``, generating phantoms there if it has fewer."""
    have = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if len(have) < n:
        subprocess.run([sys.executable, "-m", "vlseg", "synth", "--out", str(folder), "--n", str(n),
                        "--seed", str(seed), "--spacing", f"{spacing:g}"], check=True, stdout=subprocess.DEVNULL)
        have = sorted(p for p in folder.iterdir() if p.is_dir())
    return have[:n]


class Runner:
    """The predictor's path for one checkpoint: probabilities and the masks users get."""

    def __init__(self, model_path: str, threads: int, refined: bool = False) -> None:
        import torch

        from vlseg import vocab
        from vlseg.model import load_model
        from vlseg.model.loading import load_refiner
        from vlseg.reasoning.labelling import labelling_sources

        torch.set_num_threads(threads)
        self.model = load_model(model_path)
        self.refiner = load_refiner(self.model.source) if refined else None
        if refined and self.refiner is None:
            raise SystemExit(f"{model_path}: has no refinement stage to calibrate (--stage refined)")
        # The region chain (WT, TC, ET) only: the phantoms are untreated, and a cavity decoded
        # by a model that was never taught one (or ruled out on an untreated scan) would take
        # voxels from the whole tumor (what inflated the first format-2 fit's scores ten-fold)
        self.sources = labelling_sources(vocab.PRE_TREATMENT_CODES)
        self.prompts = self.model.embed_prompts([vocab.concept(c).canonical_prompt for c in self.sources])

    def weights_folder(self) -> Path:
        src = self.model.source
        return Path(src.adapter if src.adapter is not None else src.checkpoint)

    def run(self, folder: Path):
        from vlseg.io import load_case
        from vlseg.model.inference import decode, prepare
        from vlseg.reasoning.labelling import final_masks, final_probabilities

        case = load_case(folder)
        if case.labels is None:
            raise SystemExit(f"{folder}: has no labels")
        if self.refiner is not None:  # through the refinement stage, no presence gate (as the first stage)
            from vlseg.predict import Predictor
            from vlseg.reasoning.presence import Presence

            predictor = Predictor(self.model, refiner=self.refiner, presence=Presence.identity("calibration"))
            predictor.set_case(case)
            predictor.masks(self.sources)
            raw = {c: predictor.probabilities()[c] for c in self.sources}
        else:
            raw = dict(zip(self.sources, decode(self.model, prepare(self.model, case), self.prompts)))
        probs = final_probabilities(raw)  # (X, Y, Z) per concept, derived NCR / ED included
        masks = final_masks(raw, case.affine)
        brain = np.zeros(case.shape, dtype=bool)
        for img in case.images.values():
            brain |= img != 0
        return case, probs, masks, brain


def voxel_sample(p: np.ndarray, y: np.ndarray, brain: np.ndarray, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A stratified per-voxel sample of brain voxels (p, y, weight): the uncertain ones (raw p in
    (0.001, 0.999) or wrong at 0.5) and the rest, each weighted by 1 / its sampling rate, so the
    weighted NLL estimates the mean over all brain voxels."""
    p, y = p[brain], y[brain]
    hard = ((p > 1e-3) & (p < 1 - 1e-3)) | ((p >= 0.5) != y)
    out_p, out_y, out_w = [], [], []
    for sel, k in ((np.flatnonzero(hard), SAMPLE_UNCERTAIN), (np.flatnonzero(~hard), SAMPLE_REST)):
        if sel.size == 0:
            continue
        pick = rng.choice(sel, size=min(k, sel.size), replace=False)
        out_p.append(p[pick]), out_y.append(y[pick])
        out_w.append(np.full(pick.size, sel.size / pick.size))
    return np.concatenate(out_p), np.concatenate(out_y).astype(np.float64), np.concatenate(out_w)


def true_ratio(name: str, labels: dict[str, np.ndarray]) -> float | None:
    from vlseg.reasoning.calibration import fraction_key

    part, whole = fraction_key(name).split("/")
    nw = int(labels[whole].sum())
    return None if nw == 0 else float((labels[part] & labels[whole]).sum()) / nw


def _display(path: str | Path) -> str:
    """A path as written in results: relative to the repository when inside it."""
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(path)


# ----------------------------------------------------------------------------- fit
def fit(args: argparse.Namespace) -> int:
    from vlseg import vocab
    from vlseg.reasoning.calibration import Calibration, fit_temperature, fraction_keys, logit, weights_sha256
    from vlseg.reasoning.measure import voxel_volume_ml

    CONCEPTS, RATIOS = vocab.PRE_TREATMENT_CODES, fraction_keys()  # the phantoms are untreated

    cases = ensure_cases(args.cases, args.n, args.seed, args.spacing)
    k = args.temperature_cases
    if not 1 <= k < len(cases):
        raise SystemExit(f"--temperature-cases must be between 1 and {len(cases) - 1}")
    runner = Runner(args.model, args.threads, refined=args.stage == "refined")
    folder = runner.weights_folder()
    rng = np.random.default_rng(args.seed)
    samples: dict[str, list[tuple[np.ndarray, ...]]] = {c: [] for c in CONCEPTS}
    vol_scores: dict[str, list[float]] = {c: [] for c in CONCEPTS}
    rat_scores: dict[str, list[float]] = {r: [] for r in RATIOS}
    cal = Calibration()
    t0 = time.perf_counter()
    for i, path in enumerate(cases):
        case, probs, masks, brain = runner.run(path)
        if i < k:  # temperature split: per-voxel samples
            for c in CONCEPTS:
                samples[c].append(voxel_sample(probs[c], case.labels[c], brain, rng))
            if i == k - 1:
                temps = {}
                for c in CONCEPTS:
                    p, y, w = (np.concatenate(a) for a in zip(*samples[c]))
                    temps[c] = fit_temperature(logit(p), y, w)
                cal = Calibration(temperatures=temps, calibrated=True)
                print("temperatures: " + ", ".join(f"{c} {t:.3f}" for c, t in temps.items()), flush=True)
        else:  # conformal split: signed scaled residuals
            vml = voxel_volume_ml(case.affine)
            for c in CONCEPTS:
                v_hat, scale = cal.volume_scale(c, probs[c], masks[c], case.affine)
                vol_scores[c].append((float(case.labels[c].sum()) * vml - v_hat) / scale)
            for name in RATIOS:
                rs, rt = cal.ratio_scale(name, probs, masks, case.affine), true_ratio(name, case.labels)
                if rs is not None and rt is not None:
                    rat_scores[name].append((rt - rs[0]) / rs[1])
        print(f"{path.name} ({i + 1}/{len(cases)}, {time.perf_counter() - t0:.0f} s)", flush=True)
    fitted_on = {
        "cases": _display(args.cases),
        "generator": f"vlseg synth --n {args.n} --seed {args.seed} --spacing {args.spacing:g}",
        "seed": args.seed, "spacing_mm": args.spacing, "sequences": "all four", "stage": args.stage,
        "temperature_cases": k, "conformal_cases": len(cases) - k,
        "ratio_cases": {r: len(v) for r, v in rat_scores.items()},
        "voxel_sample": f"per case and concept: {SAMPLE_UNCERTAIN} uncertain + {SAMPLE_REST} other brain voxels, "
                        "inverse-probability weighted",
        "model": _display(args.model),
    }
    cal = cal.with_scores(vol_scores, rat_scores, checkpoint_sha256=weights_sha256(folder), fitted_on=fitted_on)
    if runner.refiner is not None:  # beside the first stage's fit, for the refinement stage's outputs
        from dataclasses import replace

        from vlseg.reasoning.calibration import refiner_weights_sha256

        fitted_on["refiner_sha256"] = refiner_weights_sha256(folder)
        cal = replace(Calibration.load(args.out or folder, strict=True), refined=cal)
    out = cal.save(args.out or folder)
    print(f"wrote {out}; max certified confidence {cal.max_confidence:.3f}", flush=True)
    return 0


# ----------------------------------------------------------------------------- coverage
class _Ece:
    """Pooled 15-bin ECE and NLL over all brain voxels (and over raw 0.01 <= p <= 0.99)."""

    BINS = 15

    def __init__(self) -> None:
        self.sums = {k: np.zeros((3, self.BINS)) for k in ("all", "uncertain")}
        self.nll = np.zeros(2)

    def add(self, p: np.ndarray, y: np.ndarray, uncertain: np.ndarray) -> None:
        p = np.asarray(p, dtype=np.float64)
        pc = np.clip(p, 1e-6, 1 - 1e-6)
        self.nll += (-np.sum(y * np.log(pc) + (1 - y) * np.log1p(-pc)), p.size)
        for key, sel in (("all", slice(None)), ("uncertain", uncertain)):
            q, t = p[sel], y[sel]
            idx = np.minimum((q * self.BINS).astype(np.int64), self.BINS - 1)
            self.sums[key] += np.stack([np.bincount(idx, minlength=self.BINS),
                                        np.bincount(idx, weights=t, minlength=self.BINS),
                                        np.bincount(idx, weights=q, minlength=self.BINS)])

    def result(self) -> dict[str, float]:
        out = {f"ece_{k}": float(np.abs(s[1] - s[2]).sum() / max(s[0].sum(), 1)) for k, s in self.sums.items()}
        out["nll"] = float(self.nll[0] / max(self.nll[1], 1))
        return out


def coverage(args: argparse.Namespace) -> int:
    from vlseg import vocab
    from vlseg.fileio import write_json_atomic
    from vlseg.reasoning.calibration import Calibration, fraction_keys
    from vlseg.reasoning.measure import voxel_volume_ml

    CONCEPTS, RATIOS = vocab.PRE_TREATMENT_CODES, fraction_keys()  # the phantoms are untreated

    cases = ensure_cases(args.cases, args.n, args.seed, args.spacing)
    runner = Runner(args.model, args.threads, refined=args.stage == "refined")
    cal = Calibration.load(args.calibration or runner.weights_folder(), strict=True)
    if runner.refiner is not None:
        if cal.refined is None:
            raise SystemExit("no calibration of the refined outputs for this refiner: run fit --stage refined")
        cal = cal.refined
    fit_seed = cal.fitted_on.get("seed")
    if fit_seed == args.seed:
        raise SystemExit(f"test seed {args.seed} is the seed the calibration was fitted on; use another")
    plain = Calibration.identity("comparison: uncalibrated probability bands")
    names = list(CONCEPTS) + [f"{r}" for r in RATIOS]
    hits = {m: {q: {k: [] for k in names} for q in LEVELS} for m in ("calibrated", "uncalibrated")}
    widths = {m: {q: {k: [] for k in names} for q in LEVELS} for m in ("calibrated", "uncalibrated")}
    rel_widths = {m: {q: {k: [] for k in names} for q in LEVELS} for m in ("calibrated", "uncalibrated")}
    contains = {m: {q: [] for q in LEVELS} for m in ("calibrated", "uncalibrated")}
    ece = {c: (_Ece(), _Ece()) for c in CONCEPTS}
    per_case = []
    t0 = time.perf_counter()
    for i, path in enumerate(cases):
        case, probs, masks, brain = runner.run(path)
        vml = voxel_volume_ml(case.affine)
        rec = {"case": case.case_id, "volume_ml": {}, "ratio": {}}
        for c in CONCEPTS:
            y = case.labels[c][brain].astype(np.float64)
            p = probs[c][brain]
            unc = (p >= 0.01) & (p <= 0.99)
            ece[c][0].add(p, y, unc)
            ece[c][1].add(cal.probabilities(c, p), y, unc)
            truth = float(case.labels[c].sum()) * vml
            v_hat, scale = cal.volume_scale(c, probs[c], masks[c], case.affine)
            rec["volume_ml"][c] = {"true": round(truth, 3), "estimate": round(v_hat, 3),
                                   "score": round((truth - v_hat) / scale, 4)}
            for q in LEVELS:
                for m, cc in (("calibrated", cal), ("uncalibrated", plain)):
                    lo, hi = cc.volume_interval(c, probs[c], masks[c], case.affine, q)
                    hits[m][q][c].append(lo <= truth <= hi)
                    widths[m][q][c].append(hi - lo)
                    contains[m][q].append(lo <= v_hat <= hi)
                    if v_hat > 0:
                        rel_widths[m][q][c].append((hi - lo) / v_hat)
                    rec["volume_ml"][c][f"{m}_{q}"] = [round(lo, 3), round(hi, 3)]
        for name in RATIOS:
            truth = true_ratio(name, case.labels)
            rs = cal.ratio_scale(name, probs, masks, case.affine)
            if rs is not None and truth is not None:
                rec["ratio"][name] = {"true": round(truth, 4), "estimate": round(rs[0], 4),
                                      "score": round((truth - rs[0]) / rs[1], 4)}
            for q in LEVELS:
                for m, cc in (("calibrated", cal), ("uncalibrated", plain)):
                    iv = cc.ratio_interval(name, probs, masks, case.affine, q)
                    if iv is None or truth is None:
                        continue
                    hits[m][q][name].append(iv[0] <= truth <= iv[1])
                    widths[m][q][name].append(iv[1] - iv[0])
                    if rs is not None:
                        contains[m][q].append(iv[0] <= rs[0] <= iv[1])
                        if rs[0] > 0:
                            rel_widths[m][q][name].append((iv[1] - iv[0]) / rs[0])
                    rec["ratio"].setdefault(name, {"true": round(truth, 4)})[f"{m}_{q}"] = \
                        [round(iv[0], 4), round(iv[1], 4)]
        per_case.append(rec)
        print(f"{path.name} ({i + 1}/{len(cases)}, {time.perf_counter() - t0:.0f} s)", flush=True)
        # Written after every case: a run cut short still leaves its figures (n says how many)
        result = _summary(args, runner, cal, cases[:i + 1], names, hits, widths, rel_widths, contains,
                          ece, per_case, t0)
        write_json_atomic(args.out, result)
    print_table(result, names)
    print(f"wrote {args.out}")
    return 0


def _summary(args, runner, cal, cases, names, hits, widths, rel_widths, contains, ece, per_case, t0) -> dict:
    """The coverage figures of the cases run so far."""
    table = {m: {str(q): {k: {"coverage": float(np.mean(h)) if h else None, "n": len(h),
                              "median_width": float(np.median(widths[m][q][k])) if h else None,
                              "median_relative_width": float(np.median(rel_widths[m][q][k]))
                              if rel_widths[m][q][k] else None}
                          for k, h in hits[m][q].items()} for q in LEVELS} for m in hits}
    for m in table:
        for q in LEVELS:
            all_hits = sum((hits[m][q][k] for k in names), [])
            table[m][str(q)]["pooled"] = {"coverage": float(np.mean(all_hits)), "n": len(all_hits),
                                          "estimate_inside": float(np.mean(contains[m][q]))}
    result = {
        "model": _display(args.model), "weights": {"folder": _display(runner.weights_folder()),
                                         "sha256": cal.checkpoint_sha256},
        "calibration": cal.describe(0.9),
        "test_cases": {"folder": _display(args.cases), "n": len(cases), "seed": args.seed, "spacing_mm": args.spacing,
                       "generator": f"vlseg synth --n {args.n} --seed {args.seed} --spacing {args.spacing:g}",
                       "sequences": "all four", "stage": args.stage},
        "levels": list(LEVELS), "target": "coverage within ±0.05 of Q (issue 22), pooled and per concept",
        "coverage": table,
        "ece": {c: {"before": e[0].result(), "after": e[1].result()} for c, e in ece.items()},
        "seconds": round(time.perf_counter() - t0, 1),
        "per_case": per_case,
    }
    return result


def print_table(result: dict, names: list[str]) -> None:
    cov = result["coverage"]
    print(f"\nCoverage on {result['test_cases']['n']} test phantoms (seed {result['test_cases']['seed']}, {result['test_cases']['spacing_mm']:g} mm, {result['test_cases']['stage']} stage): "
          "calibrated (uncalibrated bands); median width (median width / estimate); n")
    print("| target | " + " | ".join(f"Q = {q}" for q in LEVELS) + " |")
    print("|---|" + "---|" * len(LEVELS))
    for k in names + ["pooled"]:
        cells = []
        for q in LEVELS:
            a, b = cov["calibrated"][str(q)][k], cov["uncalibrated"][str(q)][k]
            if a["coverage"] is None:
                cells.append("–")
                continue
            w = f"; {a['median_width']:.3g}" if "median_width" in a else ""
            if a.get("median_relative_width") is not None:
                w += f" ({a['median_relative_width']:.2f}×)"
            cells.append(f"{a['coverage']:.2f} ({b['coverage']:.2f}){w}; n={a['n']}")
        print(f"| {k} | " + " | ".join(cells) + " |")
    print("\nPer-voxel calibration (brain voxels; 'uncertain': raw 0.01 <= p <= 0.99), before -> after")
    print("| concept | T | ECE | ECE uncertain | NLL |")
    print("|---|---|---|---|---|")
    temps = result["calibration"].get("temperatures", {})
    for c, e in result["ece"].items():
        b, a = e["before"], e["after"]
        print(f"| {c} | {temps.get(c, 1.0):.3f} | {b['ece_all']:.4f} -> {a['ece_all']:.4f} | "
              f"{b['ece_uncertain']:.4f} -> {a['ece_uncertain']:.4f} | {b['nll']:.4f} -> {a['nll']:.4f} |")


# ----------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    p = _Parser(prog="bench/calibration.py", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, folder, seed, n in (("fit", "fit", FIT_SEED, 200), ("coverage", "test", TEST_SEED, 120)):
        s = sub.add_parser(name)
        s.add_argument("--model", default=str(REPO / "vlseg" / "weights" / "default"),
                       help="bundled name, checkpoint folder or LoRA adapter folder")
        s.add_argument("--cases", type=Path, default=None,
                       help=f"default: work_data/calibration/{folder}_seed<seed>_<2|1>mm")
        s.add_argument("--stage", choices=("first", "refined"), default="first",
                       help="refined: the refinement stage's outputs, on 1 mm phantoms")
        s.add_argument("--n", type=int, default=n, help="number of phantoms")
        s.add_argument("--seed", type=int, default=seed, help="vlseg synth seed of the phantoms")
        s.add_argument("--threads", type=int, default=1)
    f = sub.choices["fit"]
    f.add_argument("--temperature-cases", type=int, default=20, help="cases for the temperature fit")
    f.add_argument("--out", type=Path, default=None, help="folder for calibration.json (default: the weights')")
    c = sub.choices["coverage"]
    c.add_argument("--calibration", type=Path, default=None,
                   help="folder holding calibration.json (default: the weights')")
    c.add_argument("--out", type=Path, default=None,
                   help="default: bench/results/calibration.json (calibration_refined.json with --stage refined)")
    args = p.parse_args(argv)
    args.spacing = 1.0 if args.stage == "refined" else 2.0
    if args.cases is None:
        args.cases = REPO / "work_data" / "calibration" / f"{args.cmd if args.cmd == 'fit' else 'test'}_seed{args.seed}_{args.spacing:g}mm"
    if args.cmd == "coverage" and args.out is None:
        args.out = REPO / "bench" / "results" / ("calibration_refined.json" if args.stage == "refined" else "calibration.json")
    if args.n < 2:
        p.error("--n must be at least 2")
    from vlseg.errors import VlsegError

    try:
        return fit(args) if args.cmd == "fit" else coverage(args)
    except VlsegError as e:
        print(f"calibration: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
