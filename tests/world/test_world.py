"""The committed world: manifest, classifiers in their libraries' own formats, and the pipeline."""

import json

import numpy as np
import pytest
import torch

from dct.world import data as D
from dct.world import paths

pytestmark = pytest.mark.world


def test_manifest(world_dir):
    m = paths.load_manifest()
    assert m["classes"] == list(D.CLASS_NAMES)
    assert m["domains"] == ["handwritten", "printed"]
    assert m["heldout"]["handwritten_indices"] == D.heldout_indices().tolist()
    assert m["heldout"]["seed"] == D.HELDOUT_SEED
    assert m["templates"]["dct"]["handwritten"].format("seven") == "a handwritten seven"
    a, b = m["ambiguous_pair"]["classes"]
    assert m["confusers"][str(b)] == a
    assert set(m["classifiers"]) == set(paths.CLASSIFIER_NAMES)
    assert m["default_judge"] == "judge" and m["default_guide"]["handwritten"] == "guide-handwritten"
    assert m["recipe"]["steps"] >= 2000 and m["recipe"]["batch"] == 128
    for c in m["classifiers"].values():
        assert min(c["heldout_accuracy"].values()) >= 0.95
    check = m["check"]
    # The world targets; the clean template (a diagnostic of how much the model knows) is recorded
    # but not a target of the issue, and the committed world misses it (70%).
    assert check is not None and all(check["meets"][k] for k in ("classifiers", "plain", "ambiguous_pair"))


def test_paths(world_dir, monkeypatch, tmp_path):
    assert paths.default_pipeline_dir() == world_dir / "sd"
    assert paths.classifier_dir("judge") == world_dir / "classifiers" / "judge"
    with pytest.raises(ValueError, match="guide-handwritten"):
        paths.classifier_dir("guide")
    monkeypatch.setenv(paths.ENV_VAR, str(tmp_path))
    assert paths.default_world_dir() == tmp_path
    with pytest.raises(FileNotFoundError, match="DCT_WORLD"):
        paths.load_manifest()


def _heldout_sample(domain, n=120):
    x, y = D.load_domain(domain, "heldout", as_float=True)
    idx = np.linspace(0, len(x) - 1, n).astype(int)
    return x[idx], y[idx]


@pytest.mark.parametrize("domain", D.DOMAINS)
def test_guides_load_with_timm_local_dir(world_dir, domain):
    import timm
    from timm.data import resolve_data_config

    folder = paths.classifier_dir(f"guide-{domain}")
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["num_classes"] == 10 and cfg["label_names"] == list(D.CLASS_NAMES)
    pc = cfg["pretrained_cfg"]
    for key in ("input_size", "mean", "std", "interpolation", "crop_pct"):
        assert key in pc
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    data_cfg = resolve_data_config(model=model)
    assert tuple(data_cfg["input_size"]) == (3, 32, 32)
    x, y = _heldout_sample(domain)
    mean = torch.tensor(data_cfg["mean"])[:, None, None]
    std = torch.tensor(data_cfg["std"])[:, None, None]
    with torch.no_grad():
        acc = (model((x - mean) / std).argmax(-1) == y).float().mean()
    assert acc >= 0.9


def test_judge_loads_with_transformers(world_dir):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    folder = paths.classifier_dir("judge")
    model = AutoModelForImageClassification.from_pretrained(str(folder)).eval()
    proc = AutoImageProcessor.from_pretrained(str(folder))
    assert model.config.id2label[7] == "seven"
    for domain in D.DOMAINS:
        x, y = _heldout_sample(domain)
        images = [img.permute(1, 2, 0).numpy() for img in (x * 255).round().to(torch.uint8)]
        batch = proc(images=images, return_tensors="pt")
        assert tuple(batch["pixel_values"].shape[-2:]) == (32, 32)
        with torch.no_grad():
            acc = (model(**batch).logits.argmax(-1) == y).float().mean()
        assert acc >= 0.9, domain


def test_pipeline_loads_by_default_and_generates(world_dir):
    from dct.pipeline import load_parts
    from dct.world.check import generate

    parts = load_parts()
    assert parts.source == str(world_dir / "sd")
    assert parts.resolution == 32 and parts.tokenizer.model_max_length == 16
    assert parts.unet.dtype == torch.float32 and parts.text_encoder.dtype == torch.float32
    images = generate(parts, ["the handwritten number three", "a printed four"], [0, 1], steps=4)
    assert images.shape == (2, 3, 32, 32) and torch.isfinite(images).all()


def test_world_is_small(world_dir):
    from dct.world.recipe import dir_size

    assert dir_size(world_dir) <= 30 * 2**20


def test_info_cli(world_dir):
    from typer.testing import CliRunner

    from dct.world.cli import world_app

    res = CliRunner().invoke(world_app, ["info", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["default_judge"] == "judge" and info["size_bytes"] > 0
