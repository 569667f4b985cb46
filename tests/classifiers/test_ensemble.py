"""ensemble: family: mean log-softmax over a shared label set."""

import pytest
import torch

from dct.classifiers import EnsembleClassifier, load_classifier, resolve_class
from dct.errors import ClassifierSpecError

from .tiny_models import BIRDS, DIGITS, save_timm_folder


@pytest.fixture(scope="module")
def second_timm_dir(tmp_path_factory):
    # another seed and other preprocessing: members prepare images their own way
    return save_timm_folder(tmp_path_factory.mktemp("timm2") / "digits-b", seed=1, mean=(0.4,) * 3, crop_pct=1.0)


def test_ensemble_averages_member_log_probabilities(timm_dir, second_timm_dir, images):
    clf = load_classifier(f"ensemble:timm:{timm_dir}, timm:{second_timm_dir}")
    assert isinstance(clf, EnsembleClassifier)
    assert clf.spec == f"ensemble:timm:{timm_dir},timm:{second_timm_dir}"
    assert clf.labels == DIGITS and resolve_class(clf, "seven") == 7
    a, b = clf.members
    images = images.clone().requires_grad_(True)
    logits = clf(images)
    assert logits.shape == (2, 10)
    expected = (a(images).log_softmax(-1) + b(images).log_softmax(-1)) / 2
    assert torch.allclose(logits, expected, atol=1e-6)
    logits[:, 7].sum().backward()
    assert images.grad.abs().sum() > 0
    assert clf.features(images).shape == (2, a.features(images).shape[1] + b.features(images).shape[1])
    d = clf.describe()
    assert [m["spec"] for m in d["members"]] == [a.spec, b.spec] and "log_softmax" in d["combine"]


def test_label_mismatch_is_an_error_naming_both_members(tmp_path, timm_dir, hf_dir):
    with pytest.raises(ClassifierSpecError, match="10 classes") as err:
        load_classifier(f"ensemble:timm:{timm_dir},hf:{hf_dir}")
    assert str(timm_dir) in str(err.value) and str(hf_dir) in str(err.value)
    other_birds = save_timm_folder(tmp_path / "birds", labels=["Cardinal"] + BIRDS[1:])
    with pytest.raises(ClassifierSpecError, match=r"class 0 is 'Cardinal'|class 0 is 'Black footed Albatross'"):
        load_classifier(f"ensemble:timm:{other_birds},hf:{hf_dir}")


def test_malformed_ensembles(timm_dir):
    with pytest.raises(ClassifierSpecError, match="at least two"):
        load_classifier(f"ensemble:timm:{timm_dir}")
    with pytest.raises(ClassifierSpecError, match="nested"):
        load_classifier(f"ensemble:timm:{timm_dir},ensemble:timm:{timm_dir},timm:{timm_dir}")
    with pytest.raises(ClassifierSpecError, match="'bogus'"):
        load_classifier(f"ensemble:timm:{timm_dir},bogus:thing")


def test_member_paths_may_hold_commas(tmp_path, timm_dir):
    odd = save_timm_folder(tmp_path / "a,b", seed=2)
    assert len(load_classifier(f"ensemble:timm:{odd},timm:{timm_dir}").members) == 2
