"""The differentiable preprocessing replays each library's own eval pipeline (checked against it) and lets
gradients through."""

import pytest
import torch
import transformers as T
from PIL import Image

from dct.classifiers.preprocess import Preprocess, Preprocessing, from_hf_processor, from_timm, from_torchvision

# Differences left after matching geometry: the PIL pipelines round to uint8 (1/255 / std ~ 0.02 here) and
# PIL's bicubic kernel differs from torch's (a=-0.5 vs -0.75), which shows when upsampling.
TOL = 0.05


def smooth_image(h, w, seed=0):
    """A low-frequency uint8 image, as a PIL image and as the [0,1] tensor the classifier receives."""
    g = torch.Generator().manual_seed(seed)
    img = torch.nn.functional.interpolate(torch.rand(1, 3, 5, 6, generator=g), size=(h, w), mode="bicubic",
                                          align_corners=False).clamp(0, 1)
    u8 = (img[0] * 255).round().to(torch.uint8)
    return Image.fromarray(u8.permute(1, 2, 0).numpy()), u8[None].float() / 255


@pytest.mark.parametrize("crop_mode", ["center", "squash", "border"])
@pytest.mark.parametrize("hw", [(40, 48), (48, 39)])
def test_timm_config_matches_timm_eval_transform(crop_mode, hw):
    from timm.data import create_transform

    cfg = dict(input_size=(3, 32, 32), crop_pct=0.875, crop_mode=crop_mode, interpolation="bilinear",
               mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    pil, x = smooth_image(*hw)
    expected = create_transform(**cfg)(pil)
    ours = Preprocess(from_timm(cfg, "test"))(x)[0]
    assert ours.shape == expected.shape == (3, 32, 32)
    assert (ours - expected).abs().max() < TOL


PROCESSORS = {
    "exact (ViT)": lambda: T.ViTImageProcessor(size={"height": 32, "width": 32}),
    "short side + crop (CLIP)": lambda: T.CLIPImageProcessor(size={"shortest_edge": 36},
                                                             crop_size={"height": 32, "width": 32}),
    "crop_pct (ConvNeXT)": lambda: T.ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875),
    "exact + crop (DeiT)": lambda: T.DeiTImageProcessor(size={"height": 36, "width": 36},
                                                        crop_size={"height": 32, "width": 32}),
    "crop_pct + crop (PoolFormer)": lambda: T.PoolFormerImageProcessor(size={"shortest_edge": 32}, crop_pct=0.9,
                                                                       crop_size={"height": 32, "width": 32}),
    "BGR, no normalise (MobileViT)": lambda: T.MobileViTImageProcessor(size={"shortest_edge": 36},
                                                                      crop_size={"height": 32, "width": 32}),
}


@pytest.mark.parametrize("name", list(PROCESSORS))
@pytest.mark.parametrize("hw", [(40, 48), (48, 39)])
def test_hf_processor_config_matches_the_processor(name, hw):
    processor = PROCESSORS[name]()
    pil, x = smooth_image(*hw)
    expected = processor(images=pil, return_tensors="pt").pixel_values[0]
    ours = Preprocess(from_hf_processor(processor, "test"))(x)[0]
    assert ours.shape == expected.shape
    assert (ours - expected).abs().max() < TOL


def test_torchvision_preset_matches_exactly():
    import torchvision

    transform = torchvision.models.get_model_weights("resnet18").DEFAULT.transforms()
    _, x = smooth_image(300, 260)
    ours = Preprocess(from_torchvision(transform, "test"))(x)
    assert torch.allclose(ours, transform(x), atol=1e-5)


def test_short_side_resize_and_centre_crop_geometry():
    # A 40x60 image whose columns are numbered: short side 20 -> 20x30, centre crop 20x20 keeps columns 5..24
    cols = torch.arange(60.0).view(1, 1, 1, 60).expand(1, 3, 40, 60)
    pre = Preprocess(Preprocessing(resize="short_side", size=(20,), crop=(20, 20), interpolation="nearest"))
    out = pre(cols)
    assert out.shape == (1, 3, 20, 20)
    assert out[0, 0, 0, 0] == 10 and out[0, 0, 0, -1] == 48  # nearest picks every 2nd source column


def test_gradient_reaches_the_image_through_every_resize_mode():
    for config in [Preprocessing(resize="exact", size=(24, 24), interpolation="bicubic"),
                   Preprocessing(resize="short_side", size=(24,), crop=(20, 20)),
                   Preprocessing(resize="keep_ratio", size=(24, 24), longest=1.0, crop=(24, 24), crop_fill="mean",
                                 mean=(0.5, 0.5, 0.5))]:
        x = torch.rand(2, 3, 30, 40, requires_grad=True)
        Preprocess(config)(x).square().sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0 and torch.isfinite(x.grad).all()


def test_bad_preprocessing_values_are_refused():
    with pytest.raises(ValueError, match="interpolation"):
        Preprocessing(interpolation="lanczos")
    with pytest.raises(ValueError, match="resize"):
        Preprocessing(resize="sideways")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        Preprocess(Preprocessing())(torch.rand(3, 8, 8))


# ---------------------------------------------------------------- the reference code's own transform

# kornia's centre crop is a perspective warp with bilinear sampling, exact only up to float error (~3e-5
# of a [0, 1] pixel against a plain slice; x2 after normalising by std 0.5, x4.4 by ImageNet's 0.229):
# 2e-4 is under 1/20 of one 8-bit grey level, while a wrong interpolation, antialias or a crop one pixel
# off differs by 1e-2 or more.
KORNIA_ATOL = 2e-4


def _kornia_reference(images, kind: str, size: int = 224, resize: int | None = None):
    """utils.py transform_img_tensor of the reference, written with kornia as it is there."""
    import kornia  # a test dependency: the reference code used it
    import torchvision.transforms as T

    if kind == "inet":
        x = kornia.geometry.transform.resize(images, resize or 256, interpolation="bicubic")
        x = kornia.geometry.transform.center_crop(x, (size, size))
        return T.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])(x)
    x = kornia.geometry.transform.resize(images, resize or size, interpolation="bicubic")
    x = kornia.geometry.transform.center_crop(x, (size, size))
    return T.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))(x)


@pytest.mark.parametrize("kind", ["inet", "mae"])
@pytest.mark.parametrize("shape", [(2, 3, 512, 512), (1, 3, 768, 768), (1, 3, 300, 420), (1, 3, 257, 241)])
def test_reference_transform_equals_kornia_pixel_for_pixel(kind, shape):
    from dct.classifiers.preprocess import Preprocess, reference_preprocessing

    torch.manual_seed(0)
    images = torch.rand(shape)
    ours = Preprocess(reference_preprocessing(kind, 224))(images)
    theirs = _kornia_reference(images, kind)
    assert ours.shape == theirs.shape == (shape[0], 3, 224, 224)
    # the resize alone is bit-identical to kornia's (F.interpolate bicubic, no antialias)
    kornia = pytest.importorskip("kornia")
    short = 256 if kind == "inet" else 224
    resized = Preprocess(reference_preprocessing(kind, 224).replace(crop=None, mean=(0.0,) * 3, std=(1.0,) * 3))
    assert torch.equal(resized(images), kornia.geometry.transform.resize(images, short, interpolation="bicubic"))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=KORNIA_ATOL)


def test_reference_transform_scaled_to_a_32_pixel_classifier_equals_kornia():
    from dct.classifiers.preprocess import Preprocess, reference_preprocessing

    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ours = Preprocess(reference_preprocessing("inet", 32))(images)
    torch.testing.assert_close(ours, _kornia_reference(images, "inet", 32, resize=36), rtol=0, atol=KORNIA_ATOL)


def test_reference_transform_differs_from_the_processor_config_and_passes_gradient(hf_dir):
    """The HF ViT's processor squashes to the input size (bilinear, antialiased); the reference resizes the
    short side bicubically without antialias and crops: a different function of the image."""
    from dct.classifiers import load_classifier
    from dct.classifiers.preprocess import apply_preprocessing

    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2), requires_grad=True)
    model_clf = load_classifier(f"hf:{hf_dir}")
    ref_clf = apply_preprocessing(load_classifier(f"hf:{hf_dir}"), "reference")
    assert ref_clf.preprocessing.antialias is False and ref_clf.preprocessing.crop == (32, 32)
    assert ref_clf.describe()["preprocessing"]["interpolation"] == "bicubic"
    assert not torch.allclose(model_clf(images), ref_clf(images))
    torch.testing.assert_close(ref_clf.preprocess(images), _kornia_reference(images, "inet", 32, resize=36),
                               rtol=0, atol=KORNIA_ATOL)
    ref_clf(images).sum().backward()
    assert images.grad.abs().sum() > 0


def test_reference_mode_picks_the_mae_rule_for_vitmae_heads(vitmae_dir, timm_dir):
    from dct.classifiers import load_classifier
    from dct.classifiers.preprocess import IMAGENET_MEAN, apply_preprocessing, preprocessing_for

    mae = load_classifier(f"hf-vitmae:{vitmae_dir}")
    assert preprocessing_for("reference", mae).mean == IMAGENET_MEAN
    assert preprocessing_for("reference", mae).size == (32,)
    timm_clf = load_classifier(f"timm:{timm_dir}")
    assert preprocessing_for("reference", timm_clf).mean == (0.5, 0.5, 0.5)  # the ViT rule for any other spec
    assert preprocessing_for("reference-mae", timm_clf).mean == IMAGENET_MEAN  # selectable for any spec
    assert preprocessing_for("model", timm_clf) is None
    before = timm_clf.preprocessing
    assert apply_preprocessing(timm_clf, "model").preprocessing == before
