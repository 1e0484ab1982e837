#!/usr/bin/env bash
# Evaluate the experiment's runs as they finish (one thread): repeats evaluate.py until train.sh's runs are all
# done and every task is written. Usage: bash scripts/dream_experiment/evaluate_loop.sh CORPUS WORK [SHARD]
set -euo pipefail
corpus=${1:?corpus}; work=${2:?work}; shard=${3:-0/1}
while true; do
  OMP_NUM_THREADS=1 python scripts/dream_experiment/evaluate.py "$corpus" "$work" --shard "$shard"
  if ! pgrep -f "dream_experiment/train.sh" >/dev/null; then
    OMP_NUM_THREADS=1 python scripts/dream_experiment/evaluate.py "$corpus" "$work" --shard "$shard"
    break
  fi
  sleep 30
done
