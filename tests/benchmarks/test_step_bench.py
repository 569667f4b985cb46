"""pytest-benchmark suite: one DCT optimisation step on the CPU, per backprop depth and checkpointing mode.

The step is bench.cells.step.TokenStep (train_token's epoch body: dct_loss -> backward -> loss-scale
check -> optimiser step on the token) on a tiny random-weight Stable Diffusion pipeline (the tests'
`tiny_sd_dir`, so it runs before the tiny world is committed) guided by a tiny random timm classifier.

As plain tests (pytest's addopts has --benchmark-disable) each case runs one step and checks it; timed:

    OMP_NUM_THREADS=1 pytest tests/benchmarks --benchmark-enable --benchmark-only \\
        --benchmark-compare=tests/benchmarks/baseline.json --benchmark-compare-fail=median:100% \\
        --benchmark-columns=median,iqr,rounds --benchmark-sort=name

and to record a new baseline (commit it with the reason, e.g. a change to dct/rollout.py):

    OMP_NUM_THREADS=1 pytest tests/benchmarks --benchmark-enable --benchmark-only \\
        --benchmark-json=tests/benchmarks/baseline.json

The baseline was taken on a shared, busy 2-core machine (hence the 100% threshold, which still catches a
step that doubles, e.g. a second recompute): compare ratios between cases of one run before
trusting an absolute regression, and rerun a failing comparison once.
"""

from __future__ import annotations

import math

import pytest
import torch

STEPS = 8  # DDIM steps = UNet calls per rollout
DEPTHS = [1, 4, "full"]
MODES = ["none", "block", "step", "both"]


@pytest.fixture(scope="module")
def setup(tiny_sd_dir, classifier):
    from bench.cells.step import Setup
    from dct.config import PAPER_TEMPLATES
    from dct.pipeline import load_parts

    parts = load_parts(str(tiny_sd_dir))
    return Setup(parts=parts, classifier=classifier, target=3, class_name="three", templates=PAPER_TEMPLATES)


def _config(depth, checkpointing):
    from bench.cells.step import validate

    # fp32: CPU half-precision kernels are slower and noisier than the cost being measured
    return validate({"arch": "tiny", "weights": "random", "steps": STEPS, "depth": depth, "guidance": 7.0,
                     "checkpointing": checkpointing, "precision": "fp32", "batch": 2, "images_per_update": 2,
                     "classifier": "tiny-random", "seed": 0})


@pytest.mark.benchmark(group="dct-step", min_rounds=5, warmup=True)
@pytest.mark.parametrize("checkpointing", MODES)
@pytest.mark.parametrize("depth", DEPTHS)
def test_dct_step(benchmark, setup, depth, checkpointing):
    from bench.cells.step import TokenStep

    runner = TokenStep(setup, _config(depth, checkpointing))
    try:
        torch.manual_seed(0)
        row = benchmark.pedantic(runner.step, args=(0,), rounds=5, warmup_rounds=1, iterations=1)
    finally:
        runner.close()
    assert row["grad_status"] == "ok" and math.isfinite(row["grad_norm"]) and row["grad_norm"] > 0
    assert row["grad_calls"] == (STEPS if depth == "full" else depth) and row["unet_calls"] == STEPS
    benchmark.extra_info.update(grad_calls=row["grad_calls"], unet_calls=row["unet_calls"],
                                checkpointing=checkpointing, batch=2)
