"""Spec parsing errors, the family registry, and world: dispatch."""

import sys
import types

import pytest
import torch

from dct.classifiers import CLASSIFIER_FAMILIES, Classifier, load_classifier, register_family
from dct.classifiers.preprocess import Preprocessing
from dct.errors import ClassifierSpecError, DCTError, ModelNotFoundError


@pytest.mark.parametrize("spec, named", [
    ("foo:bar", "'foo'"),
    ("resnet18", "'resnet18'"),
    ("timm:", "'timm:'"),
    ("  :x", "no family prefix"),
])
def test_bad_specs_name_the_value_and_the_accepted_prefixes(spec, named):
    with pytest.raises(ClassifierSpecError) as err:
        load_classifier(spec)
    message = str(err.value)
    assert named in message
    if "no model" not in message:
        assert all(f"'{p}:'" in message for p in ("timm", "hf", "hf-vitmae", "torchvision", "file", "ensemble",
                                                  "world"))


def test_not_a_string():
    with pytest.raises(ClassifierSpecError, match="string"):
        load_classifier(None)


def test_missing_paths_per_family_name_the_path(tmp_path):
    missing = tmp_path / "absent"
    for spec in (f"timm:{missing}", f"hf:{missing}", f"hf-vitmae:{missing}", f"file:{missing}",
                 f"torchvision:resnet18@{missing}", f"timm:test_resnet@{missing}", "hf:./absent-folder/x/y"):
        with pytest.raises(ModelNotFoundError, match="absent") as err:
            load_classifier(spec)
        assert isinstance(err.value, DCTError)


def test_register_family(monkeypatch):
    monkeypatch.setattr("dct.classifiers.registry.CLASSIFIER_FAMILIES", dict(CLASSIFIER_FAMILIES))
    from dct.classifiers import registry

    def load_const(target, *, trust_pickle=False):
        n = int(target)
        return Classifier(torch.nn.Linear(3, n), Preprocessing(), [f"c{i}" for i in range(n)],
                          spec=f"const:{n}", family="const", source="test")

    registry.register_family("const", load_const)
    clf = load_classifier("const:4")
    assert clf.num_classes == 4 and clf.spec == "const:4"
    with pytest.raises(ValueError, match="already registered"):
        registry.register_family("const", load_const)
    with pytest.raises(ValueError, match="prefix"):
        registry.register_family("Bad Prefix", load_const)
    with pytest.raises(ClassifierSpecError, match="'const:'"):
        load_classifier("nope:1")
    assert register_family is registry.register_family


@pytest.fixture()
def fake_world(monkeypatch, tmp_path, timm_dir, hf_dir):
    (tmp_path / "empty").mkdir()
    folders = {"guide": timm_dir, "judge": hf_dir, "broken": tmp_path / "empty", "unbuilt": tmp_path / "nothing"}

    def classifier_dir(name):
        if name not in folders:
            raise KeyError(name)
        return folders[name]

    monkeypatch.setitem(sys.modules, "dct.world.paths", types.SimpleNamespace(classifier_dir=classifier_dir))


def test_world_dispatches_by_folder_content(fake_world, timm_dir, hf_dir, images):
    guide = load_classifier("world:guide")
    assert guide.spec == "world:guide" and guide.family == "timm" and str(timm_dir) in guide.source
    assert guide.describe()["world_name"] == "guide"
    judge = load_classifier("world:judge")
    assert judge.spec == "world:judge" and judge.family == "hf"
    assert judge(images).shape == (2, 5)


def test_world_errors(fake_world):
    for name, match in (("broken", "neither"), ("unbuilt", "does not exist"), ("nobody", "nobody")):
        with pytest.raises(ModelNotFoundError, match=match):
            load_classifier(f"world:{name}")


def test_loads_onto_the_requested_device(timm_dir):
    clf = load_classifier(f"timm:{timm_dir}", device="cpu")
    assert {p.device.type for p in clf.parameters()} == {"cpu"}
