"""transformers families: hf: (AutoModelForImageClassification) and hf-vitmae: (mean-pool ViT-MAE head)."""

import json
import shutil

import pytest
import torch

from dct.classifiers import load_classifier
from dct.errors import ClassifierSpecError, ModelNotFoundError

from .tiny_models import BIRDS, save_hf_folder, vit_config


def test_folder_loads_with_id2label_and_processor_config(hf_dir, images):
    clf = load_classifier(f"hf:{hf_dir}")
    assert clf.spec == f"hf:{hf_dir}" and clf.family == "hf"
    assert clf.labels == BIRDS
    assert (clf.preprocessing.resize, clf.preprocessing.size) == ("exact", (32, 32))
    images = images.clone().requires_grad_(True)
    logits = clf(images)
    assert logits.shape == (2, 5)
    logits[:, 1].sum().backward()
    assert images.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in clf.parameters())
    assert clf.features(images).shape == (2, 32)


def test_logits_equal_the_model_on_its_own_processor_output(hf_dir):
    from PIL import Image
    from transformers import AutoImageProcessor

    u8 = (torch.rand(3, 40, 48) * 255).round().to(torch.uint8)
    pixel_values = AutoImageProcessor.from_pretrained(str(hf_dir))(
        images=Image.fromarray(u8.permute(1, 2, 0).numpy()), return_tensors="pt").pixel_values
    clf = load_classifier(f"hf:{hf_dir}")
    expected = clf.net.model(pixel_values=pixel_values).logits
    assert torch.allclose(clf(u8[None].float() / 255), expected, atol=0.05)


def test_processor_mean_std_change_the_output(tmp_path, images):
    a = load_classifier(f"hf:{save_hf_folder(tmp_path / 'a', mean=(0.5,) * 3, std=(0.5,) * 3)}")
    b = load_classifier(f"hf:{save_hf_folder(tmp_path / 'b', mean=(0.1, 0.2, 0.3), std=(0.2,) * 3)}")
    assert b.preprocessing.mean == (0.1, 0.2, 0.3)
    assert not torch.allclose(a(images), b(images), atol=1e-3)


def test_missing_processor_config_or_folder_is_named(tmp_path, hf_dir):
    folder = tmp_path / "no-proc"
    shutil.copytree(hf_dir, folder)
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(ModelNotFoundError, match="preprocessor_config.json"):
        load_classifier(f"hf:{folder}")
    with pytest.raises(ModelNotFoundError, match="missing-model"):
        load_classifier(f"hf:{tmp_path / 'missing-model'}")


def test_hub_id_offline_fails_fast_and_suggests_a_folder(monkeypatch):
    from dct.classifiers import hf_models

    monkeypatch.setattr(hf_models, "hf_hub_online", lambda: False)
    with pytest.raises(ModelNotFoundError, match="vesteinn/vit-mae-cub") as err:
        load_classifier("hf-vitmae:vesteinn/vit-mae-cub")
    assert "hf-vitmae:/path/to/folder" in str(err.value)


# ------------------------------------------------------------------------------------------------ hf-vitmae

def _reference_mean_pool_logits(folder, x):
    """The head computed independently: transformers' own ViTMAEModel (mask_ratio 0) over the same
    checkpoint, mean of its final patch states, its final LayerNorm, then the classifier weights."""
    from safetensors.torch import load_file
    from transformers import ViTMAEModel

    encoder = ViTMAEModel.from_pretrained(str(folder)).eval()
    assert encoder.config.mask_ratio == 0.0
    state = load_file(str(folder / "model.safetensors"))
    hidden = encoder(x, output_hidden_states=True).hidden_states[-1]  # shuffled patch order; the mean is not
    pooled = encoder.layernorm(hidden[:, 1:].mean(dim=1))
    return pooled @ state["classifier.weight"].T + state["classifier.bias"]


def test_vitmae_head_is_mean_pool_layernorm_linear(vitmae_dir, images):
    clf = load_classifier(f"hf-vitmae:{vitmae_dir}")
    assert clf.family == "hf-vitmae" and clf.labels == BIRDS
    assert clf.preprocessing.interpolation == "bicubic" and clf.preprocessing.mean == (0.485, 0.456, 0.406)
    x = clf.preprocess(images)
    with torch.no_grad():
        assert torch.allclose(clf(images), _reference_mean_pool_logits(vitmae_dir, x), atol=1e-4)


def test_vitmae_head_differs_from_a_stock_cls_head(vitmae_dir, images):
    from transformers import PretrainedConfig, ViTConfig, ViTForImageClassification

    clf = load_classifier(f"hf-vitmae:{vitmae_dir}")
    config = ViTConfig.from_dict(PretrainedConfig.get_config_dict(str(vitmae_dir))[0])
    stock = ViTForImageClassification.from_pretrained(str(vitmae_dir), config=config).eval()
    with torch.no_grad():
        ours, cls_head = clf(images), stock(pixel_values=clf.preprocess(images)).logits
    assert (ours - cls_head).abs().max() > 0.1


def test_vitmae_forward_is_deterministic_and_leaves_the_rng_alone(vitmae_dir, images):
    clf = load_classifier(f"hf-vitmae:{vitmae_dir}")
    state = torch.get_rng_state()
    first = clf(images)
    assert torch.equal(torch.get_rng_state(), state)  # DCT's latents come from this generator
    assert torch.equal(clf(images), first)


def test_vitmae_gradient_reaches_the_images(vitmae_dir, images):
    clf = load_classifier(f"hf-vitmae:{vitmae_dir}")
    images = images.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(clf(images), torch.tensor([0, 4])).backward()
    assert images.grad.abs().sum() > 0


def test_vitmae_config_under_hf_points_to_hf_vitmae(vitmae_dir):
    with pytest.raises(ClassifierSpecError, match="hf-vitmae"):
        load_classifier(f"hf:{vitmae_dir}")


def test_vitmae_refuses_a_checkpoint_without_classifier(tmp_path):
    from transformers import ViTImageProcessor, ViTMAEConfig, ViTMAEModel

    folder = tmp_path / "pretrain-only"
    ViTMAEModel(ViTMAEConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                             image_size=32, patch_size=8)).save_pretrained(str(folder))
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(str(folder))
    with pytest.raises(ClassifierSpecError, match="classifier"):
        load_classifier(f"hf-vitmae:{folder}")


def test_vitmae_refuses_a_non_vit_config(tmp_path, hf_dir):
    folder = tmp_path / "not-vit"
    shutil.copytree(hf_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "convnext"}))
    with pytest.raises(ClassifierSpecError, match="convnext"):
        load_classifier(f"hf-vitmae:{folder}")


def test_stock_vit_config_loads_as_vitmae_too(hf_dir, images):
    # a ViT fine-tuned with the mean-pool head may ship a plain 'vit' config
    clf = load_classifier(f"hf-vitmae:{hf_dir}")
    assert clf(images).shape == (2, len(vit_config().id2label))


def test_preprocessing_can_be_swapped_for_the_reference_codes_resize(hf_dir, images):
    # The reference code resizes google/vit-large-patch16-224 inputs bicubic to short side 256, crops 224,
    # without antialiasing (kornia), unlike the model's own processor; a run can replay that explicitly.
    clf = load_classifier(f"hf:{hf_dir}")
    before = clf(images)
    clf.set_preprocessing(clf.preprocessing.replace(resize="short_side", size=(36,), crop=(32, 32),
                                                    interpolation="bicubic", antialias=False, source="reference"))
    d = clf.describe()["preprocessing"]
    assert (d["resize"], d["size"], d["antialias"], d["source"]) == ("short_side", [36], False, "reference")
    assert not torch.allclose(clf(images), before, atol=1e-3)
