"""The one rollout function: denoise from starting latents to images, keeping a graph through only the
last `depth` UNet calls (the paper's "gradient skipping", generalised), then decode with the VAE.

Every experiment in the project (training, generation, evaluation, benchmarks) calls `rollout`; the
pieces that differ between them (scheduler, depth, checkpointing, precision) are its arguments, in the
style of k-diffusion's samplers: one pure function over the components it is given.

Depth is defined precisely as the number of FINAL UNet calls that carry gradient. A scheduler may make
more UNet calls than `num_steps` (PNDM with `skip_prk_steps` repeats one timestep: 31 calls for 30
steps), so the count of calls and of calls with gradient is returned and must be recorded per run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch.utils.checkpoint import checkpoint

from .errors import ConfigError

Checkpointing = Literal["none", "block", "step", "both"]
CHECKPOINTING_MODES = ("none", "block", "step", "both")


@dataclass
class RolloutResult:
    images: torch.Tensor  # (B, 3, H, W) in [0, 1], float32, with a graph when depth > 0
    latents: torch.Tensor  # final latents, float32
    n_calls: int  # UNet calls made (len(scheduler.timesteps))
    n_grad_calls: int  # UNet calls that carried gradient
    timesteps: list[int]


def resolve_depth(depth: int | str, n_calls: int) -> int:
    """`depth` as a count of final UNet calls with gradient; "full"/"all" means every call."""
    if isinstance(depth, str):
        if depth in ("full", "all"):
            return n_calls
        if depth.isdigit():
            depth = int(depth)
        else:
            raise ConfigError(f"depth {depth!r} is not accepted: give an integer 0..{n_calls} or 'full'")
    if not 0 <= depth <= n_calls:
        raise ConfigError(
            f"depth {depth} is out of range: this scheduler makes {n_calls} UNet calls, so depth must be "
            f"0..{n_calls} (or 'full')"
        )
    return depth


def set_block_checkpointing(model, enabled: bool) -> None:
    """diffusers' per-block checkpointing (active whenever grad is enabled, diffusers >= 0.32)."""
    if enabled:
        model.enable_gradient_checkpointing()
    elif getattr(model, "is_gradient_checkpointing", False):
        model.disable_gradient_checkpointing()


def rollout(
    unet,
    vae,
    scheduler,
    cond: torch.Tensor,
    uncond: torch.Tensor | None,
    latents: torch.Tensor,
    *,
    num_steps: int,
    guidance: float,
    depth: int | str = 1,
    checkpointing: Checkpointing = "none",
    step_guidance: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> RolloutResult:
    """Denoise `latents` (B, C, h, w) conditioned on `cond` (B, L, D) and return decoded images.

    Classifier-free guidance runs the unconditional and conditional halves in one UNet call (batch 2B)
    when `guidance` != 1 and `uncond` is given. The last `depth` UNet calls and the VAE decode carry
    gradient; every earlier call runs under no_grad, so its activations are never stored.

    checkpointing: "block" = diffusers' per-block checkpointing of UNet and VAE; "step" = one
    torch.utils.checkpoint around each UNet call with gradient, and the VAE decode per block; "both" =
    both. The decode keeps about twice the activations of a UNet call at 512 px (issue 7's component
    probe), so every mode but "none" checkpoints it per block: one extra decode forward for ~2.4 GiB.

    While the latents do not yet depend on the token (the first UNet call with gradient), the
    unconditional half of classifier-free guidance has no path to the token: it runs under no_grad so
    its activations are not stored (~0.7 GiB at 512 px, same gradient).
    The caller owns the scheduler object; `set_timesteps` is called here because schedulers keep
    history (PNDM, DPM-Solver) that must not leak from one rollout into the next.

    step_guidance(x, t, eps) -> eps: called at every step on the (classifier-free guided) noise
    prediction before the scheduler step; sampling-time guidance (dct.methods.guidance: a classifier's
    gradient on the predicted clean image) enters here, so there is no second sampler.
    """
    if checkpointing not in CHECKPOINTING_MODES:
        raise ConfigError(f"checkpointing {checkpointing!r} is not accepted: use one of {CHECKPOINTING_MODES}")
    set_block_checkpointing(unet, checkpointing in ("block", "both"))
    set_block_checkpointing(vae, checkpointing != "none")
    step_ckpt = checkpointing in ("step", "both")

    scheduler.set_timesteps(num_steps, device=latents.device)
    timesteps = scheduler.timesteps
    n_calls = len(timesteps)
    k = resolve_depth(depth, n_calls)
    use_cfg = uncond is not None and guidance != 1.0
    model_dtype = unet.dtype
    embeds = torch.cat([uncond, cond]) if use_cfg else cond
    embeds = embeds.to(model_dtype)

    def unet_call(x_in: torch.Tensor, t: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return unet(x_in, t, encoder_hidden_states=emb, return_dict=False)[0]

    x = latents.float() * scheduler.init_noise_sigma
    n_grad = 0
    for i, t in enumerate(timesteps):
        with_grad = i >= n_calls - k and torch.is_grad_enabled()
        with torch.set_grad_enabled(with_grad):
            split = with_grad and use_cfg and not x.requires_grad  # uncond half cannot reach the token
            x_in = x if split or not use_cfg else torch.cat([x, x])
            x_in = scheduler.scale_model_input(x_in, t).to(model_dtype)
            emb = embeds[len(x):] if split else embeds
            if with_grad and step_ckpt:
                eps = checkpoint(unet_call, x_in, t, emb, use_reentrant=False)
            else:
                eps = unet_call(x_in, t, emb if with_grad else emb.detach())
            if split:
                with torch.no_grad():
                    eps_uncond = unet_call(x_in, t, embeds[:len(x)])
                eps = torch.cat([eps_uncond, eps])
            eps = eps.float()
            if use_cfg:
                eps_u, eps_c = eps.chunk(2)
                eps = eps_u + guidance * (eps_c - eps_u)
            if step_guidance is not None:
                eps = step_guidance(x, t, eps)
            x = scheduler.step(eps, t, x, return_dict=False)[0]
            n_grad += int(with_grad)

    grad_decode = torch.is_grad_enabled() and k > 0
    with torch.set_grad_enabled(grad_decode):
        images = decode(vae, x)
    return RolloutResult(images=images, latents=x, n_calls=n_calls, n_grad_calls=n_grad,
                         timesteps=[int(t) for t in timesteps])


def decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """VAE decode to images in [0, 1] (float32), as the reference: (x / 2 + 0.5).clamp(0, 1)."""
    scale = vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None) or 0.0

    def _decode(z: torch.Tensor) -> torch.Tensor:
        return vae.decode(z / scale + shift, return_dict=False)[0]

    out = _decode(latents.to(vae.dtype))
    return (out.float() / 2 + 0.5).clamp(0, 1)
