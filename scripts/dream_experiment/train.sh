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
#
# Optional environment variables change the sizes (for a tiny run, e.g. scripts/reproduce's ci profile); unset,
# the experiment is exactly the one above: SEEDS (default "1 2 3"), ARMS (default "pinf p1 p0 p1vp": queued as
# pinf, p1 per seed, then p0, p1vp per seed), PRESET (small), PATCH (64), BATCH (8), WARMUP (200), SAVE_EVERY
# (1000), LR (2e-4), INIT (a dreamsr checkpoint every run starts from, --init-weights; unset: from scratch).
# QUEUE ("arm:seed ...", e.g. "p1:3 p0:1") replaces the queue. A run already training (started by an
# earlier invocation) is skipped, and counts against PARALLEL.
set -euo pipefail
corpus=${1:?corpus folder}; work=${2:?work folder}; steps=${3:-3000}; parallel=${4:-2}
seeds=${SEEDS:-1 2 3}; arms=${ARMS:-pinf p1 p0 p1vp}
mkdir -p "$work"
common=(--dataset folder --data-dir "$corpus/train" --family resshift --preset "${PRESET:-small}" --shift v1
        --patch "${PATCH:-64}" --batch-size "${BATCH:-8}" --lr "${LR:-2e-4}" --lr-warmup "${WARMUP:-200}"
        --lr-schedule constant --ema-decay 0.999 --val-every 0 --workers 0 --cache-mb 1024 --threads 1
        --precision fp32 --save-every "${SAVE_EVERY:-1000}" --keep 100 --log-every 50 --steps "$steps")
if [ -n "${INIT:-}" ]; then common+=(--init-weights "$INIT"); fi
declare -A arm=(
  [pinf]="--p inf"
  [p1]="--p 1 --dream-lambda input"
  [p1vp]="--p 1 --dream-lambda vp"
  [p0]="--p 0"
)
for a in $arms; do [ -n "${arm[$a]:-}" ] || { echo "unknown arm $a (pinf, p1, p1vp, p0)" >&2; exit 2; }; done
# the primary comparison (p = 1 vs inf) first, seed by seed, so a shortened run still has complete pairs
queue=()
for s in $seeds; do for a in pinf p1; do [[ " $arms " == *" $a "* ]] && queue+=("$a:$s"); done; done
for s in $seeds; do for a in p0 p1vp; do [[ " $arms " == *" $a "* ]] && queue+=("$a:$s"); done; done
[ -n "${QUEUE:-}" ] && read -r -a queue <<< "$QUEUE"
running() { pgrep -f -- "dreamsr train .* -o $work/" | wc -l; }  # runs of this work folder, whoever started them
for item in "${queue[@]}"; do
  a=${item%%:*}; s=${item##*:}; out="$work/$a-s$s"
  if [ -f "$out/model.safetensors" ] && [ -f "$out/DONE" ]; then continue; fi
  if pgrep -f -- "dreamsr train .* -o $out\$" >/dev/null; then continue; fi  # already training
  while [ "$(running)" -ge "$parallel" ]; do sleep 5; done
  ( OMP_NUM_THREADS=1 python -m dreamsr train "${common[@]}" ${arm[$a]} --seed "$s" --resume auto -o "$out" \
      > "$out.log" 2>&1 && touch "$out/DONE" ) &
  sleep 2
done
wait
while [ "$(running)" -gt 0 ]; do sleep 5; done  # runs started by an earlier invocation
