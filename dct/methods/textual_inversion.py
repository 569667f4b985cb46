"""Textual inversion (Gal et al., "An Image is Worth One Word", ICLR 2023) as a baseline for DCT: a token
learned from k REAL labelled images per class with the standard denoising loss,

    loss = || eps - unet(sqrt(abar_t) z + sqrt(1 - abar_t) eps, t, text(prompt with <token>)) ||^2,

z = the VAE latent of a real image, t uniform over the training timesteps, eps ~ N(0, I). The token is
spliced exactly as DCT's (dct.token.ClassTokens), starts from the same word, and sits in the same prompt
("a handwritten <token> seven"); only the signal differs: real images and a reconstruction loss instead
of a classifier on generated images. It needs k labelled images per class, which DCT does not.

In the tiny world the k images are drawn from the TRAINING scans of the domain (never the held-out ones)
by the run's seed (`world_images`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError


@dataclass
class TIConfig:
    steps: int = 150  # optimisation steps
    batch: int = 4  # images per class per step (drawn with replacement from its k)
    lr: float = 5e-2  # Adam, as DCT's fast preset
    seed: int = 0


def world_images(domain: str, classes: Sequence[int], k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k training images per class of the tiny world (float in [0, 1]) and their labels, drawn by `seed`
    from the training split only (dct.world.data refuses held-out scans)."""
    import numpy as np

    from ..world.data import digit_labels, load_domain, train_indices

    if k < 1:
        raise ConfigError(f"k={k} is not accepted: an integer >= 1 (labelled images per class)")
    rng = np.random.default_rng(seed)
    if domain == "handwritten":
        idx, labels = train_indices(), digit_labels()
        picked = np.concatenate([rng.choice(idx[labels[idx] == c], size=k, replace=False) for c in classes])
        return load_domain("handwritten", "train", seed=seed, indices=picked, as_float=True)
    images, labels = load_domain(domain, "train", seed=seed, n=10 * k, as_float=True)
    keep = torch.cat([torch.nonzero(labels == c).flatten()[:k] for c in classes])
    return images[keep], labels[keep]


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor) -> torch.Tensor:
    """The VAE posterior mean of images in [0, 1], scaled as the UNet's latents."""
    z = vae.encode((images * 2 - 1).to(vae.dtype)).latent_dist.mean
    return z.float() * vae.config.scaling_factor


def denoising_loss(parts, tokens, latents: torch.Tensor, prompts: Sequence[str], timesteps: torch.Tensor,
                   noise: torch.Tensor, scheduler) -> torch.Tensor:
    """Mean squared error of the UNet's noise prediction on noised `latents`, conditioned on `prompts`."""
    noisy = scheduler.add_noise(latents, noise, timesteps)
    cond = tokens.encode(list(prompts))
    eps = parts.unet(noisy.to(parts.unet.dtype), timesteps, encoder_hidden_states=cond.to(parts.unet.dtype),
                     return_dict=False)[0]
    return F.mse_loss(eps.float(), noise)


def train_textual_inversion(parts, tokens, latents: torch.Tensor, rows: Sequence[int], prompts: Sequence[str],
                            cfg: TIConfig, on_step=None) -> list[float]:
    """Optimise `tokens.vectors` on the denoising loss of `latents` (N, C, h, w); image i is captioned
    `prompts[i]` (its class's token inside) and belongs to token row `rows[i]`. Each step draws `cfg.batch`
    images per row with replacement, a timestep and noise each. Returns the loss of every step."""
    from diffusers import DDPMScheduler

    if cfg.steps < 1 or cfg.batch < 1 or not cfg.lr > 0:
        raise ConfigError(f"textual inversion needs steps >= 1, batch >= 1 and lr > 0; got {cfg}")
    scheduler = DDPMScheduler.from_config(parts.scheduler.config)
    n_train = scheduler.config.num_train_timesteps
    rows_t = torch.as_tensor(list(rows))
    by_row = [torch.nonzero(rows_t == r).flatten() for r in sorted(set(rows))]
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam([tokens.vectors], lr=cfg.lr)
    losses = []
    for step in range(cfg.steps):
        pick = torch.cat([members[torch.randint(len(members), (cfg.batch,), generator=gen)] for members in by_row])
        t = torch.randint(0, n_train, (len(pick),), generator=gen)
        noise = torch.randn(latents[pick].shape, generator=gen)
        loss = denoising_loss(parts, tokens, latents[pick].to(parts.device), [prompts[i] for i in pick],
                              t.to(parts.device), noise.to(parts.device), scheduler)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if on_step:
            on_step(step, losses[-1])
    return losses
