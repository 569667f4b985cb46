"""A real search of DCT training on a tiny random pipeline (tiny_sd_dir, random timm classifier): the
paper and fast presets enqueued first, per-epoch intermediate values from the dct cell, trials stored as
grid cells, figures, and the best trial exported as a preset that `dct train --preset` accepts."""

import json
import tomllib

import optuna
import pytest
from typer.testing import CliRunner

from bench import columns as C
from bench import store as S
from bench.search.show import export_best
from bench.search.storage import study_store
from bench.search.study import ATTR_CONFIG, ATTR_PRESET, run_search

pytestmark = pytest.mark.slow

SPACE = """
[study]
name = "NAME"
objectives = "acc"
trials = 3
startup_trials = 1

[pruning]
startup_trials = 1
warmup_epochs = 0

[fixed]
model = "SD"
classifier = "timm:CLF"
judge = "timm:CLF"
classes = [1]
steps = 4
max_epochs = 2
precision = "fp32"
eval_seeds = 2
eval_seed_base = 10000
replicates = 1
fid = false

[templates]
two = ["a {}", "a photo of {}"]

[space.lr]
type = "float"
low = 0.001
high = 0.3
log = true

[space.depth]
type = "int"
low = 1
high = 4

[space.rollout_batch]
type = "categorical"
choices = [1, 2]

[space.grad_accum]
type = "int"
low = 1
high = 2

[space.init_word]
type = "categorical"
choices = ["a", "digit"]

[space.templates]
type = "categorical"
choices = ["default", "two"]
"""


def test_dct_search_smoke(tiny_sd_dir, tiny_timm_dir, tmp_path, monkeypatch, unique):
    import io

    from rich.console import Console

    monkeypatch.chdir(tmp_path)
    space = tmp_path / "space.toml"
    space.write_text(SPACE.replace("NAME", unique).replace("SD", str(tiny_sd_dir)).replace("CLF", str(tiny_timm_dir)))
    log = io.StringIO()
    result = run_search(space, device="cpu", heartbeat=5, console=Console(file=log, width=200))
    text = log.getvalue()
    study = result.study
    trials = study.get_trials()
    assert len(trials) == 3 and all(t.state != optuna.trial.TrialState.FAIL for t in trials), text

    # the presets first, as they are plus [fixed]; values outside the space kept from the preset
    paper, fast = trials[0], trials[1]
    assert paper.user_attrs[ATTR_PRESET] == "paper" and fast.user_attrs[ATTR_PRESET] == "fast"
    cfg = paper.user_attrs[ATTR_CONFIG]
    assert (cfg["scheduler"], cfg["optimizer"], cfg["depth"], cfg["lr"]) == ("pndm", "adamw", 2, 1.25e-3)
    assert (cfg["images_per_update"], cfg["rollout_batch"], cfg["steps"], cfg["max_epochs"]) == (5, 1, 4, 2)
    assert paper.user_attrs["outside_space"] == {"grad_accum": 5} and "grad_accum" not in paper.params
    from dct.config import PRESETS

    cfg = fast.user_attrs[ATTR_CONFIG]
    batch = PRESETS["fast"]["rollout_batch"]  # one rollout per update, outside this space's [1, 2]
    assert (cfg["scheduler"], cfg["images_per_update"], cfg["rollout_batch"]) == ("ddim", batch, batch)
    assert fast.user_attrs["outside_space"] == {"rollout_batch": batch}
    assert "enqueued preset 'paper'; its values outside the space" in text

    # per-epoch intermediate values came from the dct cell's progress: class 0, epochs 0 and 1
    assert all(set(t.intermediate_values) <= {0, 1} and t.intermediate_values for t in trials)

    store = study_store(unique)
    rows = S.load_cells(store, all_rows=True)
    assert len(rows) == 3 and set(rows[C.CELL_KIND]) == {"dct"}
    ok = rows[rows[C.STATUS] == C.STATUS_OK]
    assert ok[C.metric_col("acc")].between(0, 1).all() and (ok[C.STEPS_TIMED] >= 1).all()
    assert ok[C.phase_seconds_col("train")].gt(0).all()
    curves = S.load_curves(store)
    assert {"class_id", C.EPOCH, C.ACCURACY, C.LOSS} <= set(curves.columns)
    assert (store / "figures" / "history.png").is_file() and (store / "figures" / "intermediate.png").is_file()

    # the best configuration, as a preset file that `dct train` accepts
    best = export_best(study, result.space, tmp_path / "best.toml")
    data = tomllib.loads(best.read_text())
    assert data["train"]["model"] == str(tiny_sd_dir) and data["search"]["trial"] == study.best_trial.number
    assert data["eval"]["eval_seeds"] == 2 and "judge" in data["eval"]
    from dct.config import load_preset

    loaded = load_preset(str(best))
    expected = study.best_trial.user_attrs[ATTR_CONFIG]
    for key, value in data["train"].items():
        got = getattr(loaded, key)
        assert (list(got) if isinstance(got, tuple) else got) == expected[key], key

    from cli import app

    out = CliRunner().invoke(app, ["train", "--class", "1", "--preset", str(best), "--out", str(tmp_path / "t.safetensors"),
                                   "--json"])
    assert out.exit_code == 0, out.output
    sidecar = json.loads(out.output[out.output.index("{"):])
    assert sidecar["config"]["lr"] == expected["lr"] and sidecar["config"]["preset"] == "best"
    assert (tmp_path / "t.safetensors").is_file()
