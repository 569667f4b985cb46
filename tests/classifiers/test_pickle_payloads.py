"""Every classifier loader that can meet a pickle refuses it before running it, and names the file.

The payloads (tests/payloads.py) create a sentinel file when unpickled; where the loader can be told to
trust the file, the trusted load is the control that proves the payload is live.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from dct.classifiers import load_classifier
from dct.errors import UnsafeWeightsError

from ..payloads import Holder, save_with_payload


def assert_refused(spec: str, weights: Path, sentinel: Path):
    with pytest.raises(UnsafeWeightsError) as err:
        load_classifier(spec)
    assert not sentinel.exists(), f"{spec}: the payload ran before the refusal"
    assert str(weights) in str(err.value), f"the error does not name {weights}: {err.value}"


def test_payload_runs_when_unpickled(tmp_path):
    # the control: the payload is live, so its absence below means it was not unpickled
    sentinel = tmp_path / "ran"
    path = save_with_payload({"w": torch.zeros(1)}, tmp_path / "p.pt", sentinel)
    torch.load(path, weights_only=False)
    assert sentinel.exists()


def test_file_spec(tmp_path):
    sentinel = tmp_path / "ran"
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5), Holder(sentinel)), path)
    assert_refused(f"file:{path}", path, sentinel)
    load_classifier(f"file:{path}", trust_pickle=True)
    assert sentinel.exists()


def _timm_state(num_classes=7):
    import timm

    torch.manual_seed(0)
    return timm.create_model("test_resnet", num_classes=num_classes, pretrained=False).state_dict()


def test_timm_arch_at_file(tmp_path):
    sentinel = tmp_path / "ran"
    path = save_with_payload(_timm_state(), tmp_path / "ckpt.pth", sentinel)
    assert_refused(f"timm:test_resnet@{path}", path, sentinel)
    assert load_classifier(f"timm:test_resnet@{path}", trust_pickle=True).num_classes == 7
    assert sentinel.exists()


def test_torchvision_arch_at_file(tmp_path):
    from torchvision.models import mobilenet_v3_small

    sentinel = tmp_path / "ran"
    torch.manual_seed(0)
    path = save_with_payload(mobilenet_v3_small(num_classes=4).state_dict(), tmp_path / "mnv3.pth", sentinel)
    assert_refused(f"torchvision:mobilenet_v3_small@{path}", path, sentinel)
    assert load_classifier(f"torchvision:mobilenet_v3_small@{path}", trust_pickle=True).num_classes == 4
    assert sentinel.exists()


def test_timm_folder_with_pytorch_model_bin(tmp_path, timm_dir):
    from safetensors.torch import load_file

    sentinel = tmp_path / "ran"
    folder = tmp_path / "timm-bin"
    shutil.copytree(timm_dir, folder)
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    weights = save_with_payload(state, folder / "pytorch_model.bin", sentinel)
    assert_refused(f"timm:{folder}", weights, sentinel)


@pytest.mark.parametrize("family, fixture", [("hf", "hf_dir"), ("hf-vitmae", "vitmae_dir")])
def test_hf_folder_with_pytorch_model_bin(tmp_path, family, fixture, request):
    from safetensors.torch import load_file

    sentinel = tmp_path / "ran"
    folder = tmp_path / "hf-bin"
    shutil.copytree(request.getfixturevalue(fixture), folder)
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    weights = save_with_payload(state, folder / "pytorch_model.bin", sentinel)
    assert_refused(f"{family}:{folder}", weights, sentinel)
