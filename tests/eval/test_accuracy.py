"""Accuracy reports: exact top-1/top-k per class and overall, bootstrap intervals, paired comparison."""

import json

import numpy as np
import pytest
import torch

from dct.errors import ConfigError
from dct.eval.accuracy import accuracy_report, classify, compare


def hand_logits():
    # 3 classes, 6 images. Ranking of each row (best first) written next to it.
    logits = torch.tensor([
        [3.0, 2.0, 1.0],  # 0 1 2   target 0: top1 yes
        [1.0, 3.0, 2.0],  # 1 2 0   target 0: top1 no, top2 no
        [2.0, 3.0, 1.0],  # 1 0 2   target 1: yes
        [3.0, 1.0, 2.0],  # 0 2 1   target 1: no, top2 no
        [1.0, 2.0, 3.0],  # 2 1 0   target 2: yes
        [2.0, 3.0, 1.0],  # 1 0 2   target 2: no, top2 no
    ])
    return logits, torch.tensor([0, 0, 1, 1, 2, 2])


def test_top1_topk_per_class_and_clipping():
    logits, targets = hand_logits()
    r = accuracy_report(logits, targets, n_boot=200, topk=2)
    assert r["k"] == {"top1": 1, "top5": 2}
    assert r["overall"]["top1"]["acc"] == pytest.approx(3 / 6)
    assert r["overall"]["top5"]["acc"] == pytest.approx(3 / 6)
    assert [c["top1"]["acc"] for c in r["per_class"]] == [0.5, 0.5, 0.5]
    assert [c["n"] for c in r["per_class"]] == [2, 2, 2]
    # top-5 of a 3-class classifier is top-3: everything is correct
    r5 = accuracy_report(logits, targets, n_boot=200)
    assert r5["k"]["top5"] == 3 and r5["overall"]["top5"]["acc"] == 1.0
    assert r5["overall"]["top5"]["lo"] == r5["overall"]["top5"]["hi"] == 1.0


def test_second_image_of_class_zero_is_top2_miss_but_top3_hit():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0, -1.0, -2.0]])
    r = accuracy_report(logits, 0, n_boot=10, topk=5)
    assert r["k"]["top5"] == 5 and r["overall"]["top1"]["acc"] == 0 and r["overall"]["top5"]["acc"] == 1
    r2 = accuracy_report(logits, 0, n_boot=10, topk=2)
    assert r2["overall"]["top5"]["acc"] == 0


def test_predictions_instead_of_logits_give_the_same_report():
    logits, targets = hand_logits()
    ranked = logits.argsort(1, descending=True)
    a = accuracy_report(logits, targets, n_boot=100, topk=2)
    b = accuracy_report(ranked, targets, num_classes=3, n_boot=100, topk=2)
    assert a["overall"] == b["overall"] and a["per_class"] == b["per_class"]
    top1_only = accuracy_report(ranked[:, 0], targets, num_classes=3, n_boot=100)
    assert "top5" not in top1_only["k"]  # not enough ranked predictions for top-k: stated, not faked
    assert top1_only["overall"]["top1"] == a["overall"]["top1"]


def test_class_ids_order_and_absent_class_and_labels():
    logits, targets = hand_logits()
    r = accuracy_report(logits, targets, [2, 0], labels=["a", "b", "c"], n_boot=50)
    assert [c["class_id"] for c in r["per_class"]] == [2, 0]
    assert [c["label"] for c in r["per_class"]] == ["c", "a"]
    assert r["overall"]["n"] == 6  # class 1 still counts overall


def test_bootstrap_ci_contains_estimate_and_shrinks_with_more_images():
    rng = np.random.default_rng(1)
    widths = []
    for n in (20, 80, 320):
        correct = rng.random(n) < 0.6
        logits = torch.zeros(n, 4)
        logits[torch.arange(n), torch.where(torch.from_numpy(correct), 0, 1)] = 1.0
        r = accuracy_report(logits, 0, n_boot=2000, seed=0)
        o = r["overall"]["top1"]
        assert o["lo"] <= o["acc"] <= o["hi"]
        assert o["lo"] < o["acc"] < o["hi"]
        widths.append(o["hi"] - o["lo"])
    assert widths[0] > widths[1] > widths[2]
    # roughly 1/sqrt(n): quadrupling n halves the width
    assert widths[0] / widths[2] == pytest.approx(4, rel=0.35)


def test_overall_interval_is_stratified_and_deterministic():
    logits, targets = hand_logits()
    a = accuracy_report(logits, targets, n_boot=500, seed=3)
    b = accuracy_report(logits, targets, n_boot=500, seed=3)
    assert a == b
    assert "stratified" in a["ci"]["method"] and a["ci"]["n_boot"] == 500
    json.dumps(a)  # JSON-able as is


def test_compare_paired_on_same_seeds_is_narrower_than_unpaired():
    rng = np.random.default_rng(0)
    n_cls, n_seeds = 4, 25
    targets = np.repeat(np.arange(n_cls), n_seeds)
    seeds = np.tile(np.arange(n_seeds), n_cls)
    # outcomes share most of their randomness through the seed, as images from the same latents do
    easy = rng.random(len(targets)) < 0.5
    plain = easy.copy()
    token = easy | (rng.random(len(targets)) < 0.3)

    def logits_for(correct):
        lg = torch.zeros(len(targets), n_cls)
        pred = np.where(correct, targets, (targets + 1) % n_cls)
        lg[torch.arange(len(targets)), torch.from_numpy(pred)] = 1.0
        return lg

    rt = accuracy_report(logits_for(token), targets, seeds=seeds.tolist(), n_boot=1000)
    rp = accuracy_report(logits_for(plain), targets, seeds=seeds.tolist(), n_boot=1000)
    d = compare(rt, rp)
    assert d["paired"] is True
    o = d["overall"]["top1"]
    assert o["diff"] == pytest.approx(token.mean() - plain.mean())
    assert o["lo"] <= o["diff"] <= o["hi"] and o["lo"] > 0  # the token never hurts here
    # shuffled order of the second report does not matter: pairs are matched by (class, seed)
    perm = rng.permutation(len(targets))
    rp_shuffled = accuracy_report(logits_for(plain)[perm], targets[perm], seeds=seeds[perm].tolist(), n_boot=1000)
    assert compare(rt, rp_shuffled)["overall"]["top1"]["diff"] == pytest.approx(o["diff"])
    # without seeds the comparison is unpaired, and wider
    u = compare(accuracy_report(logits_for(token), targets, n_boot=1000),
                accuracy_report(logits_for(plain), targets, n_boot=1000))
    assert u["paired"] is False
    assert (u["overall"]["top1"]["hi"] - u["overall"]["top1"]["lo"]) > (o["hi"] - o["lo"])
    assert [c["class_id"] for c in d["per_class"]] == list(range(n_cls))


def test_classify_batches_match_one_pass(tiny_judge):
    images = torch.rand(7, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    full = classify(tiny_judge, images, batch_size=7)
    assert full.shape == (7, 10) and full.dtype == torch.float32
    torch.testing.assert_close(classify(tiny_judge, images, batch_size=3), full)
    assert tiny_judge.training  # mode restored


@pytest.mark.parametrize("bad, match", [
    (dict(scores=torch.zeros(0, 3), targets=[]), "at least one image"),
    (dict(scores=torch.zeros(3, 3), targets=[0, 1]), "3 images but 2 targets"),
    (dict(scores=torch.zeros(2, 3), targets=[0, 3]), "class ids in 0..2"),
    (dict(scores=torch.zeros(2, 3), targets=[0, 1], seeds=[0]), "2 images but 1 seeds"),
    (dict(scores=torch.zeros(2), targets=[0, 1]), "logits"),
    (dict(scores=torch.zeros(2, 3), targets=[0, 1], n_boot=0), "n_boot"),
])
def test_errors_are_clear(bad, match):
    with pytest.raises(ConfigError, match=match):
        accuracy_report(**bad)


def logits_with_outcomes(correct, targets, num_classes):
    """Logits whose top-1 is the target where `correct`, else the next class."""
    targets = np.asarray(targets)
    lg = torch.zeros(len(targets), num_classes)
    pred = np.where(correct, targets, (targets + 1) % num_classes)
    lg[torch.arange(len(targets)), torch.from_numpy(pred)] = 1.0
    return lg


def test_degenerate_classes_give_degenerate_intervals():
    # every class all right or all wrong: no resample can change any class's count, so every interval,
    # the overall one included (class sizes fixed), is the point itself
    targets = np.repeat([0, 1, 2], [5, 7, 4])
    correct = targets != 1
    r = accuracy_report(logits_with_outcomes(correct, targets, 3), targets, n_boot=500, topk=1)
    for entry, acc in zip(r["per_class"], (1.0, 0.0, 1.0)):
        assert entry["top1"] == {"acc": acc, "lo": acc, "hi": acc}
    assert r["overall"]["top1"] == {"acc": 9 / 16, "lo": 9 / 16, "hi": 9 / 16}


def test_overall_interval_has_the_stratified_standard_error():
    # Stratified resampling keeps class sizes fixed, so the overall accuracy varies only within classes:
    # SE = sqrt(sum_c n_c p_c (1 - p_c)) / n = 0.0354 here. Resampling all images together would add the
    # class-mix variance: sqrt(p (1 - p) / n) = 0.0433.
    targets = np.repeat([0, 1], 50)
    correct = np.concatenate([np.ones(50, bool), np.arange(50) % 2 == 0])
    r = accuracy_report(logits_with_outcomes(correct, targets, 2), targets, n_boot=4000, topk=1)
    o = r["overall"]["top1"]
    se_stratified = np.sqrt(50 * 0.5 * 0.5) / 100
    assert o["acc"] == 0.75
    assert (o["hi"] - o["lo"]) / (2 * 1.96 * se_stratified) == pytest.approx(1, abs=0.08)


def test_interval_covers_the_true_accuracy_about_95_percent_of_the_time():
    # 2000 simulated evaluations of a known truth (three classes of 30 images, accuracies 0.9/0.6/0.3);
    # the coverage's standard error is 0.005, and the percentile bootstrap runs a little off nominal at n=30
    rng = np.random.default_rng(0)
    p = np.array([0.9, 0.6, 0.3])
    targets = np.repeat(np.arange(3), 30)
    covered_overall = covered_class = 0
    draws = 2000
    for i in range(draws):
        correct = rng.random(len(targets)) < p[targets]
        r = accuracy_report(logits_with_outcomes(correct, targets, 3), targets, n_boot=400, seed=i, topk=1)
        o, c = r["overall"]["top1"], r["per_class"][1]["top1"]
        covered_overall += o["lo"] <= p.mean() <= o["hi"]
        covered_class += c["lo"] <= p[1] <= c["hi"]
    assert 0.935 <= covered_overall / draws <= 0.97
    assert 0.93 <= covered_class / draws <= 0.975
