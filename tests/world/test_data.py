"""Offline data: deterministic, and the held-out split never reaches training."""

import numpy as np
import pytest
import torch

from dct.errors import ConfigError
from dct.world import data as D


def test_heldout_split_is_disjoint_stratified_and_fixed():
    held, train = D.heldout_indices(), D.train_indices()
    labels = D.digit_labels()
    assert len(labels) == 1797
    assert len(np.intersect1d(held, train)) == 0
    assert len(held) + len(train) == 1797
    for c in range(10):
        n_c = (labels == c).sum()
        assert (labels[held] == c).sum() == round(0.2 * n_c)
    assert np.array_equal(held, D.heldout_indices())


@pytest.mark.parametrize("seed", [3, 4])
def test_classifier_subsets_stay_in_training_split(seed):
    sub = D.train_subset(seed, 0.9)
    assert len(np.intersect1d(sub, D.heldout_indices())) == 0
    assert np.isin(sub, D.train_indices()).all()
    assert not np.array_equal(D.train_subset(3), D.train_subset(4))


def test_training_refuses_heldout_scans():
    with pytest.raises(ConfigError, match="held-out"):
        D.load_domain("handwritten", "train", indices=D.heldout_indices()[:5])


@pytest.mark.parametrize("domain", D.DOMAINS)
def test_domains_are_deterministic_given_seed(domain):
    kw = dict(n=40) if domain == "printed" else dict(indices=D.train_indices()[:40])
    a, ya = D.load_domain(domain, "train", seed=1, **kw)
    b, yb = D.load_domain(domain, "train", seed=1, **kw)
    c, _ = D.load_domain(domain, "train", seed=2, **kw)
    assert a.dtype == torch.uint8 and a.shape == (40, 3, 32, 32)
    assert torch.equal(a, b) and torch.equal(ya, yb)
    assert not torch.equal(a, c)
    assert set(ya.tolist()) <= set(range(10))


@pytest.mark.parametrize("domain", D.DOMAINS)
def test_heldout_sets_are_fixed(domain):
    a, ya = D.load_domain(domain, "heldout", seed=1)
    b, yb = D.load_domain(domain, "heldout", seed=2)  # the seed does not move a fixed split
    assert torch.equal(a, b) and torch.equal(ya, yb)
    assert torch.bincount(ya, minlength=10).min() >= 35


def test_domains_look_different():
    hw, _ = D.load_domain("handwritten", "heldout", as_float=True)
    pr, _ = D.load_domain("printed", "heldout", as_float=True)
    # printed digits carry pixel noise: far more high-frequency energy than the soft upsampled scans
    def hf(x):
        return (x[..., 1:] - x[..., :-1]).abs().mean()
    assert hf(pr) > 1.5 * hf(hw)


def test_colours_keep_luminance_gap():
    fg, bg = D.random_colours(500, np.random.default_rng(0))
    assert (np.abs(D._luma(fg) - D._luma(bg)) >= D.MIN_LUMA_GAP).all()


def test_reference_pngs(tmp_path):
    from PIL import Image

    folder = D.write_reference_pngs(tmp_path / "ref")
    files = sorted(folder.glob("*.png"))
    assert len(files) == len(D.heldout_indices())
    img = np.asarray(Image.open(files[0]))
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    ref, _ = D.load_domain("handwritten", "heldout")
    assert np.array_equal(img, ref[int(files[0].stem.split("_")[1])].permute(1, 2, 0).numpy())
