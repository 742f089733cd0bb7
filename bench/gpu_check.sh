#!/usr/bin/env bash
# The GPU path end to end, ready for the day a GPU is available (issue 24):
#   * `vlseg bench --device cuda` (first answer, follow-ups, model load, peak RSS; 5 runs),
#   * `vlseg bench --profile --device cuda` (every stage on the realistic cases; 3 runs),
#   * one cohort of 20 generated 1 mm cases through `vlseg segment --cases --device cuda`,
#   * one `vlseg segment --device cuda` answer saved, and `vlseg serve --device cuda` started
#     and asked for its page.
# Writes the figures to bench/results/gpu/ (OUT=... to change). Run from anywhere:
#     bash bench/gpu_check.sh            # PY=.venv/bin/python by default
# Exits non-zero at the first step that fails (the log says which).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-bench/results/gpu}
WORK=${WORK:-$(mktemp -d /tmp/vlseg-gpu-check-XXXX)}
mkdir -p "$OUT"
export OMP_WAIT_POLICY=PASSIVE

echo "== GPU"
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true) | tee "$OUT/gpu.txt"
"$PY" -c "import torch, sys; ok = torch.cuda.is_available(); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', ok); sys.exit(0 if ok else 3)" | tee -a "$OUT/gpu.txt"

echo "== vlseg bench --device cuda"
"$PY" -m vlseg bench --device cuda --runs 5 --threads 2 --out "$OUT/bench_cuda.json"

echo "== vlseg bench --profile --device cuda"
"$PY" -m vlseg bench --device cuda --profile --runs 3 --threads 2 --work "$WORK/profile" --out "$OUT/profile_cuda.json"

echo "== cohort of 20 generated cases, --device cuda"
"$PY" bench/cohort.py --n 20 --spacing 1 --procs 1 --device cuda --work "$WORK/cohort" --out "$OUT/cohort_cuda.json"

echo "== vlseg segment --device cuda (one case, saved)"
CASE=$(ls -d "$WORK"/cohort/cases/*/ | head -1)
START=$(date +%s.%N)
"$PY" -m vlseg segment --device cuda --case "$CASE" --query "segment the whole tumor" --out "$WORK/segment"
END=$(date +%s.%N)
test -f "$WORK/segment/answer.json"
echo "vlseg segment --device cuda, one process end to end: $(echo "$END - $START" | bc) s" | tee "$OUT/segment_cuda.txt"

echo "== vlseg serve --device cuda (starts, serves its page)"
PORT=${PORT:-7861}
"$PY" -m vlseg serve --device cuda --port "$PORT" > "$WORK/serve.log" 2>&1 &
SERVE=$!
trap 'kill "$SERVE" 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
    if curl -fsS "http://127.0.0.1:$PORT/" > /dev/null 2>&1; then echo "serve: up"; break; fi
    kill -0 "$SERVE" 2>/dev/null || { echo "serve exited:"; tail -20 "$WORK/serve.log"; exit 1; }
    sleep 1
done
curl -fsS "http://127.0.0.1:$PORT/" > /dev/null
echo "gpu check done: figures in $OUT"
