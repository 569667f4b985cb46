#!/usr/bin/env bash
# Regenerate the committed reference run of the tiny world: the DCT target on all 10 classes, the depth,
# classifier, transfer and augmentation grids, their figures and one report. Run from anywhere, in the project's venv:
#     bash results/reference/regenerate.sh
# Finished cells are skipped (the stores are resumable); delete a store to recompute it.
set -euo pipefail
cd "$(dirname "$0")/../.."
R=results/reference
# 10 classes x 3 training runs per cell, reporting seeds 70000+, 2 cells at a time with one thread each
# (about 15 minutes each on 2 cores; the single-run stores they replaced are under $R/archive/)
for name in depth world-target classifier transfer; do
  dct bench run --spec "ablations/$name.toml" --store "$R/$name"
done
# DCT against prompt search, textual inversion and classifier guidance, both domains (18 cells; README
# "DCT against its alternatives"), then its full-size cost columns from the planner (results/plan/methods)
dct bench methods --store "$R/methods"
python -m bench.plan.methods --store "$R/methods" --out results/plan/methods
# the paper preset with and without its reference clipping, at the reference lr and at a learning one
# (about 45 minutes as two processes on two stores with --only, their part files then copied into one;
# measured before cells had replicates: the dct cell's new settings give its cells new hashes, so this
# line would now re-run them with 3 training runs each, about three times as long)
OMP_NUM_THREADS=1 dct bench run --spec ablations/paper-fidelity.toml --store "$R/paper-fidelity"
# resumes per class; classes trained with another config or another build of the world are retrained
dct train --classes all --out tokens/bank-all.safetensors --overwrite
OMP_NUM_THREADS=1 dct bench augment --store "$R/augment"
# the 30-trial search of ablations/search.toml (about 30 minutes; resumable), its store and figures
# under results/reference/search/dct-search (its Optuna figures there; left out of the report for size)
OMP_NUM_THREADS=1 dct search --space ablations/search.toml --results "$R" --device cpu
for name in world-target depth classifier transfer augment paper-fidelity methods; do
  [ -d "$R/$name/cells" ] && dct figures --results "$R/$name"
done
dct report --results "$R/world-target" --results "$R/depth" --results "$R/classifier" --results "$R/transfer" --results "$R/augment" --results "$R/paper-fidelity" \
  --out "$R/report" --title "dct reference run: the tiny world on a 2-core CPU"
