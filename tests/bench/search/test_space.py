"""Search spaces are validated when loaded, and every error names the table and key at fault."""

import math
import textwrap

import pytest

from bench.search.space import OBJECTIVES, parse_objective, parse_space
from dct.errors import ConfigError

BASE = """
[study]
name = "s"
objectives = "acc"

[fixed]
max_epochs = 5

[space.lr]
type = "float"
low = 0.001
high = 0.3
log = true
"""


def parse(text: str = BASE, extra: str = ""):
    return parse_space(textwrap.dedent(text) + textwrap.dedent(extra), source="space.toml")


def fails(match: str, extra: str = "", text: str = BASE):
    with pytest.raises(ConfigError, match=match) as info:
        parse(text, extra)
    assert str(info.value).startswith("space.toml: ")
    return str(info.value)


def test_a_valid_space_with_every_kind_of_parameter():
    space = parse(extra="""
        [templates]
        paper = ["A photo of {}", "a high resolution realistic image of {}", "A close-up photo of a {}"]
        [space.depth]
        type = "int"
        low = 1
        high = 6
        [space.guidance]
        type = "float"
        low = 1.0
        high = 9.0
        step = 0.5
        [space.precision]
        type = "categorical"
        choices = ["fp32", "bf16", "fp16"]
        [space.templates]
        type = "categorical"
        choices = ["default", "paper"]
        [space.rollout_batch]
        type = "categorical"
        choices = [1, 2, 4]
        [space.grad_accum]
        type = "int"
        low = 1
        high = 5
    """)
    assert set(space.params) == {"lr", "depth", "guidance", "precision", "templates", "rollout_batch", "grad_accum"}
    assert space.directions == ["maximize"] and space.prunes and space.enqueue == ["paper", "fast"]
    assert space.epoch_stride == 5  # [fixed] max_epochs holds for every trial, presets included
    settings = space.settings({"templates": "paper", "rollout_batch": 2, "grad_accum": 3})
    assert settings["images_per_update"] == 6 and settings["rollout_batch"] == 2 and "grad_accum" not in settings
    assert len(settings["templates"]) == 3 and space.settings({"templates": "default"})["templates"] is None

    # the paper preset: its values of the searched parameters, and the ones the space cannot hold
    inside, outside = space.preset_params("paper")
    assert inside == {"lr": 1.25e-3, "depth": 2, "guidance": 7.0, "precision": "fp16", "templates": "default",
                      "rollout_batch": 1, "grad_accum": 5}
    assert outside == {}
    cfg = space.kind.validate(space.settings(inside, base="paper"))
    assert cfg["images_per_update"] == 5 and cfg["rollout_batch"] == 1 and cfg["scheduler"] == "pndm"
    assert cfg["preset"] == "paper" and cfg["max_epochs"] == 5  # [fixed] applies to presets too
    from dct.config import PRESETS

    fast, outside = space.preset_params("fast")
    expected = PRESETS["fast"]["rollout_batch"]
    assert fast.get("rollout_batch", outside.get("rollout_batch")) == expected
    assert fast["grad_accum"] == PRESETS["fast"]["images_per_update"] // expected and fast["precision"] == "fp32"


def test_preset_values_outside_the_space_are_kept_from_the_preset():
    space = parse(extra="""
        [space.steps]
        type = "int"
        low = 4
        high = 12
    """)
    inside, outside = space.preset_params("paper")
    assert outside == {"steps": 30} and "steps" not in inside
    config = space.kind.validate(space.settings(inside, base="paper"))
    assert config["steps"] == 30  # the preset's own value, not a clipped one


@pytest.mark.parametrize("extra, match", [
    ("[sapce.x]\ntype='int'\n", r"unknown table \[sapce\] \(did you mean 'space'\?\)"),
    ("[space.lrr]\ntype='float'\nlow=1\nhigh=2\n", r"\[space.lrr\] unknown setting 'lrr' \(did you mean 'lr'\?\)"),
    ("[space.depth]\ntype='integer'\nlow=1\nhigh=2\n", r"\[space.depth\] type = 'integer' is not accepted"),
    ("[space.depth]\ntype='int'\nlow=3\nhigh=2\n", r"\[space.depth\] low = 3 must be below high = 2"),
    ("[space.depth]\ntype='int'\nlow=1.5\nhigh=2\n", r"\[space.depth\] low = 1.5 is not accepted: an integer"),
    ("[space.guidance]\ntype='float'\nlow=0.0\nhigh=2\nlog=true\n", r"\[space.guidance\] low = 0.0 is not accepted with log"),
    ("[space.guidance]\ntype='float'\nlow=1.0\nhigh=2\nstepp=1\n", r"\[space.guidance\] unknown key 'stepp' \(did you mean 'step'\?\)"),
    ("[space.guidance]\ntype='float'\nhigh=2\n", r"\[space.guidance\] low is missing"),
    ("[space.precision]\ntype='categorical'\nchoices=['fp32', 'fp8']\n",
     r"\[space.precision\] value 'fp8': precision='fp8' is not accepted: use one of"),
    ("[space.precision]\ntype='categorical'\nchoices=[]\n", r"\[space.precision\] choices = \[\] is not accepted"),
    ("[space.templates]\ntype='categorical'\nchoices=['default', 'photo']\n",
     r"\[space.templates\] choice 'photo' names no template set"),
    ("[space.max_epochs]\ntype='int'\nlow=1\nhigh=4\n", r"'max_epochs' is both in \[fixed\] and \[space\]"),
    ("[space.images_per_update]\ntype='int'\nlow=1\nhigh=4\n[space.grad_accum]\ntype='int'\nlow=1\nhigh=4\n",
     r"images_per_update and grad_accum cannot both be searched"),
    ("[pruning]\npruner='hyperband'\n", r"\[pruning\] pruner = 'hyperband' is not accepted"),
])
def test_errors_name_the_bad_key(extra, match):
    fails(match, extra)


def test_study_table_errors():
    fails(r"\[study\] unknown key 'objective' \(did you mean 'objectives'\?\)",
          text=BASE.replace('objectives = "acc"', 'objective = "acc"'))
    fails(r"\[study\] objectives: objective 'imagse' is not accepted: use one of .*\(did you mean 'images'\?\)",
          text=BASE.replace('"acc"', '"imagse"'))
    fails(r"\[study\] trials = 0 is not accepted", text=BASE.replace('name = "s"', 'name = "s"\ntrials = 0'))
    fails(r"\[study\] cell: unknown cell kind 'nope'", text=BASE.replace('name = "s"', 'name = "s"\ncell = "nope"'))
    fails(r"\[study\] enqueue 'paperr'|\[study\] preset 'paperr'",
          text=BASE.replace('name = "s"', 'name = "s"\nenqueue = ["paperr"]'))
    fails(r"pruner = 'median' needs a single objective",
          text=BASE.replace('"acc"', '["acc", "peak_mem"]'), extra="[pruning]\npruner = 'median'\n")
    fails(r"nothing to search", text=BASE.split("[space.lr]")[0])


def test_objectives():
    assert parse_objective("images").direction == "minimize" and OBJECTIVES["acc"].direction == "maximize"
    custom = parse_objective("metric_final_loss:minimize")
    assert custom.value({"metric_final_loss": 0.25}) == 0.25
    images = OBJECTIVES["images"]
    # images spent per class that reached the threshold: a class that never reached it still costs
    assert images.value({"metric_images_mean": 12.0, "metric_threshold_reached": 0.5}) == 24.0
    assert images.value({"metric_images_mean": 12.0, "metric_threshold_reached": 0.0}) == math.inf
    assert math.isnan(images.value({}))
    time_ = OBJECTIVES["time"]
    assert time_.value({"phase_train_s": 3.0, "wall_s": 9.0}) == 3.0 and time_.value({"wall_s": 9.0}) == 9.0
    space = parse(text=BASE.replace('"acc"', '["images", "peak_mem"]'))
    assert space.multi_objective and not space.prunes and space.directions == ["minimize", "minimize"]


@pytest.mark.world
def test_the_shipped_space_is_valid():
    from pathlib import Path

    from bench.search.space import load_space
    from dct.world.paths import default_world_dir

    if not (default_world_dir() / "world.json").is_file():
        pytest.skip("ablations/search.toml names classes of the tiny world, which is not built here")
    space = load_space(Path(__file__).resolve().parents[3] / "ablations" / "search.toml")
    assert {"lr", "depth", "guidance", "steps", "init_word", "checkpointing", "precision", "templates"} <= set(space.params)
    assert space.enqueue == ["paper", "fast"]
