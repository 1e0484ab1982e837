#!/usr/bin/env bash
# One short GPU lease, every GPU job of issues 7, 8 and 9 in one prepared command:
#
#   bash scripts/gpu_session.sh OUT_DIR CORPUS_DIR
#
# CORPUS_DIR is scripts/build_corpus.py's folder (train/, val/, val_crops/). Phases, all against one wall-clock
# DEADLINE_S (default 540 s) so the command ends inside the lease:
#   0. scripts/gpu_check.sh, shrunk to GPU_CHECK_S (default 110 s): the cuda tests and `dreamsr bench`, alone on
#      the GPU so its timings are clean;
#   1. training, every run its own process side by side on the one GPU (the small UNet is kernel-launch bound, so
#      one process leaves the GPU mostly idle):
#        - the six runs of `scripts/reproduce --profile full` (issue 9), via --train-only;
#        - the default-model sweep at the same budget (issue 8): residual p=1 with lr 1e-4, with embedding
#          scale 1000 (the base settings are reproduce's residual_p1, its image_p1 the image-target arm;
#          the candidates below are the crop-size arm);
#        - two default-model candidates (issue 8), residual p=1, lr 2e-4, as many steps as fit: 64 px crops at
#          batch 32 and 128 px crops at batch 8 (the same pixels per step);
#   2. once the reproduce runs are done: scripts/reproduce's evaluations and report (E1-E5);
#   3. model_card.py on the GPU for the candidates and the sweep models (same code as the CPU card);
#   4. packing: results.tar.gz (logs, JSON, reports, figures, metrics.jsonl; no weights) and every trained
#      model as fp16 safetensors in models.tar, split into 15 MiB parts (the device tool returns <= 8 files).
# JOBS (default bench,repro,sweep,cand) picks the parts: JOBS=repro gives the six reproduce runs the GPU to
# themselves (seen 2026-11-26 on an H200: ten processes side by side ran at ~0.10 s per step each, so the six
# runs reached 3760-3960 of their 4000 steps in the ~7 minutes left after the bench, and no evaluation ran).
# DRY_RUN=1 runs the same orchestration on the CPU at toy sizes (a check of this script, not of a GPU); SMOKE=1
# the same toy sizes on the GPU without the bench (a one-minute check of the CUDA code paths before the long call).
set -uo pipefail

OUT=${1:?usage: bash scripts/gpu_session.sh OUT_DIR CORPUS_DIR}
CORPUS=${2:?usage: bash scripts/gpu_session.sh OUT_DIR CORPUS_DIR}
DEADLINE_S=${DEADLINE_S:-540}
GPU_CHECK_S=${GPU_CHECK_S:-110}
JOBS=,${JOBS:-bench,repro,sweep,cand},
has() { [[ $JOBS == *",$1,"* ]]; }
PY=${PYTHON:-python3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
CORPUS=$(cd "$CORPUS" && pwd)
WORK=${WORK:-/tmp/dreamsr-gpu}
mkdir -p "$WORK/logs"
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 COLUMNS=160 OMP_NUM_THREADS=1
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
T0=$(date +%s)
LOG="$WORK/logs/session.log"
left() { echo $((DEADLINE_S - ($(date +%s) - T0))); }
say() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a "$LOG"; }

DEV=cuda PROFILE=full STEPS=4000 PRESET=small CAND_BATCH=(32 8) CAND_PATCH=(64 128) SWEEP_BATCH=8
SAVE=1000 VAL_EVERY=1000 VAL_COUNT=7 VAL_CROP=128 CARD_STEPS=10,20,50,100 SWEEP_STEPS=20,50 RESERVE=110
if [[ ${DRY_RUN:-0} == 1 || ${SMOKE:-0} == 1 ]]; then
  say "toy sizes (DRY_RUN=${DRY_RUN:-0} on the CPU, SMOKE=${SMOKE:-0} on the GPU): a check of this script only"
  DEV=$([[ ${DRY_RUN:-0} == 1 ]] && echo cpu || echo cuda) PROFILE=ci STEPS=24 PRESET=tiny CAND_BATCH=(4 2) CAND_PATCH=(32 64) SWEEP_BATCH=2
  SAVE=12 VAL_EVERY=12 VAL_COUNT=1 VAL_CROP=32 CARD_STEPS=2 SWEEP_STEPS=2 RESERVE=60
fi
RESERVE_S=${RESERVE_S:-$RESERVE}  # seconds kept after training for evaluations and packing
say "start: deadline ${DEADLINE_S} s; $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"

# ---- phase 0: the GPU check, alone
if [[ ${SMOKE:-0} == 1 ]] || ! has bench; then
  say "gpu_check skipped (SMOKE=1 or not in JOBS)"
elif [[ ${DRY_RUN:-0} == 1 ]]; then
  DRY_RUN=1 BUDGET_S=$GPU_CHECK_S PYTEST_S=30 SKIP_100=1 bash scripts/gpu_check.sh "$WORK/gpu_check" >>"$LOG" 2>&1
else
  BUDGET_S=$GPU_CHECK_S PYTEST_S=35 GPU_LR=160 GPU_B20=5,25 GPU_REPEATS=2 BENCH20_S=50 TRAIN_S=30 SKIP_100=1 \
    bash scripts/gpu_check.sh "$WORK/gpu_check" >>"$LOG" 2>&1
fi
[[ -f $WORK/gpu_check/summary.txt ]] && say "gpu_check done: $(tr '\n' ' ' <"$WORK/gpu_check/summary.txt" | tail -c 600)"

# ---- phase 1: training, side by side
REPRO=(--profile "$PROFILE" --out "$WORK/repro" --data-dir "$CORPUS" --device "$DEV" --precision fp32 --threads 1)
[[ ${DRY_RUN:-0} == 1 || ${SMOKE:-0} == 1 ]] && REPRO+=(--workers 0)
declare -a REPRO_PIDS=() OTHER_PIDS=()
for run in image_p0 image_p1 image_p2 image_pinf residual_p1 residual_pinf; do
  has repro || break
  "$PY" scripts/reproduce "${REPRO[@]}" --train-only "$run" >"$WORK/logs/repro-$run.log" 2>&1 &
  REPRO_PIDS+=($!)
done
# the same settings as reproduce's residual_p1 (profile "full"), one change each
BASE=(--dataset folder --data-dir "$CORPUS/train" --val-dir "$CORPUS/val" --scale 4 --family sr3 --preset "$PRESET"
      --target residual --p 1 --lr-schedule constant --lr-warmup 100 --ema-decay 0.999 --seed 0 --device "$DEV" --precision fp32
      --threads 1 --save-every "$SAVE" --keep 1 --val-every "$VAL_EVERY" --val-count "$VAL_COUNT"
      --val-crop "$VAL_CROP" --val-steps 20 --workers 1 --cache-mb 1024 --log-every 50)
sweep() {  # sweep NAME OPTIONS...
  local name=$1; shift
  "$PY" -m dreamsr train "${BASE[@]}" --patch 64 --batch-size "$SWEEP_BATCH" --lr 2e-4 --steps "$STEPS" \
    --run-dir "$WORK/sweep/$name" "$@" >"$WORK/logs/sweep-$name.log" 2>&1 &
  OTHER_PIDS+=($!)
}
if has sweep; then
  sweep lr1e-4 --lr 1e-4
  sweep embed1000 --embed-scale 1000
fi
# candidates: stop RESERVE_S before the deadline (cards and packing need that long)
cand_min=$(awk -v s=$(( $(left) - RESERVE_S )) 'BEGIN { printf "%.2f", (s > 30 ? s : 30) / 60 }')
for i in 0 1; do
  has cand || break
  name="cand-p${CAND_PATCH[$i]}-b${CAND_BATCH[$i]}"
  "$PY" -m dreamsr train "${BASE[@]}" --patch "${CAND_PATCH[$i]}" --batch-size "${CAND_BATCH[$i]}" --lr 2e-4 \
    --steps 100000 --val-every 2000 --save-every 2000 --time-limit "$cand_min" --export-dtype fp16 \
    --run-dir "$WORK/cand/$name" >"$WORK/logs/$name.log" 2>&1 &
  OTHER_PIDS+=($!)
done
say "phase 1 started (JOBS=${JOBS//,/ }): ${#REPRO_PIDS[@]} reproduce runs, ${#OTHER_PIDS[@]} sweep/candidate runs (candidates stop after $cand_min min)"

# wait for the reproduce runs, but never past the point where the evaluations could no longer finish
# (polled by command line: `kill -0 PID` was seen to report live processes as gone on the device machine)
while pgrep -f -- "--out $WORK/repro .*--train-only" >/dev/null && (( $(left) > RESERVE_S )); do sleep 2; done
say "reproduce training: $(grep -h 'train \|step ' "$WORK"/logs/repro-*.log | tail -n 6 | tr '\n' ' ')"

# ---- phase 2: reproduce's evaluations and report (finished runs are skipped, unfinished ones would train on)
budget=$(( $(left) - 60 ))
if ! has repro; then
  EVAL_PID=
elif (( budget > 20 )) && ! pgrep -f -- "--out $WORK/repro .*--train-only" >/dev/null; then
  timeout -k 5 "$budget" "$PY" scripts/reproduce "${REPRO[@]}" --doc "$WORK/repro/reproduction.md" \
    >"$WORK/logs/repro-evals.log" 2>&1 &
  EVAL_PID=$!
else
  say "phase 2 skipped: reproduce runs unfinished or no time ($(left) s left)"
  EVAL_PID=
fi

# ---- phase 3: model cards (after the candidates stop by their time limit)
while pgrep -f -- "-m dreamsr train .*--run-dir $WORK/" >/dev/null && (( $(left) > 45 )); do sleep 2; done
say "candidates/sweep done: $(for f in "$WORK"/logs/cand-*.log "$WORK"/logs/sweep-*.log; do echo "$(basename "$f"): $(grep -ao 'step [0-9]*' "$f" | tail -n 1)"; done | tr '\n' ' ')"
card() {  # card WEIGHTS NAME STEPS OPTION_STEPS
  [[ -f $1 ]] || { say "card $2: no weights"; return; }
  timeout -k 5 $(( $(left) - 40 > 10 ? $(left) - 40 : 10 )) "$PY" scripts/model_card.py "$1" "$CORPUS/val_crops" \
    "$WORK/cards/$2" --steps "$3" --option-steps "$4" --device "$DEV" >"$WORK/logs/card-$2.log" 2>&1
  say "card $2: exit $?"
}
declare -a CARD_PIDS=()
shopt -s nullglob
for d in "$WORK"/cand/*/; do card "$d/model.safetensors" "$(basename "$d")" "$CARD_STEPS" 20 & CARD_PIDS+=($!); done
for d in "$WORK"/sweep/*/; do
  card "$d/model.safetensors" "sweep-$(basename "$d")" "$SWEEP_STEPS" 20 & CARD_PIDS+=($!)
done
for r in residual_p1 image_p1; do
  card "$WORK/repro/runs/$r/model.safetensors" "sweep-repro-$r" "$SWEEP_STEPS" 20 & CARD_PIDS+=($!)
done
wait "${CARD_PIDS[@]}"
if [[ -n ${EVAL_PID:-} ]]; then
  while pgrep -f -- "scripts/reproduce .*--out $WORK/repro .*--doc" >/dev/null && (( $(left) > 25 )); do sleep 2; done
  pkill -f -- "scripts/reproduce .*--out $WORK/repro .*--doc" 2>/dev/null
  say "reproduce evaluations: $(tail -n 4 "$WORK/logs/repro-evals.log" | tr '\n' ' ')"
fi
# only this session's jobs (a bare `pkill -f "dreamsr train"` once ended an unrelated training run)
pkill -f -- "--run-dir $WORK/" 2>/dev/null; pkill -f -- "scripts/reproduce .*--out $WORK/repro" 2>/dev/null; sleep 1

# ---- phase 4: packing (weights as fp16, everything else small)
"$PY" - "$WORK" <<'EOF' >>"$LOG" 2>&1
import shutil
import sys
from pathlib import Path
from dreamsr.jobs.train import export_from_state, latest_checkpoint
work = Path(sys.argv[1])
dest = work / "models"
dest.mkdir(exist_ok=True)
# reproduce's runs are evaluated here; only the two the sweep compares against travel (the 64 MiB return limit)
runs = [*work.glob("repro/runs/residual_p1"), *work.glob("repro/runs/image_p1"), *work.glob("sweep/*"),
        *work.glob("cand/*")]
for run in sorted(runs):
    if latest_checkpoint(run) is None:
        print("no checkpoint in", run)
        continue
    name = f"{run.parent.name}-{run.name}"
    if run.parent.name == "cand" and (run / "model.safetensors").is_file():
        # the candidates' own fp16 exports, byte for byte: the cards' cached evaluations are keyed by their sha256
        shutil.copyfile(run / "model.safetensors", dest / f"{name}.safetensors")
    else:
        export_from_state(run, dest / f"{name}.safetensors", dtype="fp16")
    print("exported", name)
EOF
(cd "$WORK" && tar -cf "$WORK/models.tar" models && split -b 15M -d "$WORK/models.tar" "$OUT/models.tar.part-")
# results: everything but weights, training states and evaluation grids (the figures the reports link are kept)
(cd "$WORK" && find . -type f ! -path './models/*' ! -path '*/checkpoints/*' ! -name '*.safetensors' \
  ! -name 'models.tar' ! -path './repro/data/*' \( ! -name '*.png' -o -name 'figure.png' -o -name 'e[0-9]_*.png' \) \
  | tar -czf "$WORK/results.tar.gz" -T - && split -b 15M -d "$WORK/results.tar.gz" "$OUT/results.tar.gz.part-")
say "packed: $(ls -la "$OUT" | tail -n +2 | awk '{print $5, $9}' | tr '\n' ' ')"
cp "$LOG" "$OUT/session.log"
# what went wrong, where the reply shows it
for f in "$WORK"/logs/*.log "$WORK"/gpu_check/*.log; do
  [[ -f $f ]] && grep -qE "Traceback|Error:|error:" "$f" && { echo "=== $f"; grep -vE "^\s*$" "$f" | tail -n 12; }
done
say "done"
