#!/usr/bin/env bash
# Regenerate the shipped tiny models (models/README.md): `make models`.
# Deterministic (step-based schedules, fixed seeds). About 50 + 70 minutes on 2 idle CPU cores: 50 for
# tiny-student, tiny-teacher and tiny-teacher-parts; 70 for tiny-teacher-l (the default teacher: pool 3 min,
# pretraining about 50, CLIPSelf about 13). Its two long steps save every 250 / 50 steps and resume: after a
# stop, run it again. Writes src/densevlm/resources/weights/tiny-{student,teacher,teacher-parts,teacher-l}.safetensors
# and prints the card numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DENSEVLM=${DENSEVLM:-.venv/bin/densevlm}
WORK=${WORK:-/tmp/densevlm-models}
OUT=src/densevlm/resources/weights
mkdir -p "$WORK" "$OUT"
# 20k pretraining scenes (world seed 1; held-out sets use seeds >= 2,000,000)
[ -f "$WORK/pool/panoptic.json" ] || $DENSEVLM synth --out "$WORK/pool" --n 20000 --seed 1
# student: captions that name every part and never the background -> a foreground-biased CLIP
# (see models/README.md for the settings that did not show the bias)
$DENSEVLM pretrain --data "$WORK/pool" --arch tiny-vit --steps 800 --batch-size 64 --lr 1e-3 --p-stuff 0 \
    --seed 0 --half --out "$OUT/tiny-student.safetensors"
# teacher, step 1: region-aware pretraining (half the samples are random crops captioned from
# their own ground truth) with captions that name the background half the time
$DENSEVLM pretrain --data "$WORK/pool" --arch tiny-vit --steps 2000 --batch-size 64 --lr 1e-3 --p-stuff 0.5 \
    --crop-prob 0.5 --seed 1 --half --out "$WORK/teacher-base.safetensors"
# teacher, step 2: CLIPSelf-tune its dense features on the same (unlabeled) images, as the paper's
# P-VLM is a CLIPSelf-tuned model; its dense RoI features then name regions well
$DENSEVLM train --method clipself --student "$WORK/teacher-base.safetensors" --images "$WORK/pool" --steps 300 \
    --lr 2e-4 --batch-size 32 --max-boxes 8 --regions grid --alpha 0.9 --seed 0 --out "$WORK/teacher-clipself"
$PY -c "
import sys
from pathlib import Path
from densevlm.model import load_model
from densevlm.training.pretrain import save_model
model = load_model(sys.argv[1])
save_model(model, Path(sys.argv[2]), {'built_by': 'scripts/build_models.sh'}, half=True)
" "$WORK/teacher-clipself/last.pt" "$OUT/tiny-teacher.safetensors"
# region-aware teacher (tiny-teacher-parts): continue the teacher's pretraining with part-centred
# region-text pairs, then CLIPSelf-tune it on mixed regions (grid cells + colour superpixels)
$DENSEVLM pretrain --data "$WORK/pool" --arch "$OUT/tiny-teacher.safetensors" --steps 600 --batch-size 64 --lr 3e-4 \
    --p-stuff 0.5 --crop-prob 0.3 --part-crop-prob 0.3 --seed 2 --threads 2 --out "$WORK/teacher-parts-base.safetensors"
$DENSEVLM train --method clipself --student "$WORK/teacher-parts-base.safetensors" --images "$WORK/pool" --steps 300 \
    --lr 2e-4 --batch-size 32 --max-boxes 12 --regions mixed --alpha 0.9 --seed 0 --out "$WORK/teacher-parts-clipself"
$PY -c "
import sys
from pathlib import Path
from densevlm.model import load_model
from densevlm.training.pretrain import save_model
model = load_model(sys.argv[1])
save_model(model, Path(sys.argv[2]), {'built_by': 'scripts/build_models.sh'}, half=True)
" "$WORK/teacher-parts-clipself/last.pt" "$OUT/tiny-teacher-parts.safetensors"
# the default teacher (tiny-teacher-l), a P-VLM-like model: it relates to the student as the paper's
# CLIPSelf-tuned EVA02-L-336 to EVA02-B -- a larger image tower (tiny-vit-l: width 192, 6 blocks, 3.4x
# tiny-vit's compute), twice the pretraining scenes and 3.75x the steps, region-aware (random crops and
# part-centred boxes captioned from their own ground truth), then CLIPSelf on mixed regions at lr 1e-3,
# saved as the weight-space ensemble alpha 0.85
[ -f "$WORK/pool-l/panoptic.json" ] || $DENSEVLM synth --out "$WORK/pool-l" --n 40000 --seed 1
[ -f "$WORK/teacher-l-base.safetensors" ] || $DENSEVLM pretrain --data "$WORK/pool-l" --arch tiny-vit-l \
    --steps 3000 --batch-size 64 --lr 1e-3 --p-stuff 0.5 --crop-prob 0.35 --part-crop-prob 0.3 --seed 1 --threads 2 \
    --save-every 250 --resume --out "$WORK/teacher-l-base.safetensors"
$DENSEVLM train --method clipself --student "$WORK/teacher-l-base.safetensors" --images "$WORK/pool-l" --steps 300 \
    --lr 1e-3 --batch-size 32 --max-boxes 12 --regions mixed --alpha 0.85 --seed 0 --save-every 50 --resume \
    --out "$WORK/teacher-l-clipself"
$PY -c "
import sys
from pathlib import Path
from densevlm.model import load_model
from densevlm.training.pretrain import save_model
model = load_model(sys.argv[1])
save_model(model, Path(sys.argv[2]), {'built_by': 'scripts/build_models.sh'}, half=True)
" "$WORK/teacher-l-clipself/last.pt" "$OUT/tiny-teacher-l.safetensors"
rm -f "$OUT"/*.resume.pt
# plant words (synth --plant-words): no caption names them, so pretraining never gave them a token;
# give each its own untrained token, as a BPE CLIP has for any word (seeded rows with the trained
# rows' statistics; every other weight and every known word's embedding unchanged)
$PY -c "
import sys
from densevlm.backbones.tiny import add_words_to_checkpoint
from densevlm.data.synth.categories import PLANT
for path in sys.argv[1:]:
    print(path, 'new words:', add_words_to_checkpoint(path, [c.name for c in PLANT], path, seed=0))
" "$OUT/tiny-student.safetensors" "$OUT/tiny-teacher.safetensors" "$OUT/tiny-teacher-parts.safetensors" \
    "$OUT/tiny-teacher-l.safetensors"
$PY benchmarks/model_card.py
$PY benchmarks/model_card.py --student tiny-student --teacher tiny-teacher-parts
$PY benchmarks/model_card.py --student tiny-student --teacher tiny-teacher-l
