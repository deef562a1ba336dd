#!/usr/bin/env bash
# Regenerate the shipped tiny models (models/README.md): `make models`.
# Deterministic: a step-based schedule on a world generated from fixed seeds. About 40 minutes
# on 2 idle CPU cores. Writes src/densevlm/resources/weights/tiny-{student,teacher}.safetensors.
set -euo pipefail
cd "$(dirname "$0")/.."
DENSEVLM=${DENSEVLM:-.venv/bin/densevlm}
WORK=${WORK:-/tmp/densevlm-models}
OUT=src/densevlm/resources/weights
mkdir -p "$WORK" "$OUT"
# 20k pretraining scenes (seed 1; held-out sets use seeds >= 2,000,000)
[ -f "$WORK/pool/panoptic.json" ] || $DENSEVLM synth --out "$WORK/pool" --n 20000 --seed 1
# student: web-like captions that rarely name the background -> foreground-biased
$DENSEVLM pretrain --data "$WORK/pool" --arch tiny-vit --steps 2000 --batch-size 64 --lr 1e-3 --p-stuff 0.15 \
    --seed 0 --half --out "$OUT/tiny-student.safetensors"
# teacher: region-aware (half the samples are random crops captioned from their own ground truth)
# and stuff-rich captions, the embedded world's stand-in for a strong P-VLM
$DENSEVLM pretrain --data "$WORK/pool" --arch tiny-vit --steps 2000 --batch-size 64 --lr 1e-3 --p-stuff 0.5 \
    --crop-prob 0.5 --seed 1 --half --out "$OUT/tiny-teacher.safetensors"
rm -f "$OUT"/*.resume.pt
.venv/bin/python benchmarks/model_card.py
