#!/usr/bin/env bash
# The paired DREAM experiment on the default's recipe (docs/experiments/dream-resshift.md): training.
#
#   bash scripts/dream_experiment/train.sh CORPUS WORK [STEPS] [PARALLEL]
#
# CORPUS is scripts/build_corpus.py's output (only train/ is read here). Every arm trains ResShift small (shift
# v1, x4 unshuffle space) from scratch for the same number of optimizer steps (default 3000), 64² HR crops,
# batch 8, lr 2e-4 constant after 200 warm-up steps, EMA 0.999, fp32, one thread per run, PARALLEL runs at a
# time (default 2). Seed s pairs the arms: the same initial weights, crops, t and ε at every step (loop.py draws
# them from (seed, step, sample), independent of p). States every 1000 steps are kept for the curves.
# Re-running the script resumes unfinished runs (--resume auto) and skips finished ones.
set -euo pipefail
corpus=${1:?corpus folder}; work=${2:?work folder}; steps=${3:-3000}; parallel=${4:-2}
mkdir -p "$work"
common=(--dataset folder --data-dir "$corpus/train" --family resshift --preset small --shift v1 --patch 64
        --batch-size 8 --lr 2e-4 --lr-warmup 200 --lr-schedule constant --ema-decay 0.999 --val-every 0
        --workers 0 --cache-mb 1024 --threads 1 --precision fp32 --save-every 1000 --keep 100 --log-every 50
        --steps "$steps")
declare -A arm=(
  [pinf]="--p inf"
  [p1]="--p 1 --dream-lambda input"
  [p1vp]="--p 1 --dream-lambda vp"
  [p0]="--p 0"
)
# the primary comparison (p = 1 vs inf) first, seed by seed, so a shortened run still has complete pairs
queue=()
for s in 1 2 3; do queue+=("pinf:$s" "p1:$s"); done
for s in 1 2 3; do queue+=("p0:$s" "p1vp:$s"); done
for item in "${queue[@]}"; do
  a=${item%%:*}; s=${item##*:}; out="$work/$a-s$s"
  if [ -f "$out/model.safetensors" ] && [ -f "$out/DONE" ]; then continue; fi
  ( OMP_NUM_THREADS=1 python -m dreamsr train "${common[@]}" ${arm[$a]} --seed "$s" --resume auto -o "$out" \
      > "$out.log" 2>&1 && touch "$out/DONE" ) &
  while [ "$(jobs -rp | wc -l)" -ge "$parallel" ]; do sleep 5; done
done
wait
