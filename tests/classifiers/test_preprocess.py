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
