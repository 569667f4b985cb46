#!/usr/bin/env bash
# Full-size DCT step on one lent GPU (H100 or H200): the issue-7 target cells (bench/gpu/targets.toml)
# in priority order, then the anchor-layout CSV and the target verdicts. Finishes inside BUDGET_S
# (default 540 s) whatever happens: the grid runner is stopped with SIGTERM in time, keeps every cell
# it finished, and the export runs on what is there. See bench/gpu/README.md for the wheels and the call.
#
#   device tool:  run(command="bash bench/gpu/run_fullsize.sh", carry=[".whl"], timeout_s=600)
#   elsewhere:    BUDGET_S=3600 bash bench/gpu/run_fullsize.sh      (OUT defaults to results/gpu/out)
set -uo pipefail
start=$(date +%s)
budget=${BUDGET_S:-540}
out=${OUT:-results/gpu/out}
store=${STORE:-results/gpu/store}
spec=${SPEC:-bench/gpu/targets.toml}
device=${DEVICE:-cuda}  # SPEC and DEVICE let the script itself be smoke-tested on a CPU with a tiny spec
mkdir -p "$out" "$store"
exec > >(tee -a "$out/log.txt") 2>&1
elapsed() { echo $(( $(date +%s) - start )); }

# diffusers (and open_clip_torch, whose CLIP BPE vocabulary file the tokenizer is rebuilt from) are not
# installed on the GPU machine: they travel as wheels in .whl/ (README.md).
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 3; }
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false DCT_CACHE=${DCT_CACHE:-/tmp/dct-cache}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr -c 'A-Za-z0-9.\n_-' '-' | tr -s '-')
gpu=${gpu:-unknown-gpu}
python3 - <<'PY' || { echo "environment check failed"; exit 4; }
import torch, diffusers, transformers
print("torch", torch.__version__, "cuda", torch.version.cuda, "diffusers", diffusers.__version__,
      "transformers", transformers.__version__,
      "device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device")
# Built once here so that no cell's build phase pays for them: the tokenizers and the random ViT-L/16
# folder that the classifier registry loads (`hf:<folder>`, as a real one).
from dct.archs import tokenizer_dir, vit_l16_dir
tokenizer_dir("sd15"); tokenizer_dir("sd21base"); print("ViT-L/16 folder", vit_l16_dir())
PY
echo "setup done at $(elapsed) s"

# Leave 100 s for the component probe and the export. SIGTERM lets the runner record the finished cells
# and stop cleanly.
left=$(( budget - $(elapsed) - 100 ))
if [ "$left" -gt 30 ]; then
  timeout -s TERM -k 20 "$left" python3 -m bench.cli bench run --spec "$spec" --store "$store" \
    --device "$device" --no-progress
  echo "grid exit code $? at $(elapsed) s"
fi

# Saved activations and time per component at the full resolution (what the VAE decode and the
# unconditional half of a guided UNet call hold for backward; bench/gpu/probe_components.py).
if [ "$device" != "cpu" ]; then
  timeout -k 5 50 python3 -m bench.gpu.probe_components --arch sd15 --resolution 512 --precision fp16 \
    --device cuda --repeats 2 --json "$out/components-$gpu.json" || echo "component probe did not finish"
fi

python3 -m bench.gpu.targets "$store" --csv "$out/fullsize-$gpu.csv" --report "$out/targets-$gpu.md"
tar czf "$out/store-$gpu.tgz" -C "$(dirname "$store")" "$(basename "$store")"
echo "done at $(elapsed) s: $(ls "$out")"
