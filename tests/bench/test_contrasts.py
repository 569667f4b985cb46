"""Paired contrasts from stored outcomes: the right baseline cell, the same other settings, the same
classes, runs and seeds, or no contrast at all."""

import json

import numpy as np
import pandas as pd
import pytest

from bench import columns as C
from bench.contrasts import pack, unpack
from bench.contrasts import contrasts
from dct.eval.hierarchical import paired_difference


def row(depth, ckpt, token, *, seeds=(70000, 70001, 70002, 70003), measure="quality", status="ok"):
    config = {"depth": depth, "checkpointing": ckpt, "measure": measure}
    outcomes = {"classes": [1, 3], "eval_seeds": list(seeds), "train_seeds": [0, 1000], "token": pack(token),
                "plain": pack(np.zeros((2, 1, len(seeds))))}
    return {C.CONFIG_HASH: f"{depth}-{ckpt}", C.LABEL: f"depth={depth} checkpointing={ckpt}", C.STATUS: status,
            C.CONFIG_JSON: json.dumps(config), C.metric_col("outcomes"): json.dumps(outcomes),
            C.metric_col("measure"): measure,
            C.SPEC_AXES: json.dumps({"depth": [1, 4, "full"], "checkpointing": ["none", "both"]}),
            C.SPEC_BASELINE: json.dumps({"depth": 1, "checkpointing": "none"}),
            C.SPEC_QUALITY_NEUTRAL: json.dumps(["checkpointing"])}


def outcomes(p, seed):
    return (np.random.default_rng(seed).random((2, 2, 4)) < p).astype(float)


def test_each_level_is_paired_with_the_baseline_cell_of_the_same_other_settings():
    d1, d4, full = outcomes(0.3, 0), outcomes(0.6, 1), outcomes(0.9, 2)
    # the baseline cell last: it must be found by its level, not by its position
    cells = pd.DataFrame([row(4, "none", d4), row("full", "none", full), row(1, "none", d1),
                          # a cost cell (its joined outcomes are its quality cell's) and a failed cell: not contrasted
                          row("full", "both", full, measure="cost"), row(4, "both", d4, status="error")])
    frame = contrasts(cells, n_boot=500).set_index("level")
    assert list(frame.index) == [4, "full"] and set(frame["axis"]) == {"depth"}  # checkpointing is neutral
    for level, side in ((4, d4), ("full", full)):
        expected = paired_difference(side, d1, n_boot=500)
        got = frame.loc[level]
        assert (got["diff"], got["lo"], got["hi"]) == pytest.approx((expected["diff"], expected["lo"], expected["hi"]))
        assert got["baseline_cell"] == "1-none" and got["n_runs"] == 2 and got["n_images_per_run"] == 4
    assert np.array_equal(unpack(pack(full)), full)


def test_cells_judged_on_other_seeds_are_not_paired():
    cells = pd.DataFrame([row(1, "none", outcomes(0.3, 0)),
                          row(4, "none", outcomes(0.6, 1), seeds=(80000, 80001, 80002, 80003))])
    assert contrasts(cells).empty
