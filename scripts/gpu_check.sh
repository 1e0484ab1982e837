#!/usr/bin/env bash
# GPU check for dreamsr, one prepared command for a machine with an NVIDIA GPU (issue 7):
#
#   bash scripts/gpu_check.sh OUT_DIR
#
# 1. the `cuda`-marked tests (python -m pytest -m cuda);
# 2. `dreamsr bench` with the sr3-div2k preset (random init), bf16, 512x512 -> 2048x2048 (225 tiles) at 20 steps:
#    tile batches 75 and 225 against the naive path (fp32, one tile per call, merged at the end);
# 3. the training section alone (p=inf vs p=1, batch 16, 128 px crops, the loop's own precision: bf16 on CUDA);
# 4. sampling at 100 steps (bf16, batches 75 and 225, one repeat, no naive path: its ratio comes from part 2).
# Each bench part is its own process with its own JSON, so a part that runs out of time loses only itself.
#
# Writes into OUT_DIR (flat, 8 files, the most the device tool returns): summary.txt (environment, exit codes and
# a digest with the targets), pytest.log, bench-20.{json,log}, bench-train.{json,log}, bench-100.{json,log}.
# Every part runs under `timeout`, and the whole stays within BUDGET_S (480 s = 8 minutes) of wall time: a part
# only starts with the time left, and is skipped below 30 s.
# Needs python3 with torch (CUDA), typer, rich, pillow, safetensors, huggingface_hub, pytest; the package is
# used from this checkout (PYTHONPATH), nothing is installed or downloaded.
# DRY_RUN=1 runs the same steps on the CPU at toy sizes (tiny preset): a check of this script, not of a GPU.
set -uo pipefail

OUT=${1:?usage: bash scripts/gpu_check.sh OUT_DIR}
BUDGET_S=${BUDGET_S:-480}
PY=${PYTHON:-python3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$ROOT"
# Sizes and time limits can be shrunk through the environment (a short lease): GPU_LR, GPU_B20, GPU_REPEATS,
# SKIP_100=1 (drop part 4), and PYTEST_S / BENCH20_S / TRAIN_S / BENCH100_S (seconds per part).
DEV=cuda PRESET=sr3-div2k LR=${GPU_LR:-512} TILES=(--tile 40 --overlap 5) S20=20 S100=100 B20=${GPU_B20:-75,225}
B100=75,225 REPEATS=${GPU_REPEATS:-2}
TRAIN=(--train-batch 16 --train-patch 128 --train-steps 8 --train-warmup 3 --train-rounds 2) EXTRA=()
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 COLUMNS=160
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
T0=$(date +%s)
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"

left() { echo $((BUDGET_S - ($(date +%s) - T0))); }

# run NAME WANTED_S CMD...: run CMD under timeout min(WANTED_S, time left - 5), log to OUT/NAME.log, note rc.
run() {
  local name=$1 want=$2; shift 2
  local budget=$(( $(left) - 5 ))
  (( budget < want )) && want=$budget
  if (( want < 30 )); then
    echo "$name: skipped (only $(left) s of the ${BUDGET_S} s budget left)" | tee -a "$SUMMARY"
    return 0
  fi
  local t=$(date +%s)
  timeout -k 10 "$want" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  local msg="$name: exit $rc in $(( $(date +%s) - t )) s (limit $want s)"
  (( rc == 124 || rc == 137 )) && msg="$msg TIMED OUT"
  echo "$msg" | tee -a "$SUMMARY"
  return 0
}

{
  echo "date: $(date -u +%FT%TZ)"
  echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo '?') $(git status --porcelain 2>/dev/null | wc -l) changed file(s)"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,utilization.gpu \
    --format=csv 2>&1 || echo "nvidia-smi failed"
  "$PY" - <<'EOF' 2>&1
import torch, platform
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
print("cuda available:", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu:", p.name, round(p.total_memory / 2**30, 1), "GiB,", p.multi_processor_count, "SMs, bf16:",
          torch.cuda.is_bf16_supported())
for m in ("typer", "rich", "PIL", "safetensors", "huggingface_hub", "pytest", "numpy"):
    try:
        __import__(m)
        print("ok", m)
    except Exception as e:  # noqa: BLE001
        print("MISSING", m, e)
EOF
} >>"$SUMMARY"
cat "$SUMMARY"
if [[ ${DRY_RUN:-0} == 1 ]]; then
  echo "DRY RUN on the CPU at toy sizes: these figures say nothing about a GPU" | tee -a "$SUMMARY"
  DEV=cpu PRESET=tiny LR=12 TILES=(--tile 8 --overlap 2) S20=2 S100=3 B20=2,4 B100=4
  TRAIN=(--train-batch 2 --train-patch 16 --train-steps 2 --train-warmup 1 --train-rounds 1) EXTRA=(--threads 1)
elif ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no CUDA GPU visible to $PY: nothing to check" | tee -a "$SUMMARY"
  exit 1
fi

# 1. cuda-marked tests (collection errors in unrelated test files must not hide them; all skip without a GPU)
run pytest "${PYTEST_S:-90}" "$PY" -m pytest -m cuda -p no:cacheprovider --continue-on-collection-errors -q -rs tests
tail -n 3 "$OUT/pytest.log" | sed 's/^/  /' | tee -a "$SUMMARY"

BENCH=("$PY" -m dreamsr bench --preset "$PRESET" --device "$DEV" --precision bf16 --lr-size "$LR" "${TILES[@]}" "${EXTRA[@]}")

# 2. 20 steps: the speed-up over the naive path and the tile batch sizes
run bench-20 "${BENCH20_S:-170}" "${BENCH[@]}" --steps "$S20" --batch "$B20" --repeats "$REPEATS" --sections sampling,efficiency \
  --json "$OUT/bench-20.json"

# 3. training: DREAM vs standard steps
run bench-train "${TRAIN_S:-110}" "${BENCH[@]}" --sections training,efficiency "${TRAIN[@]}" --json "$OUT/bench-train.json"

# 4. 100 steps: the sampling loop's efficiency (fraction of the bf16 peak)
if [[ ${SKIP_100:-0} == 1 ]]; then
  echo "bench-100: skipped (SKIP_100=1)" | tee -a "$SUMMARY"
else
  run bench-100 "${BENCH100_S:-120}" "${BENCH[@]}" --steps "$S100" --batch "$B100" --repeats 1 --no-naive \
    --sections sampling,efficiency --json "$OUT/bench-100.json"
fi

"$PY" - "$OUT" <<'EOF' 2>&1 | tee -a "$SUMMARY"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
for name in ("bench-20.json", "bench-train.json", "bench-100.json"):
    p = out / name
    if not p.is_file():
        print(f"{name}: missing")
        continue
    r = json.loads(p.read_text())
    sp = r.get("sampling") or {}
    print(f"{name}: {r['machine'].get('gpu')}, {r['model']['source']}"
          + (f", {sp['steps']} steps, {sp['lr_size']} -> {sp['out_size']}" if sp else ""))
    eff = {(e["path"], e["precision"], e["batch"]): e for e in (r.get("efficiency") or {}).get("sampling", [])}
    for run in sp.get("runs", []):
        e = eff.get((run["path"], run["precision"], run["batch"]), {})
        frac = e.get("fraction_of_peak")
        print(f"  {run['path']:7s} {run['precision']} b{run['batch']:<4d} median {run['time']['median_s']:8.2f} s  "
              f"{run['tiles_per_s']:8.1f} tiles/s  {run['s_per_out_mp']:7.3f} s/MP  "
              f"{e.get('achieved_tflops', float('nan')):6.1f} TFLOP/s"
              + (f" ({100 * frac:.1f}% of peak)" if frac is not None else "")
              + (f"  x{run['speedup_vs_naive']:.2f} vs naive" if "speedup_vs_naive" in run else "")
              + f"  peak {run['memory']['peak_mib']:.0f} MiB")
    tr = r.get("training")
    if tr:
        for run in tr["runs"]:
            print(f"  train {run['objective']:8s} b{tr['batch']} {tr['patch']}px {tr['precision']}: "
                  f"{run['step']['median_s'] * 1e3:.1f} ms/step, {run['images_per_s']:.0f} images/s, "
                  f"peak {run['memory']['peak_mib']:.0f} MiB")
        print(f"  DREAM / standard: {tr['dream_over_standard']:.3f}")
    for t in r.get("targets", []):
        met = {True: "met", False: "MISSED", None: "-"}[t["met"]]
        print(f"  target: {t['name']}: {t['value']:.3f} {t['op']} {t['target']} -> {met}")
EOF
echo "total: $(( $(date +%s) - T0 )) s of ${BUDGET_S} s" | tee -a "$SUMMARY"
