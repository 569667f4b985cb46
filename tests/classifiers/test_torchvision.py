"""torchvision family: architecture@weights files; registry weights offline."""

import pytest
import torch

from dct.classifiers import load_classifier, resolve_class
from dct.errors import ClassNotFoundError, ModelNotFoundError


def _save(tmp_path, num_classes):
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = torchvision.models.get_model("mobilenet_v3_small", weights=None, num_classes=num_classes).eval()
    path = tmp_path / f"mnv3-{num_classes}.safetensors"
    save_file(model.state_dict(), str(path))
    return model, path


def test_weights_file_with_preset_preprocessing(tmp_path):
    model, path = _save(tmp_path, 10)
    clf = load_classifier(f"torchvision:mobilenet_v3_small@{path}")
    assert clf.spec == f"torchvision:mobilenet_v3_small@{path}" and clf.num_classes == 10
    assert clf.labels[:2] == ["class_0", "class_1"]
    p = clf.preprocessing
    assert (p.resize, p.size, p.crop) == ("short_side", (256,), (224, 224))
    images = torch.rand(1, 3, 64, 80, requires_grad=True)
    logits = clf(images)
    assert torch.allclose(logits, model(clf.preprocess(images)), atol=1e-5)
    logits[0, 2].backward()
    assert images.grad.abs().sum() > 0
    assert clf.features(images).shape == (1, 1024)


def test_imagenet_sized_head_gets_imagenet_names(tmp_path):
    _, path = _save(tmp_path, 1000)
    clf = load_classifier(f"torchvision:mobilenet_v3_small@{path}")
    assert clf.labels[1].startswith("goldfish")
    assert resolve_class(clf, "Goldfish") == 1
    with pytest.raises(ClassNotFoundError, match="ambiguous"):
        resolve_class(clf, "crane")  # a bird (134) and a machine (517)


def test_unknown_name_and_offline_registry_weights(monkeypatch, tmp_path):
    from dct.classifiers import torchvision_models

    with pytest.raises(ModelNotFoundError, match="resnet18"):
        load_classifier("torchvision:resnet81")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torchvision_models, "host_reachable", lambda url: False)
    with pytest.raises(ModelNotFoundError, match=r"torchvision:resnet18@"):
        load_classifier("torchvision:resnet18")
