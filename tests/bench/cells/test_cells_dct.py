"""The DCT cell through the real grid runner on tiny real models: it trains, evaluates, records, and a
re-run skips what is done."""

import io
import json
import re
import statistics

import numpy as np
import pytest
import torch
from rich.console import Console

from bench import columns as C
from bench.cells.dct import fid_metrics
from bench.grid import run_grid
from bench.store import load_cells, load_curves
from dct.errors import ConfigError
from dct.eval.fid import fid_kid

SPEC = """
[experiment]
name = "dct-mini"
cell = "dct"
store = "{store}"

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
fid_reference = "{ref}"

[axes]
depth = [1, "full"]
"""


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    import torch

    from dct.generate import save_images

    folder = tmp_path_factory.mktemp("ref")
    images = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    save_images(images, folder, [f"r{i}" for i in range(8)])
    return folder


@pytest.fixture(scope="module")
def grid(tmp_path_factory, tiny_sd_dir, tiny_timm_dir, reference):
    folder = tmp_path_factory.mktemp("dctgrid")
    spec = folder / "dct-mini.toml"
    spec.write_text(SPEC.format(store=folder / "store", model=tiny_sd_dir, clf=tiny_timm_dir, ref=reference))
    first = run_grid(spec, console=Console(file=io.StringIO()), show_progress=False)
    return spec, folder / "store", first


def _examples(store, row, which):
    """The cell's evaluation images as it saved them (8-bit PNGs), with their classes from the file names."""
    from PIL import Image

    files = sorted((store / row[C.ARTIFACTS_DIR] / "examples" / which).glob("*.png"))
    images = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1)
                          for f in files]).float() / 255
    classes = [int(re.match(r"class(\d+)-seed", f.stem).group(1)) for f in files]
    return images, np.array(classes), store / row[C.ARTIFACTS_DIR] / "examples" / which


def test_cells_train_and_evaluate(grid, classifier, reference, tmp_path):
    _, store, first = grid
    assert [status for _, status in first.ran] == ["ok", "ok"], load_cells(store)[C.ERROR].tolist()
    cells = load_cells(store).set_index(C.LABEL)
    assert len(cells) == 2
    m = C.metric_col
    for label in cells.index:
        row = cells.loc[label]
        # The judge (here also the guide, `classifier`) applied by hand to the very images the cell
        # judged (run 0's token images and the plain images, all 4 seeds x 2 classes, are saved as
        # examples) gives the recorded outcomes: a swapped prompt, misaligned targets or top-5 for top-1
        # would not. The accuracies are the means of those outcomes over every run.
        stored = json.loads(row[m("outcomes")])
        assert stored["classes"] == [1, 3] and stored["train_seeds"] == [0, 1000]
        assert stored["eval_seeds"] == list(range(70000, 70004))
        token = np.array([[[c == "1" for c in run] for run in cls] for cls in stored["token"]], dtype=float)
        plain = np.array([[c == "1" for c in cls[0]] for cls in stored["plain"]], dtype=float)
        assert token.shape == (2, 2, 4) and plain.shape == (2, 4)
        for which, expected in (("token", token[:, 0]), ("plain", plain)):
            images, targets, _ = _examples(store, row, which)
            assert len(images) == 8
            with torch.no_grad():
                hits = (classifier(images).argmax(1).numpy() == targets)
            assert hits.tolist() == expected.reshape(-1).astype(bool).tolist(), (label, which)
        assert row[m("acc")] == pytest.approx(token.mean()) and row[m("plain_acc")] == pytest.approx(plain.mean())
        assert json.loads(row[m("acc_per_run")]) == pytest.approx([token[:, 0].mean(), token[:, 1].mean()])
        assert json.loads(row[m("acc_per_class")]) == pytest.approx({"1": token[0].mean(), "3": token[1].mean()})
        assert json.loads(row[m("plain_acc_per_class")]) == pytest.approx({"1": plain[0].mean(), "3": plain[1].mean()})
        assert row[m("acc_lo")] <= row[m("acc")] <= row[m("acc_hi")]
        assert row[m("acc_gain")] == pytest.approx(row[m("acc")] - row[m("plain_acc")])
        assert row[m("eval_images")] == 2 * 2 * 4 and row[m("n_classes")] == 2 and row[m("n_runs")] == 2
        # 8 reference images are far fewer than twice the judge's 96 feature dimensions: no FID, and why
        assert row.get(m("fid")) is None or row[m("fid")] != row[m("fid")]
        assert row[m("fid_note")].startswith("unreliable, not reported: 16 generated and 8 reference images")
        assert row[m("fid_n_reference")] == 8 and row[m("fid_n_generated")] == 16
    # the cell's own FID step, given enough images (2 x 96): a set against itself gives ~0
    from dct.generate import save_images

    many = (torch.rand(192, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 255).round() / 255
    save_images(many, tmp_path / "many", [f"m{i:03d}" for i in range(192)])
    config = {"fid_reference": str(tmp_path / "many")}
    same = fid_metrics(many, many, [1, 3], config, None, classifier)
    assert abs(same["fid"]) < 1e-6 and abs(same["plain_fid"]) < 1e-6 and same["fid_n_reference"] == 192
    assert same["kid_subset_size"] == 192 and same["fid_feature_dim"] == 96
    short = fid_metrics(many[:191], many, [1, 3], config, None, classifier)
    assert short["fid"] is None and "FID needs >= 192 of each (2 x 96 feature dims)" in short["fid_note"]
    for label in cells.index:
        row = cells.loc[label]
        assert row[C.STEP_TIME_MEDIAN_S] > 0 and row[C.PEAK_MEM_BYTES] > 0
    assert cells.loc["depth=1", m("grad_calls")] == 1
    assert cells.loc["depth=full", m("grad_calls")] == cells.loc["depth=full", m("unet_calls")] == 3
    curves = load_curves(store)
    assert len(curves) == 2 * 2 * 2 * 2  # cells x runs x classes x epochs
    assert sorted(set(curves["train_seed"])) == [0, 1000]
    assert set(curves["class_id"]) == {1, 3}


def test_rerun_skips_done_cells(grid):
    spec, store, _ = grid
    again = run_grid(spec, console=Console(file=io.StringIO()), show_progress=False)
    assert again.ran == []
    assert len(load_cells(store)) == 2


def test_bad_setting_is_rejected_before_work(tmp_path, tiny_sd_dir, tiny_timm_dir, reference):
    spec = tmp_path / "bad.toml"
    spec.write_text(SPEC.format(store=tmp_path / "s", model=tiny_sd_dir, clf=tiny_timm_dir, ref=reference)
                    .replace("guidance = 3.0", "guidanse = 3.0"))
    with pytest.raises(ConfigError, match="guidanse"):
        run_grid(spec, console=Console(file=io.StringIO()), show_progress=False)
    assert not (tmp_path / "s" / "cells").exists() or not any((tmp_path / "s" / "cells").iterdir())


def test_a_rebuilt_world_is_a_new_cell_not_a_done_one(tmp_path, monkeypatch):
    """Cells on the embedded world carry its fingerprint: resuming a grid after `dct world build` must not
    skip cells that were measured on the old world's models."""
    import shutil

    from bench.cells.dct import validate
    from dct.config import config_hash
    from dct.world.paths import committed_world_dir, world_fingerprint

    settings = {"classes": [7], "eval_seeds": 4, "fid": False}
    before = validate(dict(settings))
    assert before["world"] == world_fingerprint() and before["world"].startswith("tiny@")
    assert validate(dict(before)) == before  # a stored config validates to itself

    copy = tmp_path / "world"
    shutil.copytree(committed_world_dir(), copy)
    monkeypatch.setenv("DCT_WORLD", str(copy))
    assert validate(dict(settings)) == before  # the same files: the same cell
    (copy / "world.json").write_text((copy / "world.json").read_text() + "\n")  # check results are not models
    assert validate(dict(settings))["world"] == before["world"]
    sched = copy / "sd" / "scheduler" / "scheduler_config.json"
    sched.write_text(sched.read_text().replace("}", ', "dct_test_edit": 1}', 1))
    after = validate(dict(settings))
    assert after["world"] != before["world"] and config_hash(after) != config_hash(before)
    with pytest.raises(ConfigError, match="another tiny world"):
        validate(dict(before))


def test_paper_cell_records_its_clipping_through_the_runner(tmp_path, tiny_sd_dir, tiny_timm_dir, reference):
    """The paper preset's history rows hold lists (prompts, clip norms): the cell stores them flat, and the
    row says how often the reference clip bit."""
    spec = tmp_path / "paper.toml"
    text = (SPEC.format(store=tmp_path / "s", model=tiny_sd_dir, clf=tiny_timm_dir, ref=reference)
            .replace('preset = "fast"', 'preset = "paper"\nprecision = "fp32"\nclassifier_preprocessing = "model"')
            .replace("rollout_batch = 2", "rollout_batch = 1").replace("images_per_update = 2", "images_per_update = 3")
            .replace('depth = [1, "full"]', 'clip_mode = ["reference", "none"]'))
    spec.write_text(text)
    result = run_grid(spec, console=Console(file=io.StringIO()), show_progress=False)
    assert [status for _, status in result.ran] == ["ok", "ok"], load_cells(tmp_path / "s")[C.ERROR].tolist()
    cells = load_cells(tmp_path / "s").set_index(C.LABEL)
    m = C.metric_col
    ref, none = cells.loc["clip_mode=reference"], cells.loc["clip_mode=none"]
    assert ref[m("clip_calls")] == 2 * 2 * 2 * 2  # runs x classes x epochs x (images - 1)
    curves = load_curves(tmp_path / "s")
    rows = curves[curves[C.CONFIG_HASH] == ref[C.CONFIG_HASH]]
    # the summary agrees with the clip norms each epoch recorded, and with the cap in the cell's config
    norms = [n for listed in rows["clip_norms"] for n in json.loads(listed)]
    cap = json.loads(ref[C.CONFIG_JSON])["clip_grad_norm"]
    assert len(norms) == ref[m("clip_calls")] and rows["clip_bites"].sum() == sum(n > cap for n in norms)
    assert ref[m("clip_bite_fraction")] == pytest.approx(sum(n > cap for n in norms) / len(norms))
    assert ref[m("clip_norm_median")] == pytest.approx(statistics.median(norms)) and ref[m("clip_norm_median")] > 0
    assert none[m("clip_calls")] == 0 and none[m("eval_protocol")] == "ours"
    assert rows["clip_calls"].tolist() == [2] * 8 and rows["prompts"].str.startswith("[").all()


def test_evaluation_seeds_that_drew_training_latents_are_refused(tmp_path, tiny_sd_dir, tiny_timm_dir, reference):
    spec = tmp_path / "seen.toml"
    spec.write_text(SPEC.format(store=tmp_path / "s", model=tiny_sd_dir, clf=tiny_timm_dir, ref=reference)
                    .replace("eval_seeds = 4", "eval_seeds = 4\neval_seed_base = 0"))
    with pytest.raises(ConfigError, match=r"eval_seed_base=0 .* would judge seeds \[0, 1\] that training drew"):
        run_grid(spec, console=Console(file=io.StringIO()), show_progress=False)
