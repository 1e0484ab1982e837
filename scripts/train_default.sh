#!/usr/bin/env bash
# Rebuild the offline corpus and retrain the default x4 model (dreamsr-x4-small), then write its model card.
#
#   bash scripts/train_default.sh [WORK_DIR]        (default: ./work-default)
#
# The shipped model was made in three stages (docs/models.md):
#   1. 2431 DREAM steps at batch 32 on 64 px crops, lr 2e-4 (on an H200 shared with nine other runs: 6.2 min;
#      about 2.7 h on two idle CPU cores). The step count is where that run's 6.2-minute time limit stopped it.
#   2. 4000 fine-tuning steps from stage 1's EMA weights (--init-weights), batch 8, lr 1e-4 with a cosine decay,
#      seed 1 (on one CPU thread: about 85 min).
#   3. 24000 fine-tuning steps from stage 2's EMA weights, batch 8, bf16 autocast on the CPU, seed 2. The run was
#      planned for 9000 steps and its schedule extended twice with --resume (at step 2000 to 15000, at 15000 to
#      24000; the cosine follows each new --steps from that point); --stop-at replays that exactly.
#      2 h 56 min of wall time on two CPU threads of an AMX Xeon VM (median 0.37-0.41 s per step; the first 1510
#      steps ran on one thread). fp32 is about 2x slower per step there (docs/benchmarks.md); on a CPU
#      without AMX set S3_PRECISION=fp32, since bf16 autocast without hardware support is slower still.
# Every stage resumes from its run folder (--resume auto), so the script is safe to rerun after an
# interruption. Set DEVICE=cuda to force the GPU (default: auto). Numbers will not be bit-identical to the
# shipped file across devices or thread counts.
# Needs: sudo apt-get install lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 mate-backgrounds
set -euo pipefail
work="${1:-work-default}"
device="${DEVICE:-auto}"
s3_precision="${S3_PRECISION:-bf16}"
mkdir -p "$work"
[ -d "$work/corpus/train" ] || python scripts/build_corpus.py "$work/corpus"
# centre 256x256 crops of the validation photos: what the model card's table is measured on
python - "$work/corpus" <<'PY'
import sys
from pathlib import Path
from PIL import Image
root = Path(sys.argv[1]); out = root / "val_crops"; out.mkdir(exist_ok=True)
for f in sorted((root / "val").glob("*.png")):
    im = Image.open(f).convert("RGB"); w, h = im.size; s = 256
    im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).save(out / f.name)
PY
common=(--dataset folder --data-dir "$work/corpus/train" --val-dir "$work/corpus/val" --family sr3 --target residual
        --preset small --patch 64 --scale 4 --p 1 --ema-decay 0.999 --lr-warmup 100 --workers 1 --val-count 7
        --val-crop 128 --val-steps 20 --device "$device" --precision fp32 --export-dtype fp16 --resume auto)
# stage 1
dreamsr train "${common[@]}" --batch-size 32 --lr 2e-4 --lr-schedule constant --steps 2431 --seed 0 --save-every 250 --keep 2 \
  --val-every 2000 --run-dir "$work/stage1"
# stage 2 (one thread per process avoids OpenMP spin-wait collapse when the two cores are shared)
dreamsr train "${common[@]}" --batch-size 8 --lr 1e-4 --lr-schedule cosine --steps 4000 --seed 1 \
  --save-every 250 --keep 2 --val-every 2500 --threads 1 --init-weights "$work/stage1/model.safetensors" \
  --run-dir "$work/stage2"
# stage 3 (bf16 autocast: about 2x faster than fp32 on CPUs with AMX)
s3=(--batch-size 8 --lr 1e-4 --lr-schedule cosine --seed 2 --save-every 500 --keep 2 --val-every 2000 --threads 2
    --precision "$s3_precision" --init-weights "$work/stage2/model.safetensors" --run-dir "$work/stage3")
dreamsr train "${common[@]}" "${s3[@]}" --steps 9000 --stop-at 2000
dreamsr train "${common[@]}" "${s3[@]}" --steps 15000
dreamsr train "${common[@]}" "${s3[@]}" --steps 24000
# the model card's tables (bicubic; DDIM and DDPM at 10/20/50/100 steps; truncated start and back-projection;
# 4-fold self-ensemble on top of the recommended setting)
python scripts/model_card.py "$work/stage3/model.safetensors" "$work/corpus/val_crops" "$work/card" \
  --option-steps 10,20 --ensemble 4
# the shipped file: fp16 with the recommended sampling in its metadata; prints the weights.toml fields
python scripts/package_model.py "$work/stage3/model.safetensors" "$work/dreamsr-x4-small.safetensors" \
  --steps 10 --start 500 --back-project
