"""The hierarchical bootstrap against answers known in advance."""

import numpy as np
import pytest

from dct.errors import ConfigError
from dct.eval.hierarchical import hierarchical_ci, paired_difference


def test_all_correct_and_all_wrong_give_the_degenerate_interval():
    for value in (0.0, 1.0):
        r = hierarchical_ci(np.full((10, 3, 16), value))
        assert (r["acc"], r["lo"], r["hi"]) == (value, value, value)


def test_class_level_alone_gives_the_binomial_interval():
    # 5 classes always right, 5 always wrong: only the draw of classes varies, so the bootstrap mean is
    # Binomial(10, 1/2) / 10, whose 2.5% and 97.5% quantiles are 0.2 and 0.8.
    x = np.zeros((10, 3, 16))
    x[:5] = 1
    r = hierarchical_ci(x, n_boot=4000)
    assert (r["acc"], r["lo"], r["hi"]) == (0.5, 0.2, 0.8)


def test_training_runs_are_resampled_within_each_class():
    # every class has the same three runs, two right on every image and one wrong on every image: only
    # resampling the runs can move the mean (without it the interval would be exactly [2/3, 2/3])
    x = np.zeros((10, 3, 16))
    x[:, :2] = 1
    r = hierarchical_ci(x)
    assert r["lo"] < 2 / 3 - 0.1 and r["hi"] > 2 / 3 + 0.1
    assert r["n_runs"] == 3 and "training runs" in r["covers"]


def test_images_are_resampled_within_each_run():
    x = np.zeros((10, 3, 16))
    x[:, :, :8] = 1  # identical classes and runs; half the images right
    r = hierarchical_ci(x)
    assert r["lo"] < 0.5 - 0.02 and r["hi"] > 0.5 + 0.02


def test_one_run_says_training_variance_is_not_covered():
    r = hierarchical_ci(np.ones((4, 16)))
    assert r["n_runs"] == 1 and "NOT covered" in r["covers"]


def test_coverage_near_95_percent_on_simulated_three_level_data():
    # class accuracies from Beta(4, 2) (mean 2/3), runs scatter around their class, images are Bernoulli
    rng = np.random.default_rng(1)
    truth, draws, hits = 2 / 3, 400, 0
    for i in range(draws):
        pc = rng.beta(4, 2, size=10)
        pr = np.clip(pc[:, None] + rng.normal(0, 0.1, size=(10, 3)), 0, 1)
        x = rng.random((10, 3, 16)) < pr[:, :, None]
        r = hierarchical_ci(x, n_boot=400, seed=i)
        hits += r["lo"] <= truth <= r["hi"]
    # 400 draws: the binomial standard error of a 95% coverage is 1.1 points
    assert 0.90 <= hits / draws <= 0.985


def test_paired_difference_cancels_what_both_sides_share():
    rng = np.random.default_rng(0)
    b = (rng.random((10, 3, 32)) < 0.5).astype(float)
    a = b.copy()
    flip = rng.random(a.shape) < 0.05
    a[flip & (a == 0)] = 1  # a = b with 5% of b's misses turned into hits
    paired = paired_difference(a, b)
    assert paired["diff"] == pytest.approx(a.mean() - b.mean())
    assert 0 < paired["lo"] <= paired["diff"] <= paired["hi"]
    # the same sides drawn independently: the interval is several times wider
    lone_a, lone_b = hierarchical_ci(a, seed=1), hierarchical_ci(b, seed=2)
    unpaired_width = np.hypot(lone_a["hi"] - lone_a["lo"], lone_b["hi"] - lone_b["lo"])
    assert paired["hi"] - paired["lo"] < unpaired_width / 3
    same = paired_difference(b, b)
    assert (same["diff"], same["lo"], same["hi"]) == (0.0, 0.0, 0.0)


def test_a_side_without_runs_is_broadcast_and_paired_by_image():
    # the plain prompt (one "run") against a token whose every run fixes exactly the plain prompt's misses
    plain = np.zeros((5, 1, 8))
    plain[:, :, :4] = 1
    token = np.ones((5, 3, 8))
    r = paired_difference(token, plain)
    assert r["diff"] == 0.5 and r["lo"] < 0.5 < r["hi"]
    with pytest.raises(ConfigError, match="same classes, runs and images"):
        paired_difference(np.ones((5, 3, 8)), np.ones((5, 2, 8)))
