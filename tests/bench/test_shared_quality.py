"""Quality-neutral axes: the token is trained once per quality key, the other cells measure only their
cost and share its quality columns, and an axis that does change the token is caught, not shared."""

import io

import pytest
import torch
from rich.console import Console

from bench import columns as C
from bench.grid import SharedQualityError, run_grid
from bench.store import load_cells
from dct.errors import ConfigError

SPEC = """
[experiment]
name = "shared"
cell = "dct"
store = "{store}"
quality_neutral = ["{neutral}"]

[fixed]
preset = "fast"
model = "{model}"
classifier = "timm:{clf}"
judge = "timm:{clf}"
classes = [1, 3]
steps = 3
max_epochs = 2
images_per_update = 2
rollout_batch = 2
guidance = 3.0
eval_seeds = 4
eval_steps = 3
replicates = 2
cost_steps = 2
fid = false

[axes]
{axes}
"""


def grid(folder, model, clf, *, neutral, axes):
    spec = folder / "spec.toml"
    spec.write_text(SPEC.format(store=folder / "store", model=model, clf=clf, neutral=neutral, axes=axes))
    return spec, folder / "store"


@pytest.fixture(scope="module")
def shared(tmp_path_factory, tiny_sd_dir, tiny_timm_dir):
    spec, store = grid(tmp_path_factory.mktemp("shared"), tiny_sd_dir, tiny_timm_dir, neutral="checkpointing",
                       axes='depth = [1, "full"]\ncheckpointing = ["none", "both"]')
    result = run_grid(spec, console=Console(file=io.StringIO()), show_progress=False, jobs=2)
    return result, store


def test_the_token_is_trained_once_per_quality_key(shared):
    result, store = shared
    assert sorted(status for _, status in result.ran) == ["ok"] * 4, load_cells(store)[C.ERROR].tolist()
    cells = load_cells(store).set_index(C.LABEL)
    m = C.metric_col
    for depth in ("1", "full"):
        quality, cost = cells.loc[f"depth={depth} checkpointing=none"], cells.loc[f"depth={depth} checkpointing=both"]
        assert quality[m("measure")] == "quality" and cost[m("measure")] == "cost"
        # only the quality cell trained and judged: its phases and its runs' token files exist
        assert quality[C.phase_seconds_col("train")] > 0 and quality[C.phase_seconds_col("eval")] > 0
        assert pd_missing(cost.get(C.phase_seconds_col("train")))
        q_files = sorted(p.name for p in (store / quality[C.ARTIFACTS_DIR]).glob("run-*.safetensors"))
        assert q_files == ["run-0.safetensors", "run-1.safetensors"]
        assert not list((store / cost[C.ARTIFACTS_DIR]).glob("run-*.safetensors"))
        # the cost cell's row: its own memory and time, the quality cell's accuracy, and where it came from
        assert cost[C.STEP_TIME_MEDIAN_S] > 0 and cost[C.COST_PEAK_BYTES] > 0
        assert cost[C.COST_PEAK_BYTES] == cost[C.phase_peak_col("probe")]
        for col in ("acc", "acc_lo", "acc_hi", "plain_acc", "acc_gain", "outcomes", "acc_per_run"):
            assert cost[m(col)] == quality[m(col)], col
        assert cost[C.QUALITY_FROM] == f"{quality[C.CONFIG_HASH]}/{quality[C.ATTEMPT_ID]}"
        assert cost[C.SHARED_CHECK].startswith("ok") and pd_missing(quality[C.QUALITY_FROM])
        assert cost[m("probe_losses")] != "[]" and cost[m("probe_steps")] == 2
    # the two depths did train different tokens: sharing is per quality key, not per grid
    assert cells.loc["depth=1 checkpointing=none", m("probe_delta")] != \
        cells.loc["depth=full checkpointing=none", m("probe_delta")]


def test_a_resumed_shared_grid_runs_nothing(shared):
    result, store = shared
    again = run_grid(result.spec, console=Console(file=io.StringIO()), show_progress=False, jobs=2)
    assert again.ran == [] and len(again.skipped) == 4


def test_an_axis_that_changes_the_token_is_caught_not_shared(tmp_path, tiny_sd_dir, tiny_timm_dir):
    # lr changes the trajectory from the first step: declared quality-neutral, the probes disagree
    spec, store = grid(tmp_path, tiny_sd_dir, tiny_timm_dir, neutral="lr", axes="depth = [1]\nlr = [0.05, 0.3]")
    out = io.StringIO()
    with pytest.raises(SharedQualityError, match=r"quality-neutral axes \['lr'\] did not reproduce"):
        run_grid(spec, console=Console(file=out, width=200), show_progress=False, jobs=1)
    assert "shared quality refused" in out.getvalue()
    cells = load_cells(store).set_index(C.LABEL)
    cost = cells.loc["depth=1 lr=0.3"]
    assert cost[C.SHARED_CHECK].startswith("mismatch") and pd_missing(cost.get(C.metric_col("acc")))
    assert pd_missing(cost[C.QUALITY_FROM])


def test_full_training_under_every_checkpointing_mode_gives_the_same_token(parts, classifier):
    """The full retraining behind the claim: the whole training run, not only one gradient, is unchanged
    by checkpointing (so a grid may train once per quality key)."""
    from dct.config import load_preset
    from dct.token import ClassTokens
    from dct.train import train_tokens

    tokens = {}
    for mode in ("none", "block", "step", "both"):
        cfg = load_preset("fast", steps=3, max_epochs=3, images_per_update=2, rollout_batch=2, guidance=3.0,
                          depth="full", checkpointing=mode, stop_accuracy=1.0)
        bank = ClassTokens(parts.tokenizer, parts.text_encoder, ["tok1", "tok3"], cfg.init_word)
        results = train_tokens(parts, classifier, [1, 3], ["one", "three"], cfg, templates=("a photo of {}",),
                               tokens=bank, placeholders=["tok1", "tok3"], progress=False)
        bank.remove()
        tokens[mode] = torch.stack([r.vector for r in results])
    moved = (tokens["none"] - tokens["none"].mean()).norm()
    for mode in ("block", "step", "both"):
        torch.testing.assert_close(tokens[mode], tokens["none"], rtol=1e-4, atol=1e-6 * float(moved))


def test_evaluation_seeds_of_any_training_run_are_refused():
    from bench.cells.dct import validate

    # runs train with seeds 0, 1000, 2000 and (no re-seeding) draw latents from seed + epoch
    settings = {"classes": [7], "eval_seeds": 4, "fid": False, "max_epochs": 2, "replicates": 3}
    validate({**settings, "eval_seed_base": 1002})  # between the runs' latents: allowed
    with pytest.raises(ConfigError, match=r"eval_seed_base=1998 .* would judge seeds \[2000, 2001\]"):
        validate({**settings, "eval_seed_base": 1998})
    with pytest.raises(ConfigError, match="replicates=0 is not accepted"):
        validate({**settings, "replicates": 0})
    with pytest.raises(ConfigError, match="measure='both' is not accepted"):
        validate({**settings, "measure": "both"})


def pd_missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)
