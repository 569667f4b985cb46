"""file: family: TorchScript archives load; pickled modules need trust; bare weights are redirected."""

import json

import pytest
import torch
from torch import nn

from dct.classifiers import load_classifier
from dct.errors import ClassifierSpecError, ModelNotFoundError, UnsafeWeightsError

# torch 2.14 deprecates torch.jit; users still hold TorchScript archives, so the family keeps reading them
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")


class TinyNet(nn.Module):
    def __init__(self, num_classes=4):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8, num_classes)

    @torch.jit.export
    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))


def test_torchscript_archive_with_sidecar(tmp_path):
    torch.manual_seed(0)
    net = TinyNet().eval()
    path = tmp_path / "net.pt"
    torch.jit.script(net).save(str(path))
    (tmp_path / "net.pt.json").write_text(json.dumps(
        {"input_size": [3, 16, 16], "crop_pct": 1.0, "mean": [0.5] * 3, "std": [0.5] * 3,
         "label_names": ["cat", "dog", "fox", "owl"]}))
    clf = load_classifier(f"file:{path}")  # no trust needed: TorchScript is not unpickled Python
    assert clf.labels == ["cat", "dog", "fox", "owl"] and clf.describe()["file_kind"] == "torchscript"
    images = torch.rand(2, 3, 16, 16, requires_grad=True)
    logits = clf(images)
    assert torch.allclose(logits, net((images - 0.5) / 0.5), atol=1e-5)
    logits.sum().backward()
    assert images.grad.abs().sum() > 0
    assert clf.features(images).shape == (2, 8)


def test_torchscript_without_sidecar_warns_and_counts_classes(tmp_path):
    path = tmp_path / "traced.pt"
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 6)).eval()
    torch.jit.trace(net, torch.rand(1, 3, 8, 8)).save(str(path))
    with pytest.warns(UserWarning, match="sidecar"):
        clf = load_classifier(f"file:{path}")
    assert clf.num_classes == 6 and clf.preprocessing.resize == "none"
    with pytest.raises(NotImplementedError, match="features"):
        clf.features(torch.rand(1, 3, 8, 8))


def test_pickled_module_is_refused_unless_trusted(tmp_path):
    path = tmp_path / "whole-model.pt"
    torch.save(TinyNet().eval(), path)
    with pytest.raises(UnsafeWeightsError, match="arbitrary code") as err:
        load_classifier(f"file:{path}")
    assert str(path) in str(err.value) and "trust_pickle" in str(err.value)
    with pytest.warns(UserWarning):
        clf = load_classifier(f"file:{path}", trust_pickle=True)
    assert clf.num_classes == 4 and clf.features(torch.rand(1, 3, 8, 8)).shape == (1, 8)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_plain_weights_point_to_an_architecture_spec(tmp_path, suffix):
    from safetensors.torch import save_file

    path = tmp_path / f"weights{suffix}"
    state = TinyNet().state_dict()
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    with pytest.raises(ClassifierSpecError, match=r"timm:<arch>@"):
        load_classifier(f"file:{path}")


def test_missing_or_junk_file(tmp_path):
    with pytest.raises(ModelNotFoundError, match="absent.pt"):
        load_classifier(f"file:{tmp_path / 'absent.pt'}")
    (tmp_path / "junk.pt").write_text("not a model")
    with pytest.raises(ModelNotFoundError, match="junk.pt"):
        load_classifier(f"file:{tmp_path / 'junk.pt'}")
