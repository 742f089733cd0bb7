#!/usr/bin/env bash
# A bounded GPU run (issue 9): continue a run N steps in bf16 on CUDA, write checkpoint + log to $OUT.
#
#   OUT=/path/to/out train/gpu_recipe.sh [tiny|base] [STEPS] [RESUME]
#
#   tiny  (default) fine-tunes train/configs/tiny_randomized.yaml (2 mm, randomized + phantoms);
#         RESUME defaults to runs/tiny_randomized (its newest checkpoint) when that exists, else
#         the run starts from the bundled default.
#   base  the 1.5 mm `base` preset on the same data mixture, from RESUME or from scratch.
#   refine  the second stage (train/configs/refine_1mm.yaml: 1 mm crops of phantoms and post-treatment
#         phantoms), continued from RESUME (default train/resume/refine_1mm, the bundled stage's run).
#   STEPS steps beyond the resume point (default 600).
#   RESUME a run folder, a checkpoints/step_* folder, or "none".
#
# Phantoms are generated on the machine when missing (seconds with many cores); randomized
# samples are rendered by the data workers. Everything the run writes goes to $OUT/<name>/:
# config.yaml, log.jsonl, checkpoints/step_*/ (weights, optimizer, state), best/, summary.json.
# On a lent device machine only the working tree travels: carry the resume checkpoint, e.g.
#   carry: [runs/tiny_randomized/checkpoints/step_0000500]  and pass that folder as RESUME.
# Continue it later on CPU with:
#   cp -r $OUT/<name> runs/<name> && accelerate launch --cpu ... train/train.py --config <cfg> --resume
# Tunables (environment, read only here): WORKERS (data workers, default: cores - 2), BATCH (crops per step).
set -euo pipefail
cd "$(dirname "$0")/.."

: "${OUT:?set OUT to the output folder}"
PRESET="${1:-tiny}"
STEPS="${2:-600}"
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python
VLSEG="$PY -m vlseg"
CORES="$(nproc)"
WORKERS="${WORKERS:-$(( CORES > 3 ? CORES - 2 : 1 ))}"
CONFIG=train/configs/tiny_randomized.yaml

case "$PRESET" in
  tiny)
    SPACING=2; NAME=tiny_randomized; BATCH="${BATCH:-8}"; CROP=64
    DEFAULT_RESUME=runs/tiny_randomized
    EXTRA=(init_checkpoint=default) ;;   # without RESUME: improve the bundled default
  base)
    SPACING=1.5; NAME=base_randomized; BATCH="${BATCH:-2}"; CROP=128
    DEFAULT_RESUME=none
    EXTRA=(model=base init_checkpoint=null optim.lr=0.001 optim.warmup_steps=100) ;;
  refine)
    SPACING=1; NAME=refine_1mm; BATCH="${BATCH:-8}"; CROP=64
    DEFAULT_RESUME=train/resume/refine_1mm ;;
  *) echo "gpu_recipe: error: preset must be tiny, base or refine, got '$PRESET'" >&2; exit 2 ;;
esac
RESUME="${3:-$DEFAULT_RESUME}"
if [ "$RESUME" != none ] && [ ! -e "$RESUME" ]; then
  echo "gpu_recipe: note: no resume point at $RESUME; starting as the config says" >&2
  RESUME=none
fi

if [ "$PRESET" = refine ]; then
  # The refinement stage: its own loop (train/train.py, refine: section), resumed from a copy of RESUME
  OMP_NUM_THREADS=1 $VLSEG synth --out work_data/phantoms_train_1mm --n 60 --seed 41 --spacing 1 --workers "$CORES" > /dev/null
  OMP_NUM_THREADS=1 $VLSEG synth --out work_data/phantoms_post_train_1mm --n 40 --seed 51 --spacing 1 \
    --timepoint post --workers "$CORES" > /dev/null
  mkdir -p "$OUT"
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/hardware.txt" 2>/dev/null || echo "no GPU" > "$OUT/hardware.txt"
  START=0
  if [ "$RESUME" != none ]; then
    mkdir -p "$OUT/$NAME/checkpoints"
    LAST="$(ls -d "$RESUME"/checkpoints/step_* 2>/dev/null | sort | tail -n 1)"
    [ -n "$LAST" ] || { echo "gpu_recipe: error: no checkpoints/step_* under $RESUME" >&2; exit 2; }
    cp -r "$LAST" "$OUT/$NAME/checkpoints/"
    [ -f "$RESUME/log.jsonl" ] && cp "$RESUME/log.jsonl" "$OUT/$NAME/"
    START=$((10#${LAST##*step_}))
  fi
  echo "cores: $CORES, workers: $WORKERS, preset: refine, steps: $STEPS from $START, resume: $RESUME" >> "$OUT/hardware.txt"
  "$PY" train/train.py --config train/configs/refine_1mm.yaml --no-progress --resume --override \
    output_dir="$OUT/$NAME" max_steps=$((START + STEPS)) data.batch_size="$BATCH" "data.crop_size=[$CROP,$CROP,$CROP]" \
    data.num_workers="$WORKERS" data.cache_workers="$CORES" threads=4 checkpoint_every=200 keep_checkpoints=1 \
    2>&1 | tee "$OUT/$NAME.out"
  exit "${PIPESTATUS[0]}"
fi

TRAIN_DIR="work_data/phantoms_train_${SPACING}mm"
VAL_DIR="work_data/phantoms_val_${SPACING}mm"
OMP_NUM_THREADS=1 $VLSEG synth --out "$TRAIN_DIR" --n 240 --seed 1 --spacing "$SPACING" --workers "$CORES" > /dev/null
OMP_NUM_THREADS=1 $VLSEG synth --out "$VAL_DIR" --n 12 --seed 2 --spacing "$SPACING" --workers "$CORES" > /dev/null
RAND_VAL_DIR="work_data/randomized_val_${SPACING}mm"
OMP_NUM_THREADS=1 "$PY" -m vlseg.synth.randomize_cli --out "$RAND_VAL_DIR" --n 12 --seed 3 --spacing "$SPACING" > /dev/null

mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/hardware.txt" 2>/dev/null || echo "no GPU" > "$OUT/hardware.txt"
echo "cores: $CORES, workers: $WORKERS, preset: $PRESET, steps: $STEPS, resume: $RESUME" >> "$OUT/hardware.txt"

"$PY" train/continue_run.py --config "$CONFIG" --from "$RESUME" --steps "$STEPS" --out "$OUT/$NAME" \
  --no-progress --override \
    name="$NAME" data.sources.1.path="$TRAIN_DIR" val.sources.0.path="$VAL_DIR" val.sources.1.path="$RAND_VAL_DIR" \
    data.cache_dir="runs/cache_${SPACING}mm" data.num_workers="$WORKERS" data.cache_workers="$CORES" \
    data.batch_size="$BATCH" "data.crop_size=[$CROP,$CROP,$CROP]" threads=4 \
    checkpoint_every=200 keep_checkpoints=1 val.every=0 "${EXTRA[@]}" \
  2>&1 | tee "$OUT/$NAME.out"
