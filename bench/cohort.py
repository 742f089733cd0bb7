"""Cohort throughput: cases per minute for N generated cases with 1 and with 2 processes, and
where the time goes per case (read, encode, decode, measure, write).

    .venv/bin/python bench/cohort.py                 # 20 cases at 2 mm, bundled model, 1 and 2 processes
    .venv/bin/python bench/cohort.py --n 6 --procs 1 # quicker

Each run is the real command (``vlseg segment --cases``; 2 processes through ``accelerate
launch``), timed from start to exit, so model loading and process start are included. Stage
times come from the runs' ``.vlseg-cohort/log-rank*.jsonl``. Prints one JSON object; the
numbers depend on how busy the machine is (say so when you quote them).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ("read", "encode", "decode", "measure", "write")
QUERY = "how big is the enhancing tumor?"


def _run(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"benchmark run failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return wall


def _stages(out: Path) -> dict[str, float]:
    rows = [json.loads(line) for p in sorted((out / ".vlseg-cohort").glob("log-rank*.jsonl"))
            for line in p.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("status") == "answered"]
    return {s: round(statistics.median(r[f"{s}_s"] for r in rows), 3) for s in STAGES} if rows else {}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20, help="generated cases (default 20)")
    ap.add_argument("--spacing", type=float, default=2.0, help="case voxel size in mm (default 2: the bundled model's)")
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="process counts to run (default 1 2)")
    ap.add_argument("--model", default=None, help="model (default: bundled)")
    ap.add_argument("--work", default=None, help="folder for cases and outputs (default: a temp folder)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="cuda: one GPU per process (bench/gpu_check.sh runs it with --procs 1)")
    ap.add_argument("--out", default=None, help="also write the JSON result to this file")
    args = ap.parse_args()

    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    py = sys.executable
    accelerate = str(Path(py).with_name("accelerate"))
    with tempfile.TemporaryDirectory(prefix="vlseg-cohort-bench-") as tmp:
        work = Path(args.work or tmp)
        cases = work / "cases"
        if not cases.is_dir() or len(list(cases.iterdir())) < args.n:
            _run([py, "-m", "vlseg", "synth", "--out", str(cases), "--n", str(args.n),
                  "--spacing", str(args.spacing)], env)
        model = ["--model", args.model] if args.model else []
        result: dict = {"cases": args.n, "spacing_mm": args.spacing, "query": QUERY, "device": args.device,
                        "runs": {},
                        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average "
                                   f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} at start"}
        for k in args.procs:
            out = work / f"out-{k}"
            common = ["-m", "vlseg", "segment", "--cases", str(cases), "--query", QUERY,
                      "--out", str(out), "--overwrite", "--device", args.device, *model]
            if k == 1:
                cmd = [py, *common]
            else:
                cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", str(k), "--num_machines", "1",
                       "--mixed_precision", "no", "--dynamo_backend", "no", *common]
            for p in (out / ".vlseg-cohort").glob("log-rank*.jsonl"):
                p.unlink()
            wall = _run(cmd, {**env, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // k))})
            result["runs"][f"{k}_process"] = {
                "wall_s": round(wall, 1), "cases_per_min": round(60 * args.n / wall, 2),
                "median_stage_s": _stages(out)}
        result["load_average_end"] = [round(x, 1) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
