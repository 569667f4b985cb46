#!/usr/bin/env bash
# Regenerate the committed reference run of the tiny world: the depth, classifier, transfer and
# augmentation grids, their figures and one report. Run from anywhere, in the project's venv:
#     bash results/reference/regenerate.sh
# Finished cells are skipped (the stores are resumable); delete a store to recompute it.
set -euo pipefail
cd "$(dirname "$0")/../.."
R=results/reference
for name in depth classifier transfer; do
  dct bench "$name" --store "$R/$name"
done
[ -f tokens/bank-all.safetensors ] || dct train --classes all --out tokens/bank-all.safetensors
OMP_NUM_THREADS=1 dct bench augment --store "$R/augment"
for name in depth classifier transfer augment; do
  [ -d "$R/$name/cells" ] && dct figures --results "$R/$name"
done
dct report --results "$R/depth" --results "$R/classifier" --results "$R/transfer" --results "$R/augment" \
  --out "$R/report" --title "dct reference run: the tiny world on a 2-core CPU"
