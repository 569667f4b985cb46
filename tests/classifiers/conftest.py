"""Tiny random-weight classifiers in each family's real on-disk format, built once per session."""

import pytest
import torch

from .tiny_models import save_hf_folder, save_timm_folder, save_vitmae_folder


@pytest.fixture(scope="session")
def timm_dir(tmp_path_factory):
    return save_timm_folder(tmp_path_factory.mktemp("timm") / "digits")


@pytest.fixture(scope="session")
def hf_dir(tmp_path_factory):
    return save_hf_folder(tmp_path_factory.mktemp("hf") / "birds")


@pytest.fixture(scope="session")
def vitmae_dir(tmp_path_factory):
    return save_vitmae_folder(tmp_path_factory.mktemp("vitmae") / "vit-mae-birds")


@pytest.fixture()
def images():
    torch.manual_seed(0)
    return torch.rand(2, 3, 40, 48)
