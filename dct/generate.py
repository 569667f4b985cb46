"""Generation of evaluation images: one image per (prompt, seed) pair, through the one `rollout`.

Every image's starting latents come from its own `torch.Generator().manual_seed(seed)`, and every
prompt is encoded on its own, so an image depends only on its prompt and seed, never on which other
images shared its batch or on the batch size. That is what lets a token prompt and its plain baseline
be compared image by image on the same seeds (`dct.eval.accuracy.compare`).

A learned token is loaded into `parts` beforehand by the caller (`dct.token.ClassTokens`), so this
module knows nothing about tokens.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from .errors import ConfigError
from .pipeline import make_scheduler
from .rollout import rollout
from .token import encode_prompts


def seed_latents(parts, seeds: Sequence[int]) -> torch.Tensor:
    """(N, C, h, w) float32 starting latents on the CPU, one `manual_seed(seed)` generator each."""
    out = []
    for s in seeds:
        g = torch.Generator().manual_seed(int(s))
        out.append(torch.randn(parts.latent_shape, generator=g, dtype=torch.float32))
    return torch.stack(out)


@torch.no_grad()
def _encode_unique(parts, prompts: Sequence[str], padding: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{prompt: (cond (1, L, D), uncond (1, L, D))}, each prompt encoded alone.

    The empty prompt is encoded next to each prompt so that with padding="longest" both have that
    prompt's length (the classifier-free guidance halves must match, as in the stock pipeline).
    """
    out = {}
    for p in dict.fromkeys(prompts):
        emb = encode_prompts(parts.tokenizer, parts.text_encoder, [p, ""], padding=padding)
        out[p] = (emb[:1], emb[1:])
    return out


def generate_images(
    parts,
    prompts: Sequence[str],
    seeds: Sequence[int],
    *,
    scheduler: str = "ddim",
    steps: int = 20,
    guidance: float = 5.0,
    batch_size: int = 16,
    padding: str = "max_length",
    progress: bool = True,
    step_guidance=None,
) -> torch.Tensor:
    """Images (N, 3, H, W) in [0, 1], float32 on the CPU: image i is `prompts[i]` from `seeds[i]`.

    `prompts` and `seeds` are equal-length lists (repeat a prompt for several seeds). Sampling runs
    `dct.rollout.rollout` with depth 0 under no_grad and a fresh scheduler per batch (schedulers keep
    state). Images in one batch must share an embedding length; with padding="max_length" (the default
    and the evaluation protocol) they always do, with "longest" batches are formed per length.
    `step_guidance` is passed to the rollout (sampling-time guidance, dct.methods.guidance).
    """
    prompts, seeds = list(prompts), [int(s) for s in seeds]
    if len(prompts) != len(seeds):
        raise ConfigError(f"prompts and seeds must pair up one to one; got {len(prompts)} prompts and "
                          f"{len(seeds)} seeds")
    if not prompts:
        raise ConfigError("nothing to generate: prompts and seeds are empty")
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} is not accepted: an integer >= 1")
    if steps < 1:
        raise ConfigError(f"steps={steps} is not accepted: an integer >= 1")
    make_scheduler(scheduler, parts.scheduler)  # validates the name before any work

    embeds = _encode_unique(parts, prompts, padding)
    by_length: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_length.setdefault(embeds[p][0].shape[1], []).append(i)
    batches = [idx[j:j + batch_size] for idx in by_length.values() for j in range(0, len(idx), batch_size)]

    images: list[torch.Tensor | None] = [None] * len(prompts)
    from .progress import progress as progress_bar

    with torch.no_grad(), progress_bar(len(prompts), "generate", progress) as bar:
        for idx in batches:
            cond = torch.cat([embeds[prompts[i]][0] for i in idx])
            uncond = torch.cat([embeds[prompts[i]][1] for i in idx])
            latents = seed_latents(parts, [seeds[i] for i in idx]).to(parts.device)
            result = rollout(parts.unet, parts.vae, make_scheduler(scheduler, parts.scheduler), cond, uncond,
                             latents, num_steps=steps, guidance=guidance, depth=0,
                             step_guidance=step_guidance)
            for i, img in zip(idx, result.images.float().cpu()):
                images[i] = img
            bar.update(len(idx))
    return torch.stack(images)


def save_images(images: torch.Tensor, folder: str | Path, names: Sequence[str]) -> list[Path]:
    """Write images (N, 3, H, W) in [0, 1] as 8-bit RGB PNGs `folder/<name>.png`; returns the paths."""
    from PIL import Image

    if images.ndim != 4 or images.shape[1] != 3:
        raise ConfigError(f"images must be (N, 3, H, W) in [0, 1]; got shape {tuple(images.shape)}")
    names = [str(n) for n in names]
    if len(names) != len(images):
        raise ConfigError(f"got {len(images)} images but {len(names)} names")
    if len(set(names)) != len(names):
        raise ConfigError("image names must be unique (a repeated name would overwrite an image)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arr = (images.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    paths = []
    for a, name in zip(arr, names):
        path = folder / (name if name.endswith(".png") else f"{name}.png")
        Image.fromarray(a, mode="RGB").save(path)
        paths.append(path)
    return paths


def evaluate_prompts(
    parts,
    classifier,
    prompts_by_class: Mapping[int, str],
    seeds: Sequence[int],
    *,
    classify_batch_size: int = 64,
    n_boot: int = 1000,
    boot_seed: int = 0,
    return_images: bool = False,
    **generate_kwargs,
):
    """Generate `len(seeds)` images per class from its prompt (the same seeds for every class and every
    prompt set, so a token report and a plain report pair up) and return the accuracy report of
    `classifier` on them, with the prompts recorded. With `return_images`, returns (report, images)
    where images are in the report's order: class by class, seeds in the given order.
    """
    from .eval.accuracy import accuracy_report, classify

    if not prompts_by_class:
        raise ConfigError("prompts_by_class is empty: give {class_id: prompt}")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("seeds is empty: give at least one seed")
    classes = [int(c) for c in prompts_by_class]
    prompts = [prompts_by_class[c] for c in prompts_by_class for _ in seeds]
    targets = [c for c in classes for _ in seeds]
    all_seeds = seeds * len(classes)
    images = generate_images(parts, prompts, all_seeds, **generate_kwargs)
    logits = classify(classifier, images, classify_batch_size)
    report = accuracy_report(logits, targets, classes, labels=getattr(classifier, "labels", None),
                             seeds=all_seeds, n_boot=n_boot, seed=boot_seed)
    report["prompts"] = {str(c): prompts_by_class[c] for c in prompts_by_class}
    settings = {name: prm.default for name, prm in inspect.signature(generate_images).parameters.items()
                if prm.kind is inspect.Parameter.KEYWORD_ONLY}
    settings.update(generate_kwargs)
    settings.pop("progress", None)
    settings.pop("step_guidance", None)
    report["generation"] = settings
    return (report, images) if return_images else report
