#!/usr/bin/env bash
# Reproduces training/seed/seed_vit_tiny_domain_a.pth: the demo's seed model, a vit_tiny SAM
# trained from random weights by maskloop's own loop on synthetic domain-A scenes, on CPU.
#
#   training/seed/train_seed.sh [OUT]       # about 30 min on 2 CPU cores with native bf16
#   BF16=0 training/seed/train_seed.sh      # fp32: for CPUs without AVX512-BF16 / AMX, where
#                                           # emulated bf16 is several times slower; gives a
#                                           # similar seed, not the committed file's bits
#
# Progressive resolution: most steps run at a 256 input (16x fewer image tokens, each step an
# order of magnitude cheaper), then the weights move to the real 1024 input (position tables
# resampled, training/loop/resize.py) for a short final stage.
#   1. 256 input, first prompt only (1 iteration): learn to segment from one point or box;
#   2. 256 input, the paper's 11-iteration simulated interaction: learn to use added points
#      and the previous mask;
#   3. 1024 input, 5 iterations: adapt to the full-size token grid.
# Every stage is deterministic for its seed; rerunning gives the same file on the same
# machine and library versions.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-training/seed/seed_vit_tiny_domain_a.pth}
WORK=${WORK:-var/seed-train}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$WORK"
common=(--arch vit_tiny --domain A --scenes 400 --scope full --checkpoint-every 200)
# The committed seed was trained under bf16 autocast; the trainer warns where it is emulated.
if [[ "${BF16:-1}" != 0 ]]; then common+=(--bf16); fi

"$PY" -m training.loop.train_cli "${common[@]}" --image-size 256 --steps 4000 --lr 1e-3 \
    --warmup-steps 50 --decay-steps 3400 --iterations 1 --masks-per-image 16 \
    --work-dir "$WORK/stage1" --out "$WORK/stage1.pth"
"$PY" -m training.loop.train_cli "${common[@]}" --image-size 256 --steps 600 --lr 3e-4 \
    --decay-steps 500 --iterations 11 --masks-per-image 8 --init "$WORK/stage1.pth" \
    --work-dir "$WORK/stage2" --out "$WORK/stage2.pth"
"$PY" -m training.loop.train_cli "${common[@]}" --steps 250 --lr 2e-4 --decay-steps 200 \
    --iterations 5 --masks-per-image 8 --init "$WORK/stage2.pth" \
    --work-dir "$WORK/stage3" --out "$OUT"
