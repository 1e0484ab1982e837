#!/usr/bin/env bash
# Every number of the dreamsr-x4-resshift model card, generated (nothing typed by hand). Two phases:
#
#   bash scripts/default_card.sh val  CORPUS OUT RUN [compare_candidates options, e.g. --threads 1 --no-speed]
#       the sampling sweep on the validation crops that picks the recommendation -> OUT/val-sampling/
#   bash scripts/default_card.sh card CORPUS OUT RUN_P1 RUN_PINF STAGE1_P1 STAGE1_PINF PACKAGED "k=v,..."
#       by-stage table (validation), test-set table, timings and the figure -> OUT/{stages,test,timings.md,figure.jpg}
#
# (Row labels cannot hold "=": it separates a label from its weights.)
# CORPUS: scripts/build_corpus.py's output. RUN_*: stage-2 run folders (model.safetensors inside); STAGE1_*: the
# first stage's runs (scripts/candidates.sh); PACKAGED: the shipped file (packaged from the run chosen on the
# validation crops); "k=v,...": its recommended sampling, as given to scripts/package_model.py (for the rows that
# sample the other runs the same way).
# The test crops are read only in the "card" phase, after everything was chosen.
set -euo pipefail
phase=$1; corpus=$2; out=$3; p1=$4
mkdir -p "$out"
old=dreamsr/assets/dreamsr-x4-small.safetensors

if [ "$phase" = val ]; then
  w=$p1/model.safetensors specs=()
  for s in 15 8 5 4 3 2 1; do
    specs+=("steps $s=$w@steps=$s,back_project=0" "steps $s + BP=$w@steps=$s,back_project=1")
  done
  specs+=("start 8, 4 steps + BP=$w@start=8,steps=4,back_project=1"
          "2 steps + BP, ensemble 2=$w@steps=2,back_project=1,ensemble=2"
          "2 steps + BP, ensemble 4=$w@steps=2,back_project=1,ensemble=4"
          "1 step + BP, ensemble 2=$w@steps=1,back_project=1,ensemble=2"
          "1 step + BP, ensemble 4=$w@steps=1,back_project=1,ensemble=4"
          "1 step + BP, ensemble 8=$w@steps=1,back_project=1,ensemble=8")
  python scripts/compare_candidates.py "$corpus/val_crops" "$out/val-sampling" --vif --threads 2 "${@:5}" "${specs[@]}"
  exit 0
fi

pinf=$5; s1=$6; s1inf=$7; packaged=$8; rec=$9
# by stage, on the validation crops, each at the recommended sampling
python scripts/compare_candidates.py "$corpus/val_crops" "$out/stages" --vif --threads 2 \
  "stage 1: 64² crops, lr 1e-4, DREAM p: 1=$s1/model.safetensors@$rec" \
  "stage 1, standard p: inf=$s1inf/model.safetensors@$rec" \
  "stage 2: + 128² crops, cosine lr, DREAM p: 1=$p1/model.safetensors@$rec" \
  "stage 2, standard p: inf=$pinf/model.safetensors@$rec" \
  "packaged (fp16), its recommendation=$packaged" \
  "dreamsr-x4-small (old default)=$old"
# the test set: final numbers only
python scripts/compare_candidates.py "$corpus/test_crops" "$out/test" --vif --threads 2 \
  "dreamsr-x4-small (old default)=$old" \
  "dreamsr-x4-resshift (new default)=$packaged" \
  "dreamsr-x4-resshift, all 15 steps, no BP, no ensemble=$packaged@steps=15,back_project=0,ensemble=1" \
  "same recipe, DREAM p: 1=$p1/model.safetensors@$rec" \
  "same recipe, standard p: inf=$pinf/model.safetensors@$rec"
python scripts/per_image_table.py "$out/test/per-image.md" "bicubic=$out/test/bicubic" \
  "dreamsr-x4-small=$out/test/dreamsr-x4-small_(old_default)" \
  "dreamsr-x4-resshift=$out/test/dreamsr-x4-resshift_(new_default)"
python scripts/candidates_figure.py "$out/figure.jpg" Aqua.png,FreshFlower.png,Wine_by_Jakkub_Mede.png --lr \
  "dreamsr-x4-small (old)=$out/test/dreamsr-x4-small_(old_default)" \
  "dreamsr-x4-resshift (new)=$out/test/dreamsr-x4-resshift_(new_default)"

# wall time of the CLI, fp32, 2 threads: a 512x384 photo to 2048x1536, and the README example
python - "$corpus/val/coffee.png" "$out/photo-512x384.png" <<'PY'
import sys
from PIL import Image
im = Image.open(sys.argv[1]).convert("RGB"); w, h = im.size
im.crop(((w - 512) // 2, (h - 384) // 2, (w - 512) // 2 + 512, (h - 384) // 2 + 384)).save(sys.argv[2])
PY
flags=$(grep -o -w 'avx2\|avx512f\|avx512_bf16\|amx_bf16' /proc/cpuinfo | sort -u | tr '\n' ' ')
{
  echo "| job | model | ISA | wall s (2 threads, fp32) |"; echo "|---|---|---|---:|"
  for isa in native avx2; do
    envs=(); [ $isa = avx2 ] && envs=(ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2)
    for m in dreamsr-x4-resshift dreamsr-x4-small; do
      for job in photo example; do
        img=$out/photo-512x384.png; [ $job = example ] && img=dreamsr/assets/examples/chelsea_lr.png
        rm -rf "$out/tmp-up"
        t0=$(date +%s.%N)
        env "${envs[@]}" OMP_NUM_THREADS=2 python -m dreamsr upscale "$img" --model $m --precision fp32 -o "$out/tmp-up" -q
        t1=$(date +%s.%N)
        echo "| $job ($(python -c "from PIL import Image; w,h=Image.open('$img').size; print(f'{w}x{h} -> {4*w}x{4*h}')")) | $m | $isa | $(python -c "print(f'{$t1 - $t0:.1f}')") |"
      done
    done
  done
  echo; echo "CPU flags: $flags; $(nproc) cores; wall time of the whole command (start-up included)."
  echo "ISA avx2: this CPU with ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 (AVX-512 off)."
} > "$out/timings.md"
rm -rf "$out/tmp-up"
cat "$out/timings.md"
