"""Two-time-point phantom pairs with a known change: ``vlseg synth --pairs N``.

Pair ``i`` of a run with seed ``S`` is ``PAIR-{S:04d}-{i:05d}``: a baseline (``...-000``, BraTS
2023 layout) and its follow-up (``...-001``): the same head and tumor, changed by a scenario
(``vlseg.synth.followup.SCENARIOS``, in turn), moved rigidly in the scanner and with fresh
contrast. ``truth.json`` holds the change measured on the true label maps by the same rules
``vlseg compare`` applies (``vlseg.reasoning.change``; the follow-up's labels moved onto the
baseline grid through the known motion), so a comparison is scored against the definition it
claims to follow. ``pairs.csv`` lists them in the columns ``vlseg compare --pairs`` reads.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import nibabel as nib
import numpy as np

from vlseg import vocab
from vlseg.fileio import atomic_path, write_bytes_atomic, write_json_atomic
from vlseg.reasoning.calibration import Calibration
from vlseg.reasoning.change import Labelled, compare_labellings
from vlseg.reasoning.registration import resample_to_grid
from vlseg.synth.anatomy import load_template
from vlseg.synth.followup import SCENARIOS, draw_followup
from vlseg.synth.params import DEFAULT_RANGES, SynthRanges
from vlseg.synth.phantom import CASE_KEYS, TIMEPOINT_CONVENTION, _render, _store, case_files
from vlseg.vocab.labels import labels_to_concepts

TRUTH_FILE = "truth.json"
PAIRS_CSV = "pairs.csv"
PAIR_COLUMNS = ("pair_id", "baseline", "followup")


def pair_name(base_seed: int, index: int) -> str:
    return f"PAIR-{base_seed:04d}-{index:05d}"


def pair_truth(base_seg: np.ndarray, base_affine: np.ndarray, follow_seg: np.ndarray,
               follow_affine: np.ndarray, matrix: np.ndarray) -> dict:
    """The true change between two RAS label maps (BraTS 2023 values); ``matrix``: baseline RAS
    mm -> follow-up RAS mm (the known motion)."""
    conv = TIMEPOINT_CONVENTION["pre"]
    bm, fm = labels_to_concepts(base_seg, conv), labels_to_concepts(follow_seg, conv)
    moved = {c: resample_to_grid(m, follow_affine, base_seg.shape, base_affine, matrix, order=0)
             for c, m in fm.items()}
    # Hard truth: probabilities are the masks, intervals are the volumes themselves.
    probs_b = {c: m.astype(np.float32) for c, m in bm.items()}
    probs_f = {c: m.astype(np.float32) for c, m in fm.items()}
    regions = tuple(c.code for c in vocab.concepts() if c.code in bm)
    result = compare_labellings(Labelled(probs_b, bm, base_affine), Labelled(probs_f, fm, follow_affine), moved,
                                calibration=Calibration.identity("truth"), confidence=0.9, regions=regions)
    doc = result.doc
    return {"regions": {c: {k: r[k] for k in ("baseline_ml", "followup_ml", "change_ml", "change_pct")}
                        for c, r in doc["regions"].items()},
            "spd_mm2": {k: doc["spd_mm2"][k] for k in ("baseline", "followup", "change_pct")},
            "new_lesions": doc["new_lesions"], "lesions_new_any": len(doc["lesions"]["new"]),
            "lesions_disappeared": len(doc["lesions"]["disappeared"]),
            "rano_category": doc["rano_category"], "rano_basis": doc["rano_basis"]}


def write_pair(out_dir: str | Path, base_seed: int, index: int, *, spacing_mm: float = 2.0,
               scenario: str | None = None, ranges: SynthRanges = DEFAULT_RANGES) -> Path:
    """Write pair ``index`` (its scenario: ``SCENARIOS[index % 6]`` unless given); returns its
    folder. A complete pair (truth.json present) is skipped; files are written atomically and
    truth.json last."""
    name = pair_name(base_seed, index)
    folder = Path(out_dir) / name
    if (folder / TRUTH_FILE).exists():
        return folder
    scenario = scenario or SCENARIOS[index % len(SCENARIOS)]
    seed = int(np.random.SeedSequence([int(base_seed), int(index), 2]).generate_state(1, np.uint32)[0])
    rng = np.random.default_rng(np.random.SeedSequence([int(base_seed), int(index), 3]))
    tpl = load_template()
    drawn = {}

    def draw(spec):
        drawn["fu"] = draw_followup(rng, scenario, spec, tpl)
        return drawn["fu"]

    b_arr, b_aff, b_info = _render(seed, spacing_mm, ranges, tpl, pair=True)
    f_arr, f_aff, f_info = _render(seed, spacing_mm, ranges, tpl, followup=draw)
    truth = {"pair_id": name, "scenario": scenario, "seed": seed, "spacing_mm": float(spacing_mm),
             "followup": drawn["fu"].describe(),
             **pair_truth(b_arr["seg"], b_aff, f_arr["seg"], f_aff, drawn["fu"].matrix)}
    for suffix, arrays, aff, info in (("000", b_arr, b_aff, b_info), ("001", f_arr, f_aff, f_info)):
        case_id = f"{name}-{suffix}"
        files = case_files(folder / case_id, case_id)
        images = _store(arrays, aff, info["orientation"])
        for k in CASE_KEYS:
            with atomic_path(files[k]) as tmp:
                nib.save(images[k], tmp)
        info["case_id"] = case_id
        write_json_atomic(files["info"], _plain(info))
    write_json_atomic(folder / TRUTH_FILE, _plain(truth))
    return folder


def pair_cases(folder: Path) -> tuple[Path, Path]:
    """(baseline, follow-up) case folders of a written pair."""
    return folder / f"{folder.name}-000", folder / f"{folder.name}-001"


def write_pairs_csv(out_dir: str | Path, folders: list[Path]) -> Path:
    """``pairs.csv`` (pair_id, baseline, followup; absolute paths) for ``vlseg compare --pairs``."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(PAIR_COLUMNS)
    for f in sorted(folders):
        b, fu = pair_cases(f)
        w.writerow([f.name, str(b.resolve()), str(fu.resolve())])
    path = Path(out_dir) / PAIRS_CSV
    write_bytes_atomic(path, buf.getvalue().encode())
    return path


def _plain(obj):
    """JSON-safe copy (numpy scalars and arrays to Python)."""
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else float(o)))


__all__ = ["pair_name", "pair_truth", "write_pair", "pair_cases", "write_pairs_csv", "TRUTH_FILE",
           "PAIRS_CSV", "PAIR_COLUMNS", "SCENARIOS"]
