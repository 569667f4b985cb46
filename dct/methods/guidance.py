"""Classifier guidance at sampling time, universal-guidance style (Bansal et al., "Universal Guidance for
Diffusion Models", 2023, forward guidance): at every step the clean latent is predicted from the noise
prediction, x0 = (x - sqrt(1 - abar_t) eps) / sqrt(abar_t), decoded, and the guide's log-probability of
the class on that image steers the noise prediction,

    eps' = eps - scale * sqrt(1 - abar_t) * grad_x log p(class | decode(x0(x, eps)))

with eps held fixed (no backward through the UNet: one VAE decode and one classifier forward and backward
per step and image). No training; the cost is paid at every image. It enters the one rollout through its
`step_guidance` hook (dct.rollout), not through a sampler of its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..rollout import decode


class ClassifierGuidance:
    """A `step_guidance(x, t, eps) -> eps` hook steering every image of a batch toward class `target`."""

    def __init__(self, vae, classifier, alphas_cumprod: torch.Tensor, target: int, scale: float):
        self.vae, self.classifier, self.target, self.scale = vae, classifier, int(target), float(scale)
        self.alphas_cumprod = alphas_cumprod.float()

    def log_prob(self, x: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """(B,) log p(target | decode(predicted x0)), with a graph to `x` when grad is enabled."""
        abar = self.alphas_cumprod[int(t)].to(x.device)
        x0 = (x - (1 - abar).sqrt() * eps) / abar.sqrt()
        logits = self.classifier(decode(self.vae, x0)).float()
        return F.log_softmax(logits, -1)[:, self.target]

    def __call__(self, x: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        if self.scale == 0:
            return eps
        with torch.enable_grad():
            xg = x.detach().float().requires_grad_(True)
            grad, = torch.autograd.grad(self.log_prob(xg, t, eps.detach().float()).sum(), xg)
        abar = self.alphas_cumprod[int(t)].to(x.device)
        return eps - self.scale * (1 - abar).sqrt() * grad.to(eps.dtype)


def guided_images(parts, guide, target: int, prompts, seeds, *, scale: float, scheduler: str = "ddim",
                  **sampling) -> torch.Tensor:
    """`dct.generate.generate_images` for one class with the guide steering every step."""
    from ..generate import generate_images
    from ..pipeline import make_scheduler

    alphas = make_scheduler(scheduler, parts.scheduler).alphas_cumprod
    hook = ClassifierGuidance(parts.vae, guide, alphas, target, scale) if scale else None
    return generate_images(parts, prompts, seeds, scheduler=scheduler, step_guidance=hook, **sampling)
