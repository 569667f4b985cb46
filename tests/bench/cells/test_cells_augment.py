"""The augment cell on tiny real models (a random-weight pipeline and a random token bank) through the real
grid runner: real cells generate nothing, plain and dct cells N per class, the image cache is shared,
and evaluation uses only the held-out scans that no training draw touches."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from bench.cells import augment as A
from bench import columns as C
from bench.grid import run_grid
from bench.spec import load_spec
from bench.store import load_cells, load_curves
from dct.errors import ConfigError
from dct.world.data import CLASS_NAMES, digit_labels, heldout_indices, train_indices

REPO = Path(__file__).resolve().parents[3]
N_GEN = 2
SPEC = """
[experiment]
name = "augment-mini"
cell = "augment"
store = "{store}"

[fixed]
n_generated = {n}
gen_seed = 0
token_bank = "{bank}"
model = "{model}"
gen_steps = 2
gen_batch = 10
train_steps = 3
batch = 8
n_boot = 50

[[include]]
label = "real"
source = "real"
k = 1

[[include]]
label = "plain"
source = "plain"
k = 1

[[include]]
label = "dct-k1"
source = "dct"
k = 1

[[include]]
label = "dct-k2"
source = "dct"
k = 2
"""


def write_bank(path: Path, model, classes=range(10), template="a handwritten {}") -> Path:
    from dct.token import save_tokens

    g = torch.Generator().manual_seed(0)
    tokens = {f"newclas{c}": torch.randn(64, generator=g) * 0.5 for c in classes}  # the tiny text encoder is 64-d
    sidecar = {"format": "dct-token/1", "model": str(model), "world": False, "eval_template": template,
               "tokens": {f"newclas{c}": {"class_index": c, "class_name": CLASS_NAMES[c]} for c in classes}}
    return save_tokens(path, tokens, sidecar)


@pytest.fixture(scope="module")
def bank(tmp_path_factory, tiny_sd_dir):
    return write_bank(tmp_path_factory.mktemp("bank") / "bank-all.safetensors", tiny_sd_dir)


@pytest.fixture(scope="module")
def grid(tmp_path_factory, tiny_sd_dir, bank):
    folder = tmp_path_factory.mktemp("augment")
    spec = folder / "augment-mini.toml"
    spec.write_text(SPEC.format(store=folder / "store", n=N_GEN, bank=bank, model=tiny_sd_dir))
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(A.CACHE_ENV, raising=False)  # the default place: beside the store
        result = run_grid(spec, console=Console(file=io.StringIO()), show_progress=False)
    return spec, folder, result


def _cells(store):
    return load_cells(store).set_index(C.LABEL)


def test_cells_run_and_report_accuracy_with_ci(grid):
    _, folder, result = grid
    cells = _cells(folder / "store")
    assert [s for _, s in result.ran] == ["ok"] * 4, cells[C.ERROR].tolist()
    m = C.metric_col
    held_out_per_class = np.bincount(digit_labels()[heldout_indices()], minlength=10)
    for label, row in cells.iterrows():
        assert row[m("acc_lo")] <= row[m("acc")] <= row[m("acc_hi")], label
        # every accuracy counts held-out images of its class, and the overall one is their sum: an
        # evaluation on other images, or top-k in one place and top-1 in the other, breaks the arithmetic
        per_class = json.loads(row[m("acc_per_class")])
        assert sorted(map(int, per_class)) == list(range(10)), label
        hits = [per_class[str(c)] * held_out_per_class[c] for c in range(10)]
        assert hits == pytest.approx(np.round(hits), abs=1e-9), label
        assert row[m("acc")] * row[m("n_test")] == pytest.approx(sum(hits)), label
        assert row[m("n_test")] == len(heldout_indices())
        assert row[m("train_steps")] == 3 and row[m("train_seconds")] > 0
        assert row[C.STEPS_TIMED] == 3
    curves = load_curves(folder / "store")
    assert set(curves[C.LABEL]) == set(cells.index) and (curves["loss"] > 0).all()


def test_real_generates_nothing_and_ignores_generation_settings(grid):
    _, folder, _ = grid
    row = _cells(folder / "store").loc["real"]
    assert row[C.metric_col("n_generated")] == 0 and row[C.metric_col("gen_new")] == 0
    assert row[C.metric_col("n_real")] == 10
    assert row[C.config_col("n_generated")] == 0
    config = json.loads(row[C.CONFIG_JSON])
    assert config["token_bank"] is None and config["gen_seed"] is None and config["template"] is None


def test_plain_and_dct_use_n_generated_per_class(grid):
    _, folder, _ = grid
    cells = _cells(folder / "store")
    for label in ("plain", "dct-k1", "dct-k2"):
        assert cells.loc[label, C.metric_col("n_generated")] == 10 * N_GEN
        assert cells.loc[label, C.metric_col("n_generated_per_class")] == N_GEN
    assert cells.loc["dct-k2", C.metric_col("n_real")] == 20
    # plain takes the bank's template but not the bank (its identity does not depend on the vectors)
    assert json.loads(cells.loc["plain", C.CONFIG_JSON])["token_bank"] is None
    assert cells.loc["plain", C.config_col("template")] == "a handwritten {}"
    assert len(cells.loc["dct-k1", C.config_col("token_bank_sha256")]) == 64
    assert "newclas7 seven" in cells.loc["dct-k1", C.metric_col("prompt_example")]
    assert cells.loc["plain", C.metric_col("prompt_example")] == "a handwritten seven"


def test_cache_is_shared_and_not_regenerated(grid):
    spec, folder, _ = grid
    cells = _cells(folder / "store")
    assert cells.loc["plain", C.metric_col("gen_new")] == 10 * N_GEN
    assert cells.loc["dct-k1", C.metric_col("gen_new")] == 10 * N_GEN
    assert cells.loc["dct-k2", C.metric_col("gen_new")] == 0
    assert cells.loc["dct-k2", C.metric_col("gen_cached")] == 10 * N_GEN
    cache = folder / "_cache" / "augment"
    pools = sorted(p for p in cache.iterdir() if p.is_dir())
    assert len(pools) == 2  # plain and dct: the two dct cells share one
    assert {cells.loc[x, C.metric_col("gen_cache")] for x in ("dct-k1", "dct-k2")} == {
        str(p) for p in pools if json.loads((p / "key.json").read_text())["source"] == "dct"}
    for pool in pools:
        pngs = sorted(pool.glob("*.png"))
        assert len(pngs) == 10 * N_GEN
        assert {p.name.split("-seed")[1] for p in pngs} == {f"{A.GEN_SEED_BASE + i}.png" for i in range(N_GEN)}
    dct_pool = Path(cells.loc["dct-k1", C.metric_col("gen_cache")])
    before = {p.name: p.stat().st_mtime_ns for p in dct_pool.glob("*.png")}

    again = run_grid(spec, force=True, only=["dct-k2"], console=Console(file=io.StringIO()), show_progress=False)
    assert [s for _, s in again.ran] == ["ok"]
    assert {p.name: p.stat().st_mtime_ns for p in dct_pool.glob("*.png")} == before
    assert _cells(folder / "store").loc["dct-k2", C.metric_col("gen_new")] == 0


def test_training_draw_avoids_the_heldout_split(grid):
    _, folder, _ = grid
    cells = _cells(folder / "store")
    held = heldout_indices()
    for label in cells.index:
        used = json.loads((folder / "store" / cells.loc[label, C.ARTIFACTS_DIR] / "train_indices.json").read_text())
        idx = np.array(used["indices"])
        assert len(idx) == 10 * cells.loc[label, C.config_col("k")]
        assert not np.intersect1d(idx, held).size and np.isin(idx, train_indices()).all()


def test_figure(grid, tmp_path):
    from bench.figures.augment import augment_table, plot_augment

    _, folder, _ = grid
    cells = load_cells(folder / "store")
    files = plot_augment(cells, tmp_path / "fig")
    assert [f.name for f in files] == ["accuracy-vs-k.png", "accuracy-vs-k.svg"]
    assert all(f.stat().st_size > 1000 for f in files)
    table = augment_table(cells)
    assert list(table["cfg_source"]) == ["real", "plain", "dct", "dct"]
    assert table["n"].tolist() == [1, 1, 1, 1]


# ------------------------------------------------------------------------------- validation, no cells run
def test_missing_bank_says_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"dct train --classes all --out tokens/bank-all\.safetensors"):
        A.validate({"source": "dct", "token_bank": "tokens/bank-all.safetensors"})
    with pytest.raises(ConfigError, match="needs token_bank.*dct train --classes all"):
        A.validate({"source": "dct"})


def test_committed_spec_fails_clearly_without_the_bank(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"bank-all\.safetensors.*does not exist.*dct train --classes all --out "
                                          r"tokens/bank-all\.safetensors"):
        load_spec(REPO / "ablations" / "augment.toml")


def test_committed_spec_expands_to_the_full_grid(tmp_path, monkeypatch, tiny_sd_dir):
    monkeypatch.chdir(tmp_path)
    write_bank(tmp_path / "tokens" / "bank-all.safetensors", tiny_sd_dir)
    spec = load_spec(REPO / "ablations" / "augment.toml")
    configs = [c.config for c in spec.cells.values()]
    assert len(configs) == 4 * 3 * 3
    assert {(c["k"], c["source"], c["seed"]) for c in configs} == {
        (k, s, seed) for k in (1, 2, 5, 10) for s in ("real", "plain", "dct") for seed in (0, 1, 2)}
    assert all(c["n_generated"] == (0 if c["source"] == "real" else 20) for c in configs)
    assert all(c["train_steps"] == 200 and c["batch"] == 32 for c in configs)  # one budget for every cell


def test_bank_without_every_class_is_rejected(tmp_path, tiny_sd_dir):
    bank = write_bank(tmp_path / "b.safetensors", tiny_sd_dir, classes=range(5))
    with pytest.raises(ConfigError, match=r"no token for class\(es\) \[5, 6, 7, 8, 9\]"):
        A.validate({"source": "dct", "token_bank": str(bank)})


def test_real_cells_do_not_depend_on_generation_settings(tmp_path, tiny_sd_dir):
    bank = write_bank(tmp_path / "b.safetensors", tiny_sd_dir)
    a = A.validate({"source": "real", "k": 2})
    b = A.validate({"source": "real", "k": 2, "n_generated": 50, "token_bank": str(bank), "guidance": 9})
    assert a == b and a["n_generated"] == 0


def test_bad_values_are_named():
    with pytest.raises(ConfigError, match="source='synthetic'"):
        A.validate({"source": "synthetic"})
    with pytest.raises(ConfigError, match="k=0"):
        A.validate({"k": 0})
    with pytest.raises(ConfigError, match="k=500 .*at most"):
        A.validate({"k": 500})
    with pytest.raises(ConfigError, match="unknown setting"):
        A.validate({"steps": 3})


def test_real_draw_is_per_class_nested_and_seeded():
    held = heldout_indices()
    from dct.world.data import digit_labels

    for k in (1, 2, 5, 10):
        idx = A.draw_real(k, seed=3)
        assert np.bincount(digit_labels()[idx], minlength=10).tolist() == [k] * 10
        assert not np.intersect1d(idx, held).size
    a1, a5 = A.draw_real(1, 3), A.draw_real(5, 3)
    assert all(a1[c] in a5[c * 5:(c + 1) * 5] for c in range(10))
    assert not np.array_equal(A.draw_real(5, 3), A.draw_real(5, 4))
    assert np.array_equal(A.draw_real(5, 3), A.draw_real(5, 3))


def test_batch_order_is_balanced_for_any_pool_size():
    g = torch.Generator().manual_seed(0)
    order = A.batch_order(10, steps=7, batch=8, gen=g)  # 56 draws from 10 images
    counts = np.bincount(order.flatten().numpy(), minlength=10)
    assert order.shape == (7, 8) and counts.max() - counts.min() <= 1


def test_generation_seeds_are_disjoint_from_training_and_evaluation():
    from bench.cells.dct import EVAL_SEED_BASE

    seeds = A.generation_seeds({"gen_seed": 2, "n_generated": A.GEN_SEED_STRIDE})
    assert min(seeds) >= A.GEN_SEED_BASE > EVAL_SEED_BASE + 100_000
    other = A.generation_seeds({"gen_seed": 3, "n_generated": 5})
    assert not set(seeds) & set(other)
