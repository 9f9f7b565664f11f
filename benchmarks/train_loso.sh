#!/usr/bin/env bash
# Leave-one-source-out (cheap version): for each demo source (the MNI152 T1, the fundus photograph, the IHC
# slide), train the x2 default's recipe on the corpus WITHOUT that source, for a short schedule, and package it
# as runs/loso/loso_<source>_x2.pt. `python benchmarks/bench_quality.py --sets loso` then scores each on the demo
# test items of the source it never saw, against cubic. Short trainings (EPOCHS, default 3 x 100
# iterations; no EMA, which lags a short run): a lower bound on what the full recipe does, not the default
# models themselves. EQUIVARIANT (default true, as the 2D defaults' RDNs; false: the plain RDN).
#   bash benchmarks/train_loso.sh                      # all three sources
#   EPOCHS=2 bash benchmarks/train_loso.sh skimage_ihc # one
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
EPOCHS="${EPOCHS:-3}"
EQUIVARIANT="${EQUIVARIANT:-true}"
SOURCES=("$@"); [ ${#SOURCES[@]} -gt 0 ] || SOURCES=(mni152_2009a_t1 skimage_retina skimage_ihc)
CORPUS="$(medsr demo --corpus --no-progress | tail -n 1)"
mkdir -p runs/loso
for S in "${SOURCES[@]}"; do
  DL="runs/loso/datalist_without_${S}.json"
  python - "$CORPUS" "$S" "$DL" <<'PY'
import json, os, sys
src, leave, out = sys.argv[1:]
d = json.load(open(src))
base = os.path.dirname(os.path.abspath(src))
absolute = lambda e: {k: (os.path.join(base, v) if k in ("image", "mask", "label") else v) for k, v in e.items()}
d = {k: ([absolute(e) for e in v if e.get("source") != leave] if isinstance(v, list) else v) for k, v in d.items()}
json.dump(d, open(out, "w"), indent=1)
PY
  CMD=(python -m monai.bundle run training --config_file bundles/rdn/train.json --output_dir "runs/loso/${S}"
    --datalist "$DL" --scale 2 --patch_size 64 --epochs "$EPOCHS" --degradation realistic --num_features 32
    --num_blocks 4 --num_layers 4 --growth_channels 16 --equivariant "$EQUIVARIANT" --residual_interp true
    --interp_mode bicubic --lr 0.001 --lr_schedule cosine --batch_size 4 --samples_per_image 2 --augment true
    --epoch_length 100 --max_val_items 0 --val_crop 256 --ema_decay 0)
  echo "+ ${CMD[*]}"; "${CMD[@]}"
  medsr models export rdn "runs/loso/${S}/latest/checkpoints/best_network.pt" "runs/loso/loso_${S}_x2.pt" \
    --name "loso_${S}_x2" --set scale=2 --set num_features=32 --set num_blocks=4 --set num_layers=4 \
    --set growth_channels=16 --set equivariant="$EQUIVARIANT" --set residual_interp=True --set interp_mode=bicubic \
    --set degradation=realistic \
    --training-command "${CMD[*]}" --trained-on "medsr corpus without ${S} (leave-one-source-out)"
done
