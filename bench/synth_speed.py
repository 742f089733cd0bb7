"""Seconds per randomized 64^3 training sample on one core (issue 9: at most 1 s).

Times exactly what a data worker does for a ``kind: randomized`` source: render a sample
(vlseg.synth.randomize, anatomy cached, tumors pooled as configured), crop it around the tumor and
augment it (vlseg.training.sources.MixtureDataset.sample). The anatomy load and the filling of the
tumor pool are done before timing. Wall time and this process's CPU time are both reported (CPU
time is what counts on a shared machine).

    OMP_NUM_THREADS=1 python bench/synth_speed.py [--n 40] [--spacing 2] [--crop 64] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=40, help="timed samples (default 40)")
    p.add_argument("--spacing", type=float, default=2.0, help="model spacing in mm (tiny: 2)")
    p.add_argument("--crop", type=int, default=64, help="crop edge in voxels (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    if args.n < 1 or args.crop < 8:
        print("synth_speed: error: --n must be >= 1 and --crop >= 8", file=sys.stderr)
        return 2

    import numpy as np
    import torch

    torch.set_num_threads(1)
    from vlseg.errors import VlsegError
    from vlseg.training.config import AugmentConfig, SourceConfig
    from vlseg.training.sources import MixtureDataset, randomized_entries

    try:
        entry = randomized_entries(SourceConfig(name="randomized", kind="randomized"), args.spacing)
        ds = MixtureDataset(sources=[entry], crop_size=(args.crop,) * 3, prompts_per_sample=5,
                            foreground_prob=0.67, augment_config=AugmentConfig(), seed=args.seed)
    except (VlsegError, ValueError) as e:
        print(f"synth_speed: error: {e}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    ds.sample(rng)                                   # first sample: loads and caches the anatomy
    first_s = time.perf_counter() - t0
    for _ in range(entry.randomize.tumor_pool):      # fill the tumor pool
        ds.sample(rng)

    wall, cpu = [], []
    for _ in range(args.n):
        w, c = time.perf_counter(), time.process_time()
        ds.sample(rng)
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    result = {
        "samples": args.n, "crop": [args.crop] * 3, "spacing_mm": args.spacing,
        "median_s": round(statistics.median(wall), 3), "mean_s": round(statistics.fmean(wall), 3),
        "median_cpu_s": round(statistics.median(cpu), 3), "mean_cpu_s": round(statistics.fmean(cpu), 3),
        "p90_cpu_s": round(float(np.percentile(cpu, 90)), 3), "first_sample_s": round(first_s, 2),
        "tumor_reuse": entry.randomize.tumor_reuse, "torch_threads": torch.get_num_threads(),
        "machine": platform.platform(), "cpu": platform.processor() or platform.machine(),
    }
    print(f"randomized {args.crop}^3 sample at {args.spacing:g} mm, one core: median {result['median_s']} s "
          f"(CPU {result['median_cpu_s']} s; mean CPU {result['mean_cpu_s']} s, p90 {result['p90_cpu_s']} s) "
          f"over {args.n} samples; first sample (anatomy load) {result['first_sample_s']} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
