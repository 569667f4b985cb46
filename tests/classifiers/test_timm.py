"""timm family: local-dir folders, architecture@weights files, registry names offline."""

import argparse

import pytest
import torch

from dct.classifiers import Classifier, load_classifier
from dct.errors import DCTError, ModelNotFoundError, UnsafeWeightsError

from .tiny_models import DIGITS, save_timm_folder


def test_local_dir_folder_loads_with_its_labels_and_preprocessing(timm_dir):
    clf = load_classifier(f"timm:{timm_dir}")
    assert isinstance(clf, Classifier)
    assert clf.spec == f"timm:{timm_dir}"
    assert clf.labels == DIGITS and clf.num_classes == 10
    p = clf.preprocessing
    assert (p.resize, p.size, p.crop) == ("short_side", (36,), (32, 32))  # floor(32 / 0.875) = 36
    assert p.mean == (0.5, 0.5, 0.5) and p.std == (0.25, 0.25, 0.25)
    d = clf.describe()
    assert d["family"] == "timm" and d["num_params"] > 0 and len(d["weights_sha256"]) == 64
    assert load_classifier(f"TIMM:local-dir:{timm_dir}").spec == clf.spec


def test_logits_features_gradient_and_frozen(timm_dir, images):
    clf = load_classifier(f"timm:{timm_dir}")
    images = images.clone().requires_grad_(True)
    logits = clf(images)
    assert logits.shape == (2, 10)
    torch.nn.functional.cross_entropy(logits, torch.tensor([3, 3])).backward()
    assert images.grad is not None and images.grad.abs().sum() > 0 and torch.isfinite(images.grad).all()
    assert not any(p.requires_grad for p in clf.parameters())
    assert not any(p.grad is not None for p in clf.parameters())
    assert clf.features(images).shape == (2, clf.net.model.num_features)


def test_stays_in_eval_mode_under_a_parent_train_call(timm_dir, images):
    clf = load_classifier(f"timm:{timm_dir}")
    before = clf(images)
    torch.nn.Sequential(clf).train()  # batch norm must not switch to batch statistics
    assert not any(m.training for m in clf.modules())
    assert torch.allclose(clf(images), before)


def test_mean_std_in_config_change_the_output(tmp_path, images):
    a = load_classifier(f"timm:{save_timm_folder(tmp_path / 'a', mean=(0.5,) * 3, std=(0.25,) * 3)}")
    b = load_classifier(f"timm:{save_timm_folder(tmp_path / 'b', mean=(0.2,) * 3, std=(0.5,) * 3)}")
    assert not torch.allclose(a(images), b(images), atol=1e-3)
    # and b's logits are exactly its network on b's normalisation
    x = torch.nn.functional.interpolate(images, size=(36, 43), mode="bilinear", antialias=True)[..., 2:34, 6:38]
    assert torch.allclose(b(images), b.net.model((x - 0.2) / 0.5), atol=1e-4)


def _arch_weights(tmp_path, num_classes=7):
    import timm

    torch.manual_seed(1)
    model = timm.create_model("test_resnet", num_classes=num_classes).eval()
    return model, model.state_dict()


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_architecture_with_weights_file(tmp_path, images, suffix):
    from safetensors.torch import save_file

    model, state = _arch_weights(tmp_path)
    path = tmp_path / f"w{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save({"state_dict": state, "epoch": 3}, path)
    clf = load_classifier(f"timm:test_resnet@{path}")
    assert clf.num_classes == 7 and clf.labels[0] == "class_0"  # class count read from the file
    assert clf.spec == f"timm:test_resnet@{path}"
    x = clf.preprocess(images)
    assert x.shape[-2:] == (160, 160)  # test_resnet's registry pretrained_cfg
    assert torch.allclose(clf(images), model(x), atol=1e-5)


def test_pickled_checkpoint_is_refused_unless_trusted(tmp_path):
    _, state = _arch_weights(tmp_path)
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": state, "args": argparse.Namespace(lr=0.1)}, path)  # what training scripts write
    with pytest.raises(UnsafeWeightsError, match="trust_pickle") as err:
        load_classifier(f"timm:test_resnet@{path}")
    assert str(path) in str(err.value)
    assert load_classifier(f"timm:test_resnet@{path}", trust_pickle=True).num_classes == 7


def test_unknown_architecture_suggests_close_names(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"")
    with pytest.raises(ModelNotFoundError, match="test_resnet"):
        load_classifier(f"timm:test_resnett@{tmp_path / 'w.safetensors'}")


def test_missing_weights_file_and_folder_name_the_path(tmp_path):
    with pytest.raises(ModelNotFoundError, match="nope.safetensors"):
        load_classifier(f"timm:test_resnet@{tmp_path / 'nope.safetensors'}")
    with pytest.raises(ModelNotFoundError, match="no-such-folder"):
        load_classifier(f"timm:{tmp_path / 'no-such-folder'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="config.json"):
        load_classifier(f"timm:{tmp_path / 'empty'}")


def test_registry_name_offline_fails_fast_with_a_local_alternative(monkeypatch):
    from dct.classifiers import timm_models

    monkeypatch.setattr(timm_models, "_cached_weights", lambda cfg: None)
    monkeypatch.setattr(timm_models, "hf_hub_online", lambda: False)
    monkeypatch.setattr(timm_models, "host_reachable", lambda url: False)
    with pytest.raises(ModelNotFoundError, match=r"timm:resnet18@") as err:
        load_classifier("timm:resnet18")
    assert "offline" in str(err.value)
    assert isinstance(err.value, DCTError)


def test_registry_name_loads_cached_weights_without_the_network(monkeypatch, tmp_path, images):
    import timm
    from safetensors.torch import save_file

    from dct.classifiers import timm_models

    torch.manual_seed(2)
    model = timm.create_model("test_resnet").eval()  # the registry's 1000-class ImageNet head
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    monkeypatch.setattr(timm_models, "_cached_weights", lambda cfg: tmp_path / "model.safetensors")
    monkeypatch.setattr(timm_models, "hf_hub_online", lambda: pytest.fail("asked the network"))
    clf = load_classifier("timm:test_resnet")
    assert clf.spec == "timm:test_resnet" and clf.num_classes == 1000
    assert clf.labels[0] == "tench, Tinca tinca"  # ImageNet names that ship inside timm
    assert torch.allclose(clf(images), model(clf.preprocess(images)), atol=1e-5)
