"""Each classifier's own evaluation preprocessing, rebuilt from its config as differentiable tensor ops.

DCT backpropagates the classifier loss into the generated image, so the usual PIL transforms cannot be
used: the same geometry (resize rule, centre crop), interpolation, antialiasing and normalisation are
replayed with torchvision's tensor functions, which are differentiable. Every value comes from the model's
config (timm `pretrained_cfg`, a transformers image processor, torchvision weight transforms, or a JSON
sidecar); none is written here per model.

Known, small differences from the PIL pipelines these configs were written for: torch's bicubic kernel
uses a = -0.75 where PIL uses -0.5, and Lanczos / box / Hamming filters are replaced by their nearest
tensor equivalent (recorded in `Preprocessing.note`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from dct.errors import ClassifierSpecError

# PIL resampling ids as stored in transformers configs ("resample": 3), mapped to tensor interpolation.
# Lanczos, box and Hamming have no tensor kernel; bicubic / bilinear with antialias are the closest.
_PIL_RESAMPLE = {0: "nearest", 1: "bicubic", 2: "bilinear", 3: "bicubic", 4: "bilinear", 5: "bilinear"}
_PIL_APPROXIMATED = {1: "lanczos", 4: "box", 5: "hamming"}
_MODES = {"nearest": InterpolationMode.NEAREST, "bilinear": InterpolationMode.BILINEAR,
          "bicubic": InterpolationMode.BICUBIC}


@dataclass(frozen=True)
class Preprocessing:
    """What a classifier does to a [0,1] RGB batch before its first layer.

    resize: "none"; "exact" to `size` (h, w); "short_side" to `size[0]` keeping the aspect ratio
      (torchvision's int-size rule: long side = int(s * long / short)); "keep_ratio" (timm's
      ResizeKeepRatio towards `size` (h, w), `longest` in [0, 1] picks the edge that must fit).
    crop: centre crop to (h, w) or None; `crop_fill` "zero" or "mean" for the padding when the image is
      smaller than the crop (timm's border mode pads with the mean colour); `crop_rounding` places an odd
      margin as torchvision does ("round": round-half-even of margin / 2), as transformers does ("floor"),
      or as kornia's centre crop does ("half": it samples bilinearly at the half-pixel offset margin / 2,
      the mean of the two neighbouring crops).
    Then x * scale + offset (pixel range the model expects, e.g. 255/127.5 - 1), channel flip (RGB -> BGR),
    and (x - mean) / std.
    """

    resize: str = "none"
    size: tuple[int, ...] = ()
    longest: float = 0.0
    crop: tuple[int, int] | None = None
    crop_fill: str = "zero"
    crop_rounding: str = "round"
    interpolation: str = "bilinear"
    antialias: bool = True
    scale: float = 1.0
    offset: float = 0.0
    flip_channels: bool = False
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    source: str = ""
    note: str = ""
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if self.resize not in ("none", "exact", "short_side", "keep_ratio"):
            raise ValueError(f"resize must be none/exact/short_side/keep_ratio, got {self.resize!r}")
        if self.crop_fill not in ("zero", "mean") or self.crop_rounding not in ("round", "floor", "half"):
            raise ValueError(f"crop_fill must be zero/mean and crop_rounding round/floor/half, got "
                             f"{self.crop_fill!r} / {self.crop_rounding!r}")
        if self.interpolation not in _MODES:
            raise ValueError(f"interpolation must be one of {sorted(_MODES)}, got {self.interpolation!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 values, got {self.mean} / {self.std}")

    def replace(self, **changes) -> "Preprocessing":
        """A copy with some fields changed (e.g. to replay the reference code's own resize)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("extra")
        d.update({k: list(v) for k, v in d.items() if isinstance(v, tuple)})
        return d


class Preprocess(torch.nn.Module):
    """Applies a `Preprocessing` to (B, 3, H, W) images in [0, 1]; differentiable end to end."""

    def __init__(self, config: Preprocessing):
        super().__init__()
        self.config = config
        self.register_buffer("mean", torch.tensor(config.mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        c = self.config
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"classifier input must be (B, 3, H, W) images in [0, 1], got shape {tuple(images.shape)}")
        x = images
        mode = _MODES[c.interpolation]
        # antialias only matters when shrinking; torchvision ignores it for nearest
        if c.resize == "exact":
            x = TF.resize(x, list(c.size), interpolation=mode, antialias=c.antialias)
        elif c.resize == "short_side":
            x = TF.resize(x, [c.size[0]], interpolation=mode, antialias=c.antialias)
        elif c.resize == "keep_ratio":
            x = TF.resize(x, _keep_ratio_size(x.shape[-2:], c.size, c.longest), interpolation=mode,
                          antialias=c.antialias)
        if c.crop is not None:
            fill = self.mean.to(x.dtype) if c.crop_fill == "mean" else None
            x = _center_crop(x, c.crop, c.crop_rounding, fill)
        if c.scale != 1.0 or c.offset != 0.0:
            x = x * c.scale + c.offset
        if c.flip_channels:
            x = x.flip(1)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


def _center_crop(x: torch.Tensor, crop, rounding: str, fill: torch.Tensor | None) -> torch.Tensor:
    """Centre crop, padding first (split as torchvision does) when the image is smaller than the crop."""
    ch, cw = crop
    h, w = x.shape[-2:]
    if ch > h or cw > w:
        pad_h, pad_w = max(ch - h, 0), max(cw - w, 0)
        padding = (pad_w // 2, (pad_w + 1) // 2, pad_h // 2, (pad_h + 1) // 2)
        if fill is None:
            x = torch.nn.functional.pad(x, padding)
        else:  # pad with the fill colour: shift so that zero padding lands on it
            x = torch.nn.functional.pad(x - fill, padding) + fill
        h, w = x.shape[-2:]
    if rounding == "round":
        top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    else:
        top, left = (h - ch) // 2, (w - cw) // 2
    if rounding == "half":  # kornia: an odd margin puts the crop half a pixel over, sampled bilinearly
        dy, dx = (h - ch) % 2, (w - cw) % 2
        win = x[..., top:top + ch + dy, left:left + cw + dx]
        if dy:
            win = 0.5 * (win[..., :-1, :] + win[..., 1:, :])
        if dx:
            win = 0.5 * (win[..., :, :-1] + win[..., :, 1:])
        return win
    return x[..., top:top + ch, left:left + cw]


def _keep_ratio_size(hw, target, longest: float) -> list[int]:
    """timm ResizeKeepRatio.get_params without its random parts."""
    ratio_h, ratio_w = hw[0] / target[0], hw[1] / target[1]
    ratio = max(ratio_h, ratio_w) * longest + min(ratio_h, ratio_w) * (1.0 - longest)
    return [round(d / ratio) for d in hw]


# ---------------------------------------------------------------------------------------------- builders

def from_timm(data_cfg: dict, source: str) -> Preprocessing:
    """Replays timm.data.transforms_imagenet_eval for a resolved data config (input_size, crop_pct, ...)."""
    _, h, w = data_cfg["input_size"]
    crop_pct = data_cfg.get("crop_pct") or 0.875  # timm's DEFAULT_CROP_PCT
    crop_mode = data_cfg.get("crop_mode") or "center"
    interpolation, note = _timm_interpolation(data_cfg.get("interpolation", "bilinear"))
    scale_h, scale_w = math.floor(h / crop_pct), math.floor(w / crop_pct)
    common = dict(crop=(h, w), interpolation=interpolation, mean=tuple(data_cfg["mean"]),
                  std=tuple(data_cfg["std"]), source=source, note=note,
                  extra={"crop_pct": crop_pct, "crop_mode": crop_mode})
    if crop_mode == "squash":
        return Preprocessing(resize="exact", size=(scale_h, scale_w), **common)
    if crop_mode == "border":
        return Preprocessing(resize="keep_ratio", size=(scale_h, scale_w), longest=1.0, crop_fill="mean", **common)
    if crop_mode != "center":
        raise ClassifierSpecError(f"{source}: unsupported timm crop_mode {crop_mode!r} (center, squash, border)")
    if scale_h == scale_w:
        return Preprocessing(resize="short_side", size=(scale_h,), **common)
    return Preprocessing(resize="keep_ratio", size=(scale_h, scale_w), longest=0.0, **common)


def _timm_interpolation(name: str) -> tuple[str, str]:
    if name in _MODES:
        return name, ""
    approx = {"lanczos": "bicubic", "box": "bilinear", "hamming": "bilinear", "random": "bilinear"}.get(name)
    if approx is None:
        raise ClassifierSpecError(f"unsupported interpolation {name!r} in the model config")
    return approx, f"{name} interpolation approximated by {approx}"


def _get(obj, key):
    """transformers 5 stores sizes as SizeDict objects, older configs as plain dicts."""
    if obj is None:
        return None
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def from_hf_processor(proc, source: str) -> Preprocessing:
    """The resize / crop / rescale / normalise rules of transformers image processors, read off their attributes.

    Resize rules (from the processors' own code): size {height, width} -> exact resize; size {shortest_edge}
    -> short-side resize, then `crop_size` if do_center_crop; with `crop_pct` and no centre-crop flag
    (ConvNeXT, ResNet) -> short side int(s / crop_pct) then crop (s, s), or a plain (s, s) resize from 384 up;
    with `crop_pct` and do_center_crop (PoolFormer) -> short side int(s / crop_pct), then crop_size.
    """
    name = type(proc).__name__
    size, crop_size = getattr(proc, "size", None), getattr(proc, "crop_size", None)
    crop_pct = getattr(proc, "crop_pct", None)
    do_crop = bool(getattr(proc, "do_center_crop", False))
    height, width, short = _get(size, "height"), _get(size, "width"), _get(size, "shortest_edge")
    crop = (int(_get(crop_size, "height")), int(_get(crop_size, "width"))) if do_crop and crop_size else None

    resize, rsize = "none", ()
    if getattr(proc, "do_resize", True):
        if height and width:
            if crop_pct and height == width:
                resize, rsize = "short_side", (int(height / crop_pct),)
            elif crop_pct:
                resize, rsize = "exact", (int(height / crop_pct), int(width / crop_pct))
            else:
                resize, rsize = "exact", (int(height), int(width))
        elif short and not _get(size, "longest_edge"):
            short = int(short)
            if crop_pct and not do_crop:  # ConvNeXT rule
                if short < 384:
                    resize, rsize, crop = "short_side", (int(short / crop_pct),), (short, short)
                else:
                    resize, rsize = "exact", (short, short)
            elif crop_pct:
                resize, rsize = "short_side", (int(short / crop_pct),)
            else:
                resize, rsize = "short_side", (short,)
        else:
            raise ClassifierSpecError(f"{source}: {name} size {size} is not a classification resize rule "
                                      "(expected height/width or shortest_edge)")

    resample = getattr(proc, "resample", 2)
    resample = getattr(resample, "value", resample)
    if isinstance(resample, str):  # a torchvision InterpolationMode value
        interpolation, note = _timm_interpolation(resample)
    else:
        interpolation = _PIL_RESAMPLE.get(int(resample), "bilinear")
        note = (f"PIL {_PIL_APPROXIMATED[int(resample)]} resampling approximated by {interpolation}"
                if int(resample) in _PIL_APPROXIMATED else "")

    # the processor sees uint8 0..255 pixels; ours are 0..1
    rescale = float(getattr(proc, "rescale_factor", 1 / 255)) if getattr(proc, "do_rescale", True) else 1.0
    normalize = bool(getattr(proc, "do_normalize", True))
    return Preprocessing(
        resize=resize, size=rsize, crop=crop, crop_rounding="floor", interpolation=interpolation, antialias=True,
        scale=255.0 * rescale, offset=-1.0 if getattr(proc, "rescale_offset", False) else 0.0,
        flip_channels=bool(getattr(proc, "do_flip_channel_order", False)),
        mean=tuple(float(v) for v in proc.image_mean) if normalize else (0.0, 0.0, 0.0),
        std=tuple(float(v) for v in proc.image_std) if normalize else (1.0, 1.0, 1.0),
        source=f"{source} ({name})", note=note)


def from_torchvision(transform, source: str) -> Preprocessing:
    """torchvision's ImageClassification preset: short-side resize, centre crop, normalise."""
    crop = transform.crop_size[0]
    interpolation = transform.interpolation.value
    if interpolation not in _MODES:
        raise ClassifierSpecError(f"{source}: unsupported interpolation {interpolation!r}")
    return Preprocessing(resize="short_side", size=(int(transform.resize_size[0]),), crop=(crop, crop),
                         interpolation=interpolation, antialias=bool(transform.antialias),
                         mean=tuple(transform.mean), std=tuple(transform.std), source=source)


# ------------------------------------------------------------------------- the reference code's transform

PREPROCESSING_MODES = ("model", "reference", "reference-inet", "reference-mae")
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # timm.data.constants, as the reference's utils.py copies them
IMAGENET_STD = (0.229, 0.224, 0.225)


def reference_preprocessing(kind: str, input_size: int = 224) -> Preprocessing:
    """The reference code's `transform_img_tensor` (idansc/discriminative_class_tokens, utils.py 37-49).

    kind "inet" (its ImageNet ViT-L/16): kornia bicubic resize of the short side to 256, no antialias,
    kornia centre crop 224 (a bilinear warp: an odd margin is sampled half a pixel over, "half" rounding),
    Normalize(mean = std = 0.5).
    kind "mae" (its CUB / iNat ViT-MAE heads): kornia bicubic resize of the short side to 224, centre crop
    224, ImageNet mean / std.
    Its sizes are fixed for 224-pixel models; for a classifier of another input size S (the tiny world's
    32-pixel guides) the same rule is scaled: short side S + 2 * round(S / 14) (256 for 224, 36 for 32: a
    margin of S / 7 split evenly, so a square image is cropped on whole pixels as the reference's is).
    """
    if kind not in ("inet", "mae"):
        raise ClassifierSpecError(f"reference preprocessing kind {kind!r} is not accepted: use 'inet' or 'mae'")
    s = int(input_size)
    if kind == "inet":
        return Preprocessing(resize="short_side", size=(s + 2 * round(s / 14),), crop=(s, s), crop_rounding="half",
                             interpolation="bicubic", antialias=False, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                             source=f"reference code transform_img_tensor, inet rule at input {s}")
    return Preprocessing(resize="short_side", size=(s,), crop=(s, s), crop_rounding="half",
                         interpolation="bicubic", antialias=False, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                         source=f"reference code transform_img_tensor, MAE rule at input {s}")


def input_size(preprocessing: Preprocessing | None, spec: str = "") -> int:
    """The square side a classifier's own preprocessing feeds it (its crop, else its resize)."""
    if preprocessing is not None:
        if preprocessing.crop is not None:
            return int(preprocessing.crop[0])
        if preprocessing.resize in ("exact", "short_side") and preprocessing.size:
            return int(preprocessing.size[0])
    raise ClassifierSpecError(f"{spec or 'classifier'}: its input size is unknown (no resize or crop in its "
                              "preprocessing), so the reference transform cannot be sized for it; use "
                              "classifier_preprocessing = 'model'")


def preprocessing_for(mode: str, classifier) -> Preprocessing | None:
    """The preprocessing that `classifier_preprocessing = mode` gives `classifier` (None: keep its own).

    "reference" picks the reference's rule by family: the MAE rule for `hf-vitmae:` specs (its CUB / iNat
    heads), the ImageNet-ViT rule for everything else.
    """
    if mode not in PREPROCESSING_MODES:
        raise ClassifierSpecError(f"classifier preprocessing {mode!r} is not accepted: use one of "
                                  f"{PREPROCESSING_MODES}")
    if mode == "model":
        return None
    kind = mode.removeprefix("reference-") if mode != "reference" else (
        "mae" if getattr(classifier, "family", "") == "hf-vitmae" else "inet")
    return reference_preprocessing(kind, input_size(classifier.preprocessing, getattr(classifier, "spec", "")))


def apply_preprocessing(classifier, mode: str):
    """Give `classifier` (a `Classifier`, or an ensemble of them) the preprocessing of `mode`, in place."""
    members = getattr(classifier, "members", None)
    if members is not None:
        for m in members:
            apply_preprocessing(m, mode)
        return classifier
    chosen = preprocessing_for(mode, classifier)
    if chosen is not None:
        classifier.set_preprocessing(chosen)
        classifier.info["preprocessing_mode"] = mode
    return classifier
