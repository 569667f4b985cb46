"""Evaluation images: one per (prompt, seed), a function of that pair alone, through the one rollout."""

import numpy as np
import pytest
import torch

from dct.errors import ConfigError
from dct.generate import evaluate_prompts, generate_images, save_images, seed_latents

STEPS = 3
PROMPTS = ["a photo of a seven", "a photo of a one", "seven"]


def gen(parts, prompts, seeds, **kw):
    return generate_images(parts, prompts, seeds, steps=STEPS, progress=False, **kw)


def test_deterministic_per_seed_and_independent_of_batching(parts):
    prompts = [PROMPTS[i % 3] for i in range(5)]
    seeds = [0, 1, 2, 0, 7]
    a = gen(parts, prompts, seeds, batch_size=5)
    assert a.shape == (5, 3, parts.resolution, parts.resolution) and a.dtype == torch.float32
    assert 0 <= a.min() and a.max() <= 1
    torch.testing.assert_close(gen(parts, prompts, seeds, batch_size=5), a, rtol=0, atol=0)  # repeatable
    torch.testing.assert_close(gen(parts, prompts, seeds, batch_size=2), a, rtol=0, atol=1e-5)
    # an image alone equals the same (prompt, seed) inside a mixed batch
    torch.testing.assert_close(gen(parts, [prompts[4]], [7])[0], a[4], rtol=0, atol=1e-5)
    # the seed and the prompt both matter
    assert (a[0] - gen(parts, [prompts[0]], [1])[0]).abs().max() > 1e-3
    assert (a[0] - gen(parts, [PROMPTS[1]], [0])[0]).abs().max() > 1e-3


def test_latents_come_from_one_generator_per_seed(parts):
    lat = seed_latents(parts, [3, 4])
    torch.testing.assert_close(lat[1], torch.randn(parts.latent_shape, generator=torch.Generator().manual_seed(4)))


def test_longest_padding_batches_by_length_and_stays_batch_independent(parts):
    prompts = ["seven", "a photo of a seven", "seven", "one"]
    a = gen(parts, prompts, [0, 1, 2, 3], padding="longest", batch_size=4)
    b = gen(parts, prompts, [0, 1, 2, 3], padding="longest", batch_size=1)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_save_images_round_trip(tmp_path):
    from PIL import Image

    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    paths = save_images(images, tmp_path / "out", ["x-seed0000", "y.png"])
    assert [p.name for p in paths] == ["x-seed0000.png", "y.png"]
    back = torch.from_numpy(np.array(Image.open(paths[0]))).permute(2, 0, 1).float() / 255
    assert (back - images[0]).abs().max() <= 0.5 / 255 + 1e-6
    with pytest.raises(ConfigError, match="unique"):
        save_images(images, tmp_path / "out", ["a", "a"])
    with pytest.raises(ConfigError, match="2 images but 1 names"):
        save_images(images, tmp_path / "out", ["a"])


def test_evaluate_prompts_pairs_token_and_plain_on_the_same_seeds(parts, tiny_judge):
    from dct.eval.accuracy import compare

    seeds = [0, 1, 2]
    plain = evaluate_prompts(parts, tiny_judge, {7: "seven", 1: "one"}, seeds, n_boot=50, steps=STEPS, progress=False)
    other = evaluate_prompts(parts, tiny_judge, {7: "a photo of a seven", 1: "a photo of a one"}, seeds, n_boot=50,
                             steps=STEPS, progress=False)
    assert plain["n_images"] == 6 and [c["class_id"] for c in plain["per_class"]] == [7, 1]
    assert plain["images"]["seed"] == [0, 1, 2, 0, 1, 2]
    assert plain["prompts"] == {"7": "seven", "1": "one"}
    assert plain["generation"]["steps"] == STEPS and plain["generation"]["scheduler"] == "ddim"
    assert compare(other, plain)["paired"] is True
    report, images = evaluate_prompts(parts, tiny_judge, {7: "seven"}, seeds, n_boot=50, steps=STEPS,
                                      progress=False, return_images=True)
    torch.testing.assert_close(images, gen(parts, ["seven"] * 3, seeds), rtol=0, atol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(prompts=["a", "b"], seeds=[0]), "2 prompts and 1 seeds"),
    (dict(prompts=[], seeds=[]), "nothing to generate"),
    (dict(prompts=["a"], seeds=[0], scheduler="nope"), "scheduler 'nope'"),
    (dict(prompts=["a"], seeds=[0], padding="left"), "padding 'left'"),
    (dict(prompts=["a"], seeds=[0], batch_size=0), "batch_size=0"),
])
def test_errors_are_clear(parts, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        generate_images(parts, progress=False, **kwargs)
