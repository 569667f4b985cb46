"""Builders of tiny random-weight classifiers, saved in each family's real on-disk format."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
BIRDS = ["Black footed Albatross", "Laysan Albatross", "Sooty Albatross", "Groove billed Ani", "Crested Auklet"]


def save_timm_folder(folder: Path, *, labels=DIGITS, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                     input_size=(3, 32, 32), crop_pct=0.875, interpolation="bilinear", seed=0) -> Path:
    """timm's own export (save_for_hf): config.json with architecture + pretrained_cfg, model.safetensors."""
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(seed)
    model = timm.create_model("test_resnet", num_classes=len(labels), pretrained=False)
    save_for_hf(model, str(folder), model_config={"label_names": list(labels)}, safe_serialization=True,
                data_config={"input_size": input_size, "crop_pct": crop_pct, "interpolation": interpolation,
                             "mean": mean, "std": std, "crop_mode": "center"})
    return folder


def vit_config(**overrides):
    from transformers import ViTConfig

    kw = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32,
              patch_size=8, num_labels=len(BIRDS), id2label=dict(enumerate(BIRDS)),
              label2id={b: i for i, b in enumerate(BIRDS)})
    kw.update(overrides)
    return ViTConfig(**kw)


def save_hf_folder(folder: Path, *, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), processor=None, seed=0) -> Path:
    from transformers import ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(seed)
    ViTForImageClassification(vit_config()).save_pretrained(str(folder))
    processor = processor or ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=list(mean),
                                               image_std=list(std), resample=2)
    processor.save_pretrained(str(folder))
    return folder


def save_vitmae_folder(folder: Path, seed=0) -> Path:
    """A fine-tuned ViT-MAE classifier as on the hub: a ViT-MAE config (mask_ratio 0), encoder keys under
    `vit.` in the classic layout (`vit.encoder.layer.N...`), a `classifier` Linear, an image processor."""
    from safetensors.torch import load_file, save_file
    from transformers import ViTImageProcessor, ViTMAEConfig, ViTMAEModel

    torch.manual_seed(seed)
    config = ViTMAEConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                          image_size=32, patch_size=8, mask_ratio=0.0)
    encoder_dir = folder.parent / (folder.name + "-encoder")
    ViTMAEModel(config).save_pretrained(str(encoder_dir))  # transformers writes the classic key layout
    state = {f"vit.{k}": v for k, v in load_file(str(encoder_dir / "model.safetensors")).items()}
    state["classifier.weight"] = torch.randn(len(BIRDS), 32) * 0.5
    state["classifier.bias"] = torch.randn(len(BIRDS)) * 0.1
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    cfg = json.loads((encoder_dir / "config.json").read_text())
    cfg.update(architectures=["ViTForImageClassification"], id2label={str(i): b for i, b in enumerate(BIRDS)},
               label2id={b: i for i, b in enumerate(BIRDS)})
    (folder / "config.json").write_text(json.dumps(cfg))
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.485, 0.456, 0.406],
                      image_std=[0.229, 0.224, 0.225], resample=3).save_pretrained(str(folder))
    shutil.rmtree(encoder_dir)
    return folder
