"""Write randomized samples as BraTS-2023-layout cases (validation sets for training runs).

    python -m vlseg.synth.randomize_cli --out work_data/randomized_val_2mm --n 12 --seed 3 --spacing 2

Case ``i`` is ``BraTS-RND-{seed:04d}-{i:05d}``, rendered by ``RandomizedSynth.sample`` (no tumor
pool) from the generator ``default_rng([RANDOMIZED_CASE_STREAM, seed, i])``: a stream of its own,
so training (which seeds from (seed, rank, worker, step)) never draws these samples. Images are
stored as int16 (relative intensity times a random scale, 0 outside the brain), the labels in
BraTS 2023 values (1 NCR, 2 ED, 3 ET), at the model spacing on the brain's box, RAS; the
``-synth.json`` record says what was drawn. Complete cases are skipped.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from vlseg import vocab
from vlseg.vocab import SEQUENCES
from vlseg.errors import InputError, VlsegError
from vlseg.fileio import atomic_path, write_json_atomic
from vlseg.synth.phantom import CASE_KEYS, TIMEPOINT_CONVENTION, case_files, nifti_image
from vlseg.synth.randomize import RandomizedSynth

RANDOMIZED_CASE_STREAM = 0x52414E44   # "RAND": keeps written cases off the training streams
MAX_CASES = 10_000


def case_name(seed: int, index: int) -> str:
    return f"BraTS-RND-{seed:04d}-{index:05d}"


def write_randomized_case(out_dir: str | Path, synth: RandomizedSynth, seed: int, index: int) -> Path:
    """Render case ``index`` of the set ``seed`` into ``out_dir/<name>/``; return the folder."""
    name = case_name(seed, index)
    folder = Path(out_dir) / name
    files = case_files(folder, name)
    if all(f.exists() for f in files.values()):
        return folder
    rng = np.random.default_rng([RANDOMIZED_CASE_STREAM, int(seed), int(index)])
    s = synth.sample(rng, pool=False)
    scale = float(rng.uniform(200.0, 3000.0))
    arrays: dict[str, np.ndarray] = {}
    for i, seq in enumerate(SEQUENCES):
        v = np.clip(np.rint(s.raw[i] * scale), 0, 32767).astype(np.int16)
        v[s.brain & (v == 0)] = 1                                   # the brain stays nonzero
        arrays[seq] = v
    timepoint = s.record["tumor"].get("timepoint", "pre")
    convention = TIMEPOINT_CONVENTION[timepoint]
    lab = vocab.label_convention(convention)
    seg = np.zeros(s.brain.shape, np.uint8)
    for concept, mask in s.labels.items():
        if mask.any():
            seg[mask] = lab[concept]
    arrays["seg"] = seg
    folder.mkdir(parents=True, exist_ok=True)
    for k in CASE_KEYS:
        if not files[k].exists():
            with atomic_path(files[k]) as tmp:
                nib.save(nifti_image(arrays[k], s.affine), tmp)
    record = {"generator": "vlseg.synth.randomize", "set_seed": int(seed), "index": int(index),
              "case_id": name, "scale": scale, "label_convention": convention, **s.record,
              "label_voxels": {k: int((seg == v).sum()) for k, v in lab.items()}}
    write_json_atomic(files["info"], json.loads(json.dumps(record, default=float)))
    return folder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vlseg.synth.randomize_cli", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output folder (one sub-folder per case)")
    p.add_argument("--n", type=int, default=1, help="number of cases (default 1)")
    p.add_argument("--seed", type=int, default=0, help="set seed (default 0)")
    p.add_argument("--spacing", type=float, default=2.0, help="voxel size in mm (default 2, the tiny model's)")
    args = p.parse_args(argv)
    try:
        if not 1 <= args.n <= MAX_CASES or args.seed < 0:
            raise InputError(f"--n must be between 1 and {MAX_CASES} and --seed >= 0")
        synth = RandomizedSynth(spacing_mm=args.spacing)
        for i in range(args.n):
            print(write_randomized_case(args.out, synth, args.seed, i), flush=True)
    except (VlsegError, ValueError, OSError) as e:
        print(f"randomize_cli: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
