"""Expected figures of the official BraTS 2025 evaluation on small synthetic pairs.

Writes ``tests/data/brats2025_official.json``: for every pair the two label maps (BraTS 2024
labels: 1 NETC, 2 SNFH, 3 ET, 4 RC; zlib + base64, x-y-z order), the voxel spacing, and the
figures the official package (PyPI ``brats-evaluation`` 0.0.10 on ``panoptica``, glioma config
``gli``) gives for each region: TP/FP/FN, lesion-wise Dice/NSD/HD95 (``sq_*``) and global
Dice/NSD/HD95 (``global_bin_*``). ``tests/test_metrics_brats2025.py`` checks that
``vlseg.metrics`` reproduces them.

The official package needs NumPy < 2.3, so it lives in its own virtualenv, never in vlseg's:

    python3 -m venv /work/brats-eval-venv
    /work/brats-eval-venv/bin/pip install brats-evaluation==0.0.10
    /work/brats-eval-venv/bin/python bench/brats_official_figures.py

The script itself needs only NumPy and nibabel, and imports nothing from vlseg. Each pair is
scored twice: through NIfTI files, the way ``brats-evaluation``'s ``evaluate_single_exam`` reads a
case (``"files"``), and from arrays with the spacing passed in x-y-z order (``"arrays"``). They
differ only on anisotropic pairs: reading a file, panoptica takes the array from SimpleITK
(z-y-x order) but the spacing in x-y-z order, so the spacing lands on the wrong axes.
"""
from __future__ import annotations

import argparse
import base64
import json
import math
import tempfile
import zlib
from pathlib import Path

import numpy as np

SHAPE = (24, 22, 14)                     # (X, Y, Z)
REGIONS = ("netc", "snfh", "et", "rc", "tc", "wt")
OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "brats2025_official.json"


def _ball(shape, centre, radii) -> np.ndarray:
    """Voxels of the ellipsoid with ``centre`` and ``radii`` (voxels), in an array of ``shape``."""
    grid = np.indices(shape, dtype=np.float64)
    d = sum(((grid[i] - centre[i]) / radii[i]) ** 2 for i in range(3))
    return d <= 1.0


def _box(shape, lo, hi) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    return m


def _tumour(shape, centre, r_wt, r_tc, r_ncr) -> np.ndarray:
    """A glioma-like label map: SNFH shell, ET shell, NETC core."""
    lab = np.zeros(shape, np.uint8)
    lab[_ball(shape, centre, r_wt)] = 2
    lab[_ball(shape, centre, r_tc)] = 3
    lab[_ball(shape, centre, r_ncr)] = 1
    return lab


def make_pairs() -> dict[str, tuple[np.ndarray, np.ndarray, tuple[float, float, float]]]:
    """name -> (prediction, ground truth, spacing in mm); label maps (X, Y, Z) uint8."""
    s = SHAPE
    pairs = {}
    gt = _tumour(s, (11, 10, 7), (7, 6, 5), (4, 4, 3), (2, 2, 1.5))
    pred = _tumour(s, (12, 10, 7), (7, 7, 4.5), (4.5, 3.5, 3), (2, 1.5, 1.5))
    pairs["shifted"] = (pred, gt, (1.0, 1.0, 1.0))

    # One GT ET lesion, predicted as two pieces (split): one TP, one FP.
    gt = np.zeros(s, np.uint8)
    gt[_box(s, (4, 4, 3), (16, 10, 9))] = 3
    pred = np.zeros(s, np.uint8)
    pred[_box(s, (4, 4, 3), (9, 10, 9))] = 3
    pred[_box(s, (11, 4, 3), (17, 11, 9))] = 3
    pairs["split"] = (pred, gt, (1.0, 1.0, 1.0))

    # Two GT lesions, predicted as one bridging blob (merged): one TP, one FN.
    gt = np.zeros(s, np.uint8)
    gt[_box(s, (3, 4, 3), (9, 10, 9))] = 3
    gt[_box(s, (12, 4, 3), (19, 10, 9))] = 3
    pred = np.zeros(s, np.uint8)
    pred[_box(s, (4, 5, 3), (18, 10, 8))] = 3
    pairs["merged"] = (pred, gt, (1.0, 1.0, 1.0))

    # A lesion missed, a spurious one, a resection cavity; SNFH around the first lesion.
    gt = np.zeros(s, np.uint8)
    gt[_ball(s, (6, 6, 6), (4, 4, 3))] = 2
    gt[_ball(s, (6, 6, 6), (2, 2, 2))] = 3
    gt[_ball(s, (18, 16, 8), (2, 2, 2))] = 3            # missed
    gt[_box(s, (14, 3, 2), (21, 8, 6))] = 4             # cavity
    pred = np.zeros(s, np.uint8)
    pred[_ball(s, (6, 7, 6), (4, 3, 3))] = 2
    pred[_ball(s, (6, 7, 6), (2, 2, 1.5))] = 3
    pred[_box(s, (2, 17, 10), (5, 20, 13))] = 3         # spurious
    pred[_box(s, (15, 3, 2), (21, 9, 5))] = 4
    pairs["missed_spurious"] = (pred, gt, (1.0, 1.0, 1.0))

    # Empty cases: GT without tumour (prediction has some), and a prediction without anything.
    gt = np.zeros(s, np.uint8)
    pred = np.zeros(s, np.uint8)
    pred[_ball(s, (10, 10, 7), (3, 3, 2))] = 2
    pred[_box(s, (10, 10, 6), (12, 12, 8))] = 1
    pairs["empty_ground_truth"] = (pred, gt, (1.0, 1.0, 1.0))
    gt = _tumour(s, (11, 10, 7), (6, 6, 4), (3, 3, 2), (1.5, 1.5, 1))
    pairs["empty_prediction"] = (np.zeros(s, np.uint8), gt, (1.0, 1.0, 1.0))

    # Prediction beside, not on, the ground truth: no overlap, no match.
    gt = np.zeros(s, np.uint8)
    gt[_box(s, (3, 3, 3), (8, 8, 8))] = 3
    pred = np.zeros(s, np.uint8)
    pred[_box(s, (12, 12, 6), (18, 19, 11))] = 3
    pairs["disjoint"] = (pred, gt, (1.0, 1.0, 1.0))

    # Anisotropic grids with asymmetric lesions (spacing matters, and on which axis).
    gt = _tumour(s, (11, 9, 7), (8, 5, 5), (5, 3, 3), (2, 1.5, 1.5))
    gt[_box(s, (19, 15, 1), (23, 20, 4))] = 3
    pred = _tumour(s, (12, 10, 6), (7, 6, 5), (5, 3, 2.5), (2.5, 1.5, 1))
    pred[_box(s, (1, 17, 9), (4, 21, 13))] = 1
    pairs["anisotropic"] = (pred, gt, (0.8, 1.0, 2.5))
    pairs["anisotropic_thick"] = (pred.copy(), gt.copy(), (1.0, 1.2, 3.0))

    # Several random lesions of every label (seeded; the maps are stored, not regenerated).
    rng = np.random.default_rng(20250)
    gt = np.zeros(s, np.uint8)
    pred = np.zeros(s, np.uint8)
    for _ in range(7):
        c = rng.uniform((2, 2, 2), (s[0] - 2, s[1] - 2, s[2] - 2))
        r = rng.uniform(1.0, 3.5, 3)
        lab = int(rng.integers(1, 5))
        gt[_ball(s, c, r)] = lab
        if rng.random() < 0.8:
            pred[_ball(s, c + rng.normal(0, 0.8, 3), r * rng.uniform(0.7, 1.3, 3))] = lab
    for _ in range(2):
        c = rng.uniform((2, 2, 2), (s[0] - 2, s[1] - 2, s[2] - 2))
        pred[_ball(s, c, rng.uniform(1.0, 2.0, 3))] = int(rng.integers(1, 5))
    pairs["random"] = (pred, gt, (1.0, 1.0, 1.0))
    return pairs


def encode(a: np.ndarray) -> str:
    return base64.b64encode(zlib.compress(np.ascontiguousarray(a, np.uint8).tobytes(), 9)).decode()


def decode(text: str, shape: tuple[int, int, int]) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), np.uint8).reshape(shape).copy()


def _number(v) -> float | str | None:
    if v is None:
        return None
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


KEYS = ("tp", "fp", "fn", "n_ref_instances", "n_pred_instances", "sq_dsc", "sq_nsd", "sq_hd95",
        "sq_dsc_std", "sq_nsd_std", "sq_hd95_std", "global_bin_dsc", "global_bin_nsd", "global_bin_hd95")


def _figures(results) -> dict:
    out = {}
    for region in REGIONS:
        d = results[region].to_dict(True)
        out[region] = {k: _number(d.get(k)) for k in KEYS}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    import nibabel as nib
    from brats_evaluation import config_path
    from importlib.metadata import version
    from panoptica import Panoptica_Evaluator

    evaluator = Panoptica_Evaluator.load_from_config(str(config_path("gli")))
    doc = {"about": __doc__.split("\n\n")[0].replace("\n", " "),
           "versions": {p: version(p) for p in ("brats-evaluation", "panoptica", "numpy", "scipy",
                                                 "SimpleITK", "connected-components-3d")},
           "shape": list(SHAPE), "regions": list(REGIONS), "pairs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (pred, gt, spacing) in make_pairs().items():
            affine = np.diag([*spacing, 1.0])
            paths = []
            for role, arr in (("pred", pred), ("ref", gt)):
                p = Path(tmp) / f"{name}-{role}.nii.gz"
                nib.save(nib.Nifti1Image(arr.astype(np.uint8), affine), p)
                paths.append(str(p))
            files = _figures(evaluator.evaluate(paths[0], paths[1]))
            arrays = _figures(evaluator.evaluate(pred, gt, voxelspacing=tuple(spacing)))
            doc["pairs"][name] = {"spacing": list(spacing), "prediction": encode(pred),
                                  "ground_truth": encode(gt), "files": files, "arrays": arrays}
            print(name, {r: (files[r]["tp"], files[r]["fp"], files[r]["fn"]) for r in REGIONS})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
