"""The rollout against hand-built references: depth equals a loop that detaches the latents before the
last k calls (the reference code's own loop, classifier-free guidance in one batch), the CFG split at the
first call with gradient changes nothing, and checkpointing really recomputes what it says it does."""

import pytest
import torch

from dct.pipeline import make_scheduler
from dct.rollout import decode, rollout
from dct.token import ClassTokens, encode_prompts

STEPS, GUIDANCE = 4, 3.0
PROMPTS = ["a newclas seven", "a photo of newclas"]


def _setup(parts):
    tokens = ClassTokens(parts.tokenizer, parts.text_encoder, ["newclas"], "a")
    with torch.no_grad():
        uncond = encode_prompts(parts.tokenizer, parts.text_encoder, ["", ""])
    latents = torch.randn(2, *parts.latent_shape, generator=torch.Generator().manual_seed(0))
    return tokens, uncond, latents


def _loss(images):
    return (images * torch.linspace(-1, 1, images.numel()).view_as(images)).sum()


def manual_rollout(parts, scheduler_name, cond, uncond, latents, k):
    """The reference code's loop (run.py 245-304): every call before the last k under no_grad, then the last
    k with gradient, CFG always as one batch of 2B; latents detached where gradient starts."""
    scheduler = make_scheduler(scheduler_name, parts.scheduler)
    scheduler.set_timesteps(STEPS)
    x = latents.float() * scheduler.init_noise_sigma
    n = len(scheduler.timesteps)
    embeds = torch.cat([uncond, cond])
    for i, t in enumerate(scheduler.timesteps):
        with torch.set_grad_enabled(i >= n - k):
            if i == n - k:
                x = x.detach()
            x_in = scheduler.scale_model_input(torch.cat([x, x]), t)
            eps = parts.unet(x_in, t, encoder_hidden_states=embeds).sample
            eps_u, eps_c = eps.chunk(2)
            x = scheduler.step(eps_u + GUIDANCE * (eps_c - eps_u), t, x).prev_sample
    return decode(parts.vae, x)


def _grad_and_images(parts, fn):
    tokens, uncond, latents = _setup(parts)
    images = fn(tokens.encode(PROMPTS), uncond, latents)
    _loss(images).backward()
    grad = tokens.vectors.grad.detach().clone()
    tokens.remove()
    return grad, images.detach()


@pytest.mark.parametrize("scheduler", ["ddim", "pndm"])
@pytest.mark.parametrize("k", [1, 2, "full"])
def test_depth_equals_a_loop_that_detaches_before_the_last_k_calls(parts, scheduler, k):
    n = STEPS + (1 if scheduler == "pndm" else 0)
    kk = n if k == "full" else k
    ours, img_ours = _grad_and_images(parts, lambda c, u, x: rollout(
        parts.unet, parts.vae, make_scheduler(scheduler, parts.scheduler), c, u, x, num_steps=STEPS,
        guidance=GUIDANCE, depth=k).images)
    ref, img_ref = _grad_and_images(parts, lambda c, u, x: manual_rollout(parts, scheduler, c, u, x, kk))
    torch.testing.assert_close(img_ours, img_ref, rtol=1e-5, atol=1e-6)
    # the split CFG batch sums in another order: equal to float rounding (~1e-7 of the norm), while one
    # call more or less with gradient moves it by 1e-2 or more (test below)
    assert (ours - ref).norm() < 1e-5 * ref.norm(), float((ours - ref).norm() / ref.norm())


def test_depth_two_differs_from_depth_one(parts):
    g = {k: _grad_and_images(parts, lambda c, u, x, k=k: rollout(
        parts.unet, parts.vae, make_scheduler("ddim", parts.scheduler), c, u, x, num_steps=STEPS,
        guidance=GUIDANCE, depth=k).images)[0] for k in (1, 2)}
    assert (g[1] - g[2]).norm() > 1e-2 * g[2].norm(), float((g[1] - g[2]).norm() / g[2].norm())


def test_pndm_depth_two_puts_gradient_on_exactly_the_last_two_calls(parts):
    flags = []
    handle = parts.unet.register_forward_hook(lambda m, a, out: flags.append(out[0].requires_grad))
    try:
        tokens, uncond, latents = _setup(parts)
        out = rollout(parts.unet, parts.vae, make_scheduler("pndm", parts.scheduler), tokens.encode(PROMPTS),
                      uncond, latents, num_steps=STEPS, guidance=GUIDANCE, depth=2)
        tokens.remove()
    finally:
        handle.remove()
    # 5 calls for 4 PNDM steps; the first call with gradient also runs its unconditional half under
    # no_grad (one extra forward without gradient)
    assert out.n_calls == 5 and out.n_grad_calls == 2
    assert flags == [False, False, False, True, False, True]


@pytest.mark.parametrize("depth", [1, "full"])
def test_images_with_gradient_equal_a_no_grad_rollout(parts, depth):
    """The CFG split at the first call with gradient (the unconditional half under no_grad) renders exactly
    the images of a rollout without any gradient."""
    tokens, uncond, latents = _setup(parts)
    cond = tokens.encode(PROMPTS)
    kw = dict(num_steps=STEPS, guidance=GUIDANCE)
    with_grad = rollout(parts.unet, parts.vae, make_scheduler("ddim", parts.scheduler), cond, uncond, latents,
                        depth=depth, **kw).images
    with torch.no_grad():
        plain = rollout(parts.unet, parts.vae, make_scheduler("ddim", parts.scheduler), cond, uncond, latents,
                        depth=0, **kw).images
    tokens.remove()
    assert with_grad.requires_grad
    torch.testing.assert_close(with_grad.detach(), plain, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- checkpointing recomputes

# Forward calls of each watched module during BACKWARD, per checkpointing mode, at depth k. block:
# diffusers re-runs each checkpointed resnet that is in the graph; the first resnet of the first call with
# gradient is not (its inputs, the latents and the time embedding, do not depend on the token yet; the
# token enters through cross-attention), so it is re-run k - 1 times. step: every call with gradient is
# re-run whole (its text embedding depends on the token). both: the whole-call re-runs plus the resnets'
# own re-runs. The VAE decode is checkpointed per up block in every mode but none (one re-run).
EXPECTED = {  # mode: lambda k: (unet.conv_in, unet.down_blocks[0].resnets[0]) re-runs
    "none": lambda k: (0, 0),
    "block": lambda k: (0, k - 1),
    "step": lambda k: (k, k),
    "both": lambda k: (k, k + k - 1),
}


@pytest.mark.parametrize("mode", ["none", "block", "step", "both"])
@pytest.mark.parametrize("k", [2, 3])
def test_checkpointing_recomputes_what_it_should_during_backward(parts, mode, k):
    modules = {"conv_in": parts.unet.conv_in, "down0": parts.unet.down_blocks[0].resnets[0],
               "vae_up0": parts.vae.decoder.up_blocks[0]}
    counts = dict.fromkeys(modules, 0)
    handles = [m.register_forward_pre_hook(lambda mod, args, name=name: counts.__setitem__(name, counts[name] + 1))
               for name, m in modules.items()]
    try:
        tokens, uncond, latents = _setup(parts)
        out = rollout(parts.unet, parts.vae, make_scheduler("ddim", parts.scheduler), tokens.encode(PROMPTS),
                      uncond, latents, num_steps=STEPS, guidance=GUIDANCE, depth=k, checkpointing=mode)
        forward = dict(counts)
        _loss(out.images).backward()
        tokens.remove()
    finally:
        for h in handles:
            h.remove()
        parts.unet.disable_gradient_checkpointing()
        parts.vae.disable_gradient_checkpointing()
    recomputed = {name: counts[name] - forward[name] for name in modules}
    assert (recomputed["conv_in"], recomputed["down0"]) == EXPECTED[mode](k), recomputed
    assert recomputed["vae_up0"] == (0 if mode == "none" else 1), recomputed
