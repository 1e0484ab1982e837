#!/usr/bin/env bash
# The default-model candidates at equal CPU training time, all with DREAM (p = 1) unless a row says otherwise.
#
#   bash scripts/candidates.sh CORPUS WORK [BUDGET_MIN]
#
# CORPUS is scripts/build_corpus.py's output (train/ and val_crops/ are used here; test/ never). Every candidate gets the same
# budget of single-thread CPU minutes (default 15): its uncontended step time is measured first (40 steps alone on
# one thread, the first 10 dropped), and it then trains budget / step time steps, so runs may share the machine
# without the comparison depending on the load. Then scripts/compare_candidates.py measures every one on the
# validation crops with its own sampling, and writes WORK/compare/candidates.{md,json}.
set -euo pipefail
corpus=${1:?corpus folder}; work=${2:?work folder}; budget=${3:-15}
mkdir -p "$work"
common=(--dataset folder --data-dir "$corpus/train" --patch 64 --batch-size 8 --lr 1e-4 --lr-warmup 0
        --lr-schedule constant --ema-decay 0.9999 --val-every 0 --workers 0 --cache-mb 2048 --threads 1 --precision fp32 --seed 0 --save-every 1000 --keep 1)
declare -A recipe=(
  [sr3-residual]="--family sr3 --preset small --target residual --p 1"
  [idm-small]="--family idm --preset small --scale 4 --p 1"
  [resshift-unshuffle]="--family resshift --preset small --p 1"
  [resshift-pixel]="--family resshift --preset small-pixel --p 1"
  [resshift-unshuffle-pinf]="--family resshift --preset small --p inf"
)
names=(sr3-residual idm-small resshift-unshuffle resshift-pixel resshift-unshuffle-pinf)
for n in "${names[@]}"; do  # uncontended step time, one at a time
  if [ ! -f "$work/$n.steps" ]; then
    rm -rf "$work/probe-$n"
    python -m dreamsr train "${common[@]}" ${recipe[$n]} --steps 40 --log-every 10 -o "$work/probe-$n" >/dev/null
    python - "$work/probe-$n/metrics.jsonl" "$budget" > "$work/$n.steps" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if '"step_time"' in l]
t = sorted(r["step_time"] for r in recs[1:])[len(recs[1:]) // 2]  # median over steps 11-40
print(int(float(sys.argv[2]) * 60 / t))
PY
    echo "$n: $(cat "$work/$n.steps") steps in $budget single-thread CPU minutes"
  fi
done
for n in "${names[@]}"; do  # two at a time, one thread each
  python -m dreamsr train "${common[@]}" ${recipe[$n]} --steps "$(cat "$work/$n.steps")" --resume auto \
    -o "$work/$n" > "$work/$n.log" 2>&1 &
  while [ "$(jobs -rp | wc -l)" -ge 2 ]; do sleep 5; done
done
wait
python scripts/compare_candidates.py "$corpus/val_crops" "$work/compare" --threads 2 --scale 2.5 \
  "sr3-residual=$work/sr3-residual/model.safetensors@steps=10,start=500,back_project=1" \
  "idm-small=$work/idm-small/model.safetensors@steps=20" \
  "resshift-unshuffle=$work/resshift-unshuffle/model.safetensors" \
  "resshift-pixel=$work/resshift-pixel/model.safetensors" \
  "resshift-unshuffle-pinf=$work/resshift-unshuffle-pinf/model.safetensors" \
  "dreamsr-x4-small (shipped)=dreamsr/assets/dreamsr-x4-small.safetensors"
