#!/usr/bin/env bash
# Rebuild the offline corpus and (re)train the default x4 model, then evaluate it on the held-out photos.
# Usage: bash scripts/train_default.sh [WORK_DIR]   (default: ./work-default)
# Safe to rerun: training resumes from the run folder's latest checkpoint (--resume auto).
# Needs: sudo apt-get install lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 mate-backgrounds
set -euo pipefail
work="${1:-work-default}"
steps="${STEPS:-30000}"
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
# One thread per process avoids OpenMP spin-wait collapse when the two cores are shared.
dreamsr train --dataset folder --data-dir "$work/corpus/train" --val-dir "$work/corpus/val" \
  --target residual --preset small --patch 64 --scale 4 --batch-size 8 --lr 2e-4 --p 1 \
  --steps "$steps" --save-every 250 --keep 3 --val-every 2000 --val-count 5 --val-crop 128 --val-steps 20 \
  --ema-decay 0.999 --run-dir "$work/run" --workers 1 --seed 0 --export-dtype fp16 --resume auto
for s in 10 20 50 100; do
  for sampler in ddim ddpm; do
    dreamsr eval --set folder --data-dir "$work/corpus/val_crops" --weights "$work/run/model.safetensors" \
      --scale 4 --steps "$s" --sampler "$sampler" --seed 0 --metrics psnr,ssim,consistency --convention both \
      --out "$work/eval/${sampler}-${s}" || true
  done
done
dreamsr eval --set folder --data-dir "$work/corpus/val_crops" --model bicubic --scale 4 \
  --metrics psnr,ssim,consistency --convention both --out "$work/eval/bicubic"
