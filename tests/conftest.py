"""Shared fixtures: tiny real models (random weights) saved in the real formats, built once per session."""

from __future__ import annotations

import json

import pytest
import torch

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory):
    """A random-weight tiny Stable Diffusion folder in the standard diffusers layout (real CLIP vocab)."""
    from dct.world.arch import build_random_pipeline

    return build_random_pipeline(tmp_path_factory.mktemp("tiny-sd") / "sd", seed=0)


@pytest.fixture(scope="session")
def tiny_timm_dir(tmp_path_factory):
    """A random-weight 10-class timm classifier in timm's local-dir format (config.json + safetensors)."""
    import timm
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("timm-clf")
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=10, pretrained=False)
    save_file(model.state_dict(), str(folder / "model.safetensors"))
    cfg = {"architecture": "test_resnet", "num_classes": 10,
           "label_names": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
           "pretrained_cfg": {"input_size": [3, 32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
                              "interpolation": "bilinear", "crop_pct": 1.0, "num_classes": 10}}
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


@pytest.fixture()
def parts(tiny_sd_dir):
    from dct.pipeline import load_parts

    return load_parts(str(tiny_sd_dir))


@pytest.fixture(scope="session")
def classifier(tiny_timm_dir):
    from dct.classifiers import load_classifier

    return load_classifier(f"timm:{tiny_timm_dir}")
