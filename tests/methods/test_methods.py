"""DCT's alternatives (dct.methods) on the tiny random pipeline, and the methods cell end to end.

Each test fails on a plausible bug: a textual-inversion step that does not reach the token or steps the
wrong way; a guidance hook with the wrong sign or that never runs; a prompt search that scores on the
evaluation seeds; a cell whose stored outcomes are not the judge's verdicts on its images."""

import io
import json

import numpy as np
import pytest
import torch
from rich.console import Console

from bench import columns as C
from bench.grid import run_grid
from bench.store import load_cells
from dct.errors import ConfigError
from dct.generate import seed_latents


def test_textual_inversion_lowers_the_denoising_loss_on_its_k_images(parts):
    from diffusers import DDPMScheduler

    from dct.methods.textual_inversion import (TIConfig, denoising_loss, encode_latents, train_textual_inversion,
                                               world_images)
    from dct.token import ClassTokens

    images, labels = world_images("handwritten", [3, 8], k=2, seed=0)
    assert labels.tolist() == [3, 3, 8, 8] and images.shape == (4, 3, 32, 32)
    latents = encode_latents(parts.vae, images)
    bank = ClassTokens(parts.tokenizer, parts.text_encoder, ["tok3", "tok8"], "a")
    rows = [0, 0, 1, 1]
    prompts = [f"a handwritten {'tok3 three' if r == 0 else 'tok8 eight'}" for r in rows]
    # a fixed draw of timesteps and noise, 8 per image, on which the loss is compared before and after
    sched = DDPMScheduler.from_config(parts.scheduler.config)
    g = torch.Generator().manual_seed(1)
    idx = torch.arange(4).repeat(8)
    t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),), generator=g)
    noise = torch.randn(latents[idx].shape, generator=g)

    def fixed_loss():
        with torch.no_grad():
            return float(denoising_loss(parts, bank, latents[idx], [prompts[i] for i in idx], t, noise, sched))

    before = fixed_loss()
    start = bank.vectors.detach().clone()
    losses = train_textual_inversion(parts, bank, latents, rows, prompts, TIConfig(steps=30, batch=4, lr=5e-2))
    after = fixed_loss()
    assert len(losses) == 30 and not torch.equal(start, bank.vectors.detach())
    assert after < before, (before, after)
    bank.remove()


def test_classifier_guidance_raises_the_guides_probability_of_the_class(parts, classifier):
    from dct.methods.guidance import guided_images

    seeds = [70000, 70001, 70002, 70003]
    target = 3
    kw = dict(steps=4, guidance=3.0, progress=False)
    plain = guided_images(parts, classifier, target, ["a three"] * 4, seeds, scale=0.0, **kw)
    steered = guided_images(parts, classifier, target, ["a three"] * 4, seeds, scale=200.0, **kw)
    with torch.no_grad():
        p_plain = torch.softmax(classifier(plain), -1)[:, target]
        p_steered = torch.softmax(classifier(steered), -1)[:, target]
    # the same seeds, so image by image: guidance raises the class's probability on every one (random
    # weights: a near-uniform classifier, so the rise is small, ~0.002, but 1e4 x float rounding)
    assert (p_steered > p_plain).all(), (p_plain, p_steered)
    assert (p_steered - p_plain).mean() > 1e-3, (p_plain, p_steered)


def test_prompt_search_never_sees_the_evaluation_seeds(parts, classifier, monkeypatch):
    from dct.methods import prompt_search

    seen = []
    real = prompt_search.generate_images

    def spy(parts, prompts, seeds, **kw):
        seen.extend(seeds)
        return real(parts, prompts, seeds, **kw)

    monkeypatch.setattr(prompt_search, "generate_images", spy)
    eval_seeds = list(range(70000, 70004))
    templates = ["a {}", "the number {}", "A photo of {}"]
    out = prompt_search.select_prompts(parts, classifier, [1, 3], ["one", "three"], templates, [10000, 10001],
                                       forbidden=eval_seeds, steps=3, guidance=3.0, progress=False)
    assert seen and set(seen) == {10000, 10001}
    assert set(out["chosen"]) == {1, 3} and all(t in templates for t in out["chosen"].values())
    assert out["images"] == 3 * 2 * 2 and all(len(v) == 3 for v in out["scores"].values())
    # the choice is the best guide score per class, ties to the earlier template
    for c, scores in out["scores"].items():
        assert out["chosen"][c] == templates[int(np.argmax(scores))]
    with pytest.raises(ConfigError, match="evaluation seeds"):
        prompt_search.select_prompts(parts, classifier, [1], ["one"], templates, [70001], forbidden=eval_seeds,
                                     steps=3, progress=False)


SPEC = """
[experiment]
name = "methods-mini"
cell = "methods"
store = "{store}"
baseline = {{ method = "dct-fast" }}

[fixed]
model = "{model}"
classifier = "timm:{clf}"
judge = "timm:{clf}"
classes = [0, 3]  # the random judge calls every image 0: outcomes 1 1 1 / 0 0 0, so misplaced targets show
replicates = 2
eval_seeds = 3
eval_steps = 3
eval_guidance = 3.0
selection_seeds = 2
ti_steps = 3
guidance_scales = [0.0, 5.0]
templates = ["a {{}}", "the number {{}}"]
dct = {{ steps = 3, max_epochs = 2, images_per_update = 2, rollout_batch = 2, depth = 1 }}

[axes]
method = ["dct-fast", "prompt-search", "textual-inversion-k1", "classifier-guidance"]
"""


def test_methods_cell_end_to_end(tmp_path, tiny_sd_dir, tiny_timm_dir, classifier):
    from PIL import Image

    spec = tmp_path / "methods.toml"
    spec.write_text(SPEC.format(store=tmp_path / "store", model=tiny_sd_dir, clf=tiny_timm_dir))
    result = run_grid(spec, console=Console(file=io.StringIO()), show_progress=False)
    cells = load_cells(tmp_path / "store").set_index(C.LABEL)
    assert [s for _, s in result.ran] == ["ok"] * 4, cells[C.ERROR].tolist()
    m = C.metric_col
    for label, row in cells.iterrows():
        stored = json.loads(row[m("outcomes")])
        assert stored["classes"] == [0, 3] and stored["eval_seeds"] == [70000, 70001, 70002]
        assert stored["train_seeds"] == [0, 1000]  # run r pairs with run r of the baseline
        tok = np.array([[[c == "1" for c in run] for run in cls] for cls in stored["token"]], dtype=float)
        assert tok.shape == (2, 2, 3) and row[m("acc")] == pytest.approx(tok.mean())
        # run 0's images, saved as examples, judged again by hand, give the stored outcomes
        folder = tmp_path / "store" / row[C.ARTIFACTS_DIR] / "examples" / "token"
        files = [folder / f"class{c}-seed{s}.png" for c in (0, 3) for s in (70000, 70001, 70002)]
        images = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1)
                              for f in files]).float() / 255
        with torch.no_grad():
            hits = classifier(images).argmax(1).numpy() == np.repeat([0, 3], 3)
        assert hits.tolist() == tok[:, 0].reshape(-1).astype(bool).tolist(), label
        assert row[m("cost_100_s")] == pytest.approx(row[m("one_time_s_per_class")] + 100 * row[m("s_per_image")])
        assert row[m("s_per_image")] > 0
    ti = cells.loc["method=textual-inversion-k1"]
    assert ti[m("labelled_images_per_class")] == 1 and ti[m("runs_trained")] == 2
    ps = cells.loc["method=prompt-search"]
    assert ps[m("images_consumed_per_class")] == 2 * 2 and ps[m("labelled_images_per_class")] == 0
    assert ps[m("runs_trained")] == 1  # deterministic: one set of images, stored as both runs
    assert cells.loc["method=classifier-guidance"][m("guidance_scale")] in (0.0, 5.0)
    assert cells.loc["method=dct-fast"][m("images_consumed_per_class")] > 0
    # the figure and the README table read the store
    from bench.figures.draw import draw_figures
    from bench.figures.methods import STEM, table_markdown

    drawn = draw_figures(tmp_path / "store", formats=("png",), only=["methods-accuracy-vs-cost"])
    assert [d.stem for d in drawn.drawn] == [STEM] and (tmp_path / "store" / "figures" / f"{STEM}.png").is_file()
    table = table_markdown(load_cells(tmp_path / "store"))
    assert len(table.splitlines()) == 2 + 4 and "| prompt-search |" in table
