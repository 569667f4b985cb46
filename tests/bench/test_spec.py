"""Specs are validated completely before any cell runs, and each error names the bad key or value."""

import pytest

from bench.grid import run_grid
from bench.spec import load_spec, parse_spec, select
from dct.errors import ConfigError

GOOD = """
[experiment]
name = "widths"
cell = "tiny_mlp"
store = "STORE"

[fixed]
steps = 3

[axes]
width = [2, 4]
lr = [0.1, 0.01]

[[include]]
label = "reference"
width = 16
lr = 0.05

[[exclude]]
width = 4
lr = 0.01
"""


def test_expansion_product_include_exclude_and_labels(write_spec):
    spec = load_spec(write_spec(GOOD))
    labels = [c.label for c in spec.cells.values()]
    assert labels == ["width=2 lr=0.1", "width=2 lr=0.01", "width=4 lr=0.1", "reference"]
    cell = next(iter(spec.cells.values()))
    assert cell.config["steps"] == 3 and cell.config["fail"] == "none"  # validate() filled the defaults
    assert all(len(h) == 12 for h in spec.cells)
    assert spec.store.name == "store" and spec.spec_hash and len(spec.spec_hash) == 12


def test_same_settings_written_differently_are_one_cell(write_spec):
    a = load_spec(write_spec(GOOD, "a"))
    # width=2 lr=0.1 given explicitly, plus the default `fail` spelled out: the same config, the same hash
    b = load_spec(write_spec(GOOD.replace("[[include]]\nlabel = \"reference\"",
                                          "[[include]]\nfail = \"none\"\nlabel = \"reference\""), "b"))
    assert list(a.cells) == list(b.cells)


def test_duplicate_cells_run_once_with_both_labels(write_spec):
    spec = load_spec(write_spec(GOOD.replace("width = 16", "width = 2").replace("lr = 0.05", "lr = 0.1")))
    assert len(spec.cells) == 3
    assert "width=2 lr=0.1 | reference" in [c.label for c in spec.cells.values()]


def test_seeds_and_repeats(write_spec):
    spec = load_spec(write_spec(GOOD.replace('store = "STORE"', 'store = "STORE"\nrepeats = 2')))
    assert len(spec.cells) == 8
    assert [c.config["seed"] for c in spec.cells.values()][:2] == [0, 1]
    assert list(spec.cells.values())[1].label == "width=2 lr=0.1 seed=1"
    spec = load_spec(write_spec(GOOD.replace('store = "STORE"', 'store = "STORE"\nseeds = [7]')))
    assert {c.config["seed"] for c in spec.cells.values()} == {7}


@pytest.mark.parametrize("change, named", [
    (("[fixed]", "[fixd]"), "[fixd]"),                                   # unknown table
    (("steps = 3", "stesp = 3"), "'stesp'"),                             # unknown setting key...
    (("steps = 3", "stesp = 3"), "did you mean 'steps'"),                # ...with a suggestion
    (("width = [2, 4]", "width = []"), "[axes] width is an empty list"),  # empty axis
    (("width = [2, 4]", "width = 2"), "[axes] width = 2"),               # non-list axis
    (("steps = 3", 'steps = "three"'), "steps='three'"),                  # wrong type, from the kind's validate
    (('cell = "tiny_mlp"', 'cell = "tiny_mlp"\nrepeats = "2"'), "repeats = '2'"),  # wrong type, [experiment]
    (('cell = "tiny_mlp"', 'cell = "tiny_mlp"\ncolour = "red"'), "unknown key 'colour'"),
    (('cell = "tiny_mlp"', 'cell = "no_such_kind"'), "registered kinds: ["),
    (("[[exclude]]\nwidth = 4", '[[exclude]]\nwidth = "4"'), "matches no cell"),
    (("[fixed]\nsteps = 3", "[fixed]\nsteps = 3\nwidth = 8"), "both in [fixed] and [axes]"),
])
def test_malformed_spec_names_the_problem(write_spec, change, named):
    path = write_spec(GOOD.replace(*change))
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    assert named in str(err.value)
    assert str(path) in str(err.value)


def test_malformed_spec_fails_before_any_work(write_spec, tmp_path, quiet):
    # The bad value is in the LAST cell: the first cells must not run before it is found.
    path = write_spec(GOOD.replace("width = 16", "width = 0"))
    with pytest.raises(ConfigError, match=r"cell 'reference': width=0 is not accepted"):
        run_grid(path, console=quiet, show_progress=False)
    assert not (tmp_path / "store").exists()


def test_only_filters_by_hash_prefix_or_label(write_spec):
    spec = load_spec(write_spec(GOOD))
    first = next(iter(spec.cells))
    assert [c.config_hash for c in select(spec, [first[:6]])] == [first]
    assert [c.label for c in select(spec, ["lr=0.01"])] == ["width=2 lr=0.01"]
    with pytest.raises(ConfigError, match="matches no cell"):
        select(spec, ["width=99"])


def test_parse_spec_without_file():
    spec = parse_spec({"experiment": {"name": "x", "cell": "tiny_mlp"}, "include": [{"width": 3}]})
    assert [c.label for c in spec.cells.values()] == ["width=3"]
    assert str(spec.store) == "results/x"


def test_quality_neutral_axes_make_cost_cells_and_baselines_default_to_the_first_value():
    spec = parse_spec({"experiment": {"name": "d", "cell": "dct", "quality_neutral": ["checkpointing"]},
                       "fixed": {"classes": [7], "fid": False},
                       "axes": {"depth": [1, "full"], "checkpointing": ["none", "block", "both"]}})
    measures = {c.label: c.config["measure"] for c in spec.cells.values()}
    assert measures == {"depth=1 checkpointing=none": "quality", "depth=1 checkpointing=block": "cost",
                        "depth=1 checkpointing=both": "cost", "depth=full checkpointing=none": "quality",
                        "depth=full checkpointing=block": "cost", "depth=full checkpointing=both": "cost"}
    assert spec.baseline == {"depth": 1, "checkpointing": "none"} and spec.quality_neutral == ["checkpointing"]
    chosen = parse_spec({"experiment": {"name": "d", "cell": "dct", "baseline": {"depth": "full"}},
                         "fixed": {"classes": [7], "fid": False}, "axes": {"depth": [1, "full"]}})
    assert chosen.baseline == {"depth": "full"}


@pytest.mark.parametrize("experiment, named", [
    ({"quality_neutral": ["precision"]}, "quality_neutral names 'precision', which is not an axis"),
    ({"quality_neutral": "checkpointing"}, "quality_neutral = 'checkpointing' is not accepted"),
    ({"baseline": {"depth": 2}}, "baseline depth = 2 is not accepted: one of the axis's values [1, 'full']"),
    ({"baseline": {"lr": 0.1}}, "baseline lr = 0.1 is not accepted: an axis"),
])
def test_bad_quality_neutral_or_baseline_names_the_problem(experiment, named):
    with pytest.raises(ConfigError) as e:
        parse_spec({"experiment": {"name": "d", "cell": "dct", **experiment}, "fixed": {"classes": [7]},
                    "axes": {"depth": [1, "full"], "checkpointing": ["none", "both"]}})
    assert named in str(e.value)


def test_quality_neutral_needs_a_kind_that_can_measure_cost_only():
    with pytest.raises(ConfigError, match="quality_neutral needs a 'measure' setting, which cell kind 'tiny_mlp'"):
        parse_spec({"experiment": {"name": "w", "cell": "tiny_mlp", "quality_neutral": ["width"]},
                    "axes": {"width": [2, 4]}})
