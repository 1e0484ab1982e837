#!/usr/bin/env bash
# How dreamsr-x4-resshift was made, start to finish, on two CPU cores (about 2 h 40 min of wall time):
#
#   bash scripts/train_resshift_default.sh WORK
#
# 1. the corpus and its written split (scripts/build_corpus.py; needs the Debian wallpaper packages and the
#    matplotlib/scikit-image/scikit-learn wheels);
# 2. stage 1 = the equal-CPU-time candidate round (scripts/candidates.sh, 15 single-thread minutes per candidate;
#    ResShift in the x4 unshuffle space, DREAM p = 1, 64² HR crops, lr 1e-4: 7031 steps; p = inf: 8829 steps);
# 3. stage 2 for p = 1 and, for the card's DREAM row, p = inf, from stage 1's EMA weights (fresh optimizer):
#    128² HR crops, batch 8, lr 2e-4 with 200 warm-up steps and a cosine decay to 2e-5, EMA 0.999, 14 000 steps,
#    one thread each (the two runs share the two cores);
# 4. the sampling sweep on the validation crops (scripts/default_card.sh val) -- pick the recommendation there,
#    then package it (scripts/package_model.py) and run scripts/default_card.sh card for the card's tables.
set -euo pipefail
work=${1:?work folder}
mkdir -p "$work"
[ -d "$work/corpus/train" ] || python scripts/build_corpus.py "$work/corpus"
bash scripts/candidates.sh "$work/corpus" "$work/stage1" 15
common=(--dataset folder --data-dir "$work/corpus/train" --patch 128 --batch-size 8 --lr 2e-4 --lr-warmup 200
        --lr-schedule cosine --ema-decay 0.999 --val-every 0 --workers 0 --cache-mb 2048 --threads 1
        --precision fp32 --seed 1 --family resshift --preset small --steps 14000 --save-every 1000 --keep 2
        --log-every 50)
python -m dreamsr train "${common[@]}" --p 1 --resume auto \
  --init-weights "$work/stage1/resshift-unshuffle/model.safetensors" -o "$work/stage2" > "$work/stage2.log" 2>&1 &
python -m dreamsr train "${common[@]}" --p inf --resume auto \
  --init-weights "$work/stage1/resshift-unshuffle-pinf/model.safetensors" -o "$work/stage2-pinf" \
  > "$work/stage2-pinf.log" 2>&1 &
wait
bash scripts/default_card.sh val "$work/corpus" "$work/card" "$work/stage2"
bash scripts/default_card.sh val "$work/corpus" "$work/card-pinf" "$work/stage2-pinf" --no-speed
# The choice made on the validation tables (docs/models/dreamsr-x4-resshift.md): the p = inf run, 1 step with
# back-projection and a 2-member self-ensemble (the cheapest row within 0.03 dB of the best one under the speed budget).
python scripts/package_model.py "$work/stage2-pinf/model.safetensors" dreamsr/assets/dreamsr-x4-resshift.safetensors \
  --steps 1 --back-project --ensemble 2
bash scripts/default_card.sh card "$work/corpus" "$work/card" "$work/stage2" "$work/stage2-pinf" \
  "$work/stage1/resshift-unshuffle" "$work/stage1/resshift-unshuffle-pinf" \
  dreamsr/assets/dreamsr-x4-resshift.safetensors steps=1,back_project=1,ensemble=2
