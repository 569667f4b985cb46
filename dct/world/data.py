"""Offline image data of the tiny world: two domains of the ten digit classes, at 32x32 RGB.

- "handwritten": the 1,797 scikit-learn `load_digits` scans (8x8, 17 grey levels), upsampled bicubically
  to 32x32 and coloured with a random foreground/background pair that keeps a luminance gap.
- "printed": the same ten digits rendered with Pillow's built-in font under random affine transforms,
  stroke weights, colours and pixel noise: crisp, uniform strokes with grain, unlike the soft scans.

The held-out split is FIXED (20% of the scans of every class, chosen with `HELDOUT_SEED`), stored in the
world manifest, and no model of the world trains on it: it is the FID reference and the test set of
later experiments. The printed domain is synthetic; its held-out set is a fixed rendering stream
(`HELDOUT_SEED`, a stream tag no training call uses).

Everything is a pure function of its seed: the same seed gives bit-identical images.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError

DOMAINS = ("handwritten", "printed")
CLASS_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
IMAGE_SIZE = 32
HELDOUT_SEED = 20231001
HELDOUT_FRACTION = 0.2
PRINTED_HELDOUT_PER_CLASS = 36  # about the size of a class's held-out scans (0.2 * ~180)
MIN_LUMA_GAP = 0.35  # keeps the digit readable in every random colouring
SPLITS = ("train", "heldout")

# Stream tags keep the random streams of different uses apart for one user seed.
_STREAM = {"colour": 1, "printed-train": 2, "printed-heldout": 3, "heldout-colour": 4, "subset": 5}


def _rng(seed: int, stream: str, *extra: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), _STREAM[stream], *map(int, extra)]))


# ---------------------------------------------------------------------------------------------- split
@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


def digit_labels() -> np.ndarray:
    """Labels of the 1,797 scans, in scikit-learn's order (the index space of every split)."""
    return _digits()[1].copy()


def heldout_indices(seed: int = HELDOUT_SEED, fraction: float = HELDOUT_FRACTION) -> np.ndarray:
    """Sorted indices of the held-out scans: `round(fraction * n_c)` of every class c."""
    labels = digit_labels()
    rng = np.random.default_rng(seed)
    chosen = []
    for c in range(len(CLASS_NAMES)):
        idx = np.flatnonzero(labels == c)
        chosen.append(rng.choice(idx, size=int(round(fraction * len(idx))), replace=False))
    return np.sort(np.concatenate(chosen))


def train_indices(seed: int = HELDOUT_SEED, fraction: float = HELDOUT_FRACTION) -> np.ndarray:
    """Sorted indices of every scan that is not held out (the only scans any model may train on)."""
    held = heldout_indices(seed, fraction)
    return np.setdiff1d(np.arange(len(digit_labels())), held)


def train_subset(seed: int, keep: float = 0.9) -> np.ndarray:
    """A per-class random `keep` share of the training scans: distinct classifiers see distinct data."""
    idx = train_indices()
    labels = digit_labels()[idx]
    rng = _rng(seed, "subset")
    out = [rng.choice(idx[labels == c], size=int(round(keep * (labels == c).sum())), replace=False)
           for c in range(len(CLASS_NAMES))]
    return np.sort(np.concatenate(out))


# ------------------------------------------------------------------------------------------- colours
def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def random_colours(n: int, rng: np.random.Generator, gap: float = MIN_LUMA_GAP) -> tuple[np.ndarray, np.ndarray]:
    """(fg, bg) colours in [0, 1], each (n, 3), with |luma(fg) - luma(bg)| >= gap (rejection sampling)."""
    fg = np.empty((n, 3), np.float32)
    bg = np.empty((n, 3), np.float32)
    todo = np.arange(n)
    while len(todo):
        f = rng.random((len(todo), 3), dtype=np.float32)
        b = rng.random((len(todo), 3), dtype=np.float32)
        ok = np.abs(_luma(f) - _luma(b)) >= gap
        fg[todo[ok]], bg[todo[ok]] = f[ok], b[ok]
        todo = todo[~ok]
    return fg, bg


def colourise(mask: torch.Tensor, fg: np.ndarray | torch.Tensor, bg: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Ink masks (N, H, W) in [0, 1] -> float RGB (N, 3, H, W) in [0, 1]."""
    fg = torch.as_tensor(fg, dtype=torch.float32)[:, :, None, None]
    bg = torch.as_tensor(bg, dtype=torch.float32)[:, :, None, None]
    m = mask[:, None].float()
    return bg + (fg - bg) * m


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32 in [0, 1]."""
    return images.float() / 255.0


# ------------------------------------------------------------------------------------------- masks
def handwritten_masks(indices: np.ndarray) -> torch.Tensor:
    """Ink masks (N, 32, 32) in [0, 1] of the given scans, upsampled bicubically from 8x8."""
    images = torch.from_numpy(_digits()[0][np.asarray(indices, dtype=np.int64)])
    up = F.interpolate(images[:, None], size=(IMAGE_SIZE, IMAGE_SIZE), mode="bicubic", align_corners=False)
    return up[:, 0].clamp(0, 1)


@lru_cache(maxsize=None)
def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError as exc:  # Pillow < 10.1 has only the fixed 11 px bitmap font
        raise ConfigError("the printed domain needs Pillow >= 10.1 with FreeType "
                          "(ImageFont.load_default(size=...))") from exc


def printed_masks(labels: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, np.ndarray]:
    """Ink masks (N, 32, 32) of rendered digits, and the per-image pixel-noise level.

    Rendered at 4x on a 128 px canvas, transformed (rotation, shear, scale, shift), then box-downsampled,
    so strokes stay crisp but anti-aliased.
    """
    from PIL import Image, ImageDraw

    s = 4
    canvas = IMAGE_SIZE * s
    n = len(labels)
    out = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    sizes = rng.integers(22, 30, size=n)
    strokes = rng.integers(0, 2, size=n)  # a 2 px stroke closes the loops of 8 and 9
    angles = rng.uniform(-14, 14, size=n)
    shears = rng.uniform(-0.25, 0.25, size=n)
    scales = rng.uniform(0.85, 1.1, size=n)
    shifts = rng.uniform(-2.0, 2.0, size=(n, 2)) * s
    noise = rng.uniform(0.02, 0.07, size=n).astype(np.float32)
    for i, c in enumerate(np.asarray(labels)):
        font = _font(int(sizes[i]) * s)
        img = Image.new("L", (canvas, canvas), 0)
        draw = ImageDraw.Draw(img)
        text = str(int(c))
        l, t, r, b = draw.textbbox((0, 0), text, font=font, stroke_width=int(strokes[i]) * s)
        draw.text(((canvas - (r - l)) / 2 - l, (canvas - (b - t)) / 2 - t), text, fill=255, font=font,
                  stroke_width=int(strokes[i]) * s, stroke_fill=255)
        # Inverse affine map (output -> input coordinates) about the canvas centre.
        a = np.deg2rad(angles[i])
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        fwd = rot @ np.array([[1.0, shears[i]], [0.0, 1.0]]) * scales[i]
        inv = np.linalg.inv(fwd)
        ctr = np.array([canvas / 2, canvas / 2])
        off = ctr - inv @ (ctr + shifts[i])
        img = img.transform((canvas, canvas), Image.AFFINE, (inv[0, 0], inv[0, 1], off[0], inv[1, 0], inv[1, 1], off[1]),
                            resample=Image.BILINEAR)
        img = img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BOX)
        out[i] = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(out), noise


def add_noise(images: torch.Tensor, levels: np.ndarray | torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    sigma = torch.as_tensor(levels, dtype=torch.float32)[:, None, None, None]
    return (images + sigma * torch.randn(images.shape, generator=generator)).clamp(0, 1)


# ------------------------------------------------------------------------------------------- domains
def _balanced_labels(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64) % len(CLASS_NAMES)


def load_domain(domain: str, split: str = "train", *, seed: int = 0, n: int | None = None,
                colourings: int = 1, indices: np.ndarray | None = None,
                as_float: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of one domain and split; uint8 (N, 3, 32, 32) or float in [0, 1] with `as_float`.

    handwritten/train: the training scans (or `indices`, which must avoid the held-out split), each in
    `colourings` random colourings drawn from `seed`. handwritten/heldout: the fixed held-out scans in
    fixed colourings (`seed` is ignored). printed/train: `n` renderings (class-balanced) from `seed`.
    printed/heldout: the fixed rendering stream, PRINTED_HELDOUT_PER_CLASS per class (`seed` ignored).
    """
    if domain not in DOMAINS:
        raise ConfigError(f"domain {domain!r} is not accepted: use one of {DOMAINS}")
    if split not in SPLITS:
        raise ConfigError(f"split {split!r} is not accepted: use one of {SPLITS}")
    if domain == "handwritten":
        if split == "heldout":
            idx = heldout_indices()
            rng = _rng(HELDOUT_SEED, "heldout-colour")
            colourings = 1
        else:
            idx = train_indices() if indices is None else np.asarray(indices, dtype=np.int64)
            leak = np.intersect1d(idx, heldout_indices())
            if len(leak):
                raise ConfigError(f"{len(leak)} requested training scans are in the held-out split")
            rng = _rng(seed, "colour")
        idx = np.tile(idx, colourings)
        masks = handwritten_masks(idx)
        fg, bg = random_colours(len(idx), rng)
        images = colourise(masks, fg, bg)
        labels = torch.from_numpy(digit_labels()[idx])
    else:
        if split == "heldout":
            n, rng = PRINTED_HELDOUT_PER_CLASS * len(CLASS_NAMES), _rng(HELDOUT_SEED, "printed-heldout")
        else:
            n = int(n if n is not None else 2000) * colourings
            rng = _rng(seed, "printed-train")
        labels_np = _balanced_labels(n)
        masks, noise = printed_masks(labels_np, rng)
        fg, bg = random_colours(n, rng)
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        images = add_noise(colourise(masks, fg, bg), noise, gen)
        labels = torch.from_numpy(labels_np)
    images = to_uint8(images)
    return (to_float(images) if as_float else images), labels


def write_reference_pngs(folder: str | Path, domain: str = "handwritten", *, overwrite: bool = False) -> Path:
    """The held-out set of `domain` as PNG files `<class>_<i>.png` (for torch-fidelity's image folders).

    Returns the folder. Existing files with the same names are kept unless `overwrite`.
    """
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = load_domain(domain, "heldout")
    for i, (img, c) in enumerate(zip(images, labels.tolist())):
        path = folder / f"{c}_{i:04d}.png"
        if overwrite or not path.exists():
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(path)
    return folder


def grid(images: torch.Tensor, nrow: int) -> np.ndarray:
    """uint8 or float (N, 3, H, W) -> one uint8 HxWx3 array, `nrow` images per row, 1 px gutters."""
    x = images if images.dtype == torch.uint8 else to_uint8(images)
    n, c, h, w = x.shape
    rows = (n + nrow - 1) // nrow
    out = torch.full((c, rows * (h + 1) + 1, nrow * (w + 1) + 1), 255, dtype=torch.uint8)
    for i in range(n):
        r, q = divmod(i, nrow)
        out[:, 1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + q * (w + 1): 1 + q * (w + 1) + w] = x[i]
    return out.permute(1, 2, 0).numpy()


def save_grid(path: str | Path, images: torch.Tensor, nrow: int, scale: int = 2) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(grid(images, nrow))
    if scale != 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    img.save(path)
    return path
