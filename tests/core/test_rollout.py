"""The rollout: gradient reaches the token at every depth and scheduler, with exactly `depth` UNet calls
carrying it, and checkpointing never changes the gradient."""

import pytest
import torch

from dct.pipeline import make_scheduler
from dct.rollout import rollout
from dct.token import ClassTokens, encode_prompts

STEPS = 4


def token_grad(parts, scheduler_name, depth, checkpointing="none", guidance=3.0):
    tokens = ClassTokens(parts.tokenizer, parts.text_encoder, ["newclas"], "a")
    cond = tokens.encode(["a newclas seven", "a photo of newclas"])
    with torch.no_grad():
        uncond = encode_prompts(parts.tokenizer, parts.text_encoder, ["", ""])
    latents = torch.randn(2, *parts.latent_shape, generator=torch.Generator().manual_seed(0))
    out = rollout(parts.unet, parts.vae, make_scheduler(scheduler_name, parts.scheduler), cond, uncond, latents,
                  num_steps=STEPS, guidance=guidance, depth=depth, checkpointing=checkpointing)
    # a loss that depends on every pixel, like a classifier's
    (out.images * torch.linspace(-1, 1, out.images.numel()).view_as(out.images)).sum().backward()
    grad = tokens.vectors.grad.detach().clone()
    tokens.remove()
    return grad, out


@pytest.mark.parametrize("scheduler", ["ddim", "pndm", "dpm++", "euler"])
@pytest.mark.parametrize("depth", [1, 2, "full"])
def test_gradient_reaches_token_and_counts_calls(parts, scheduler, depth):
    grad, out = token_grad(parts, scheduler, depth)
    assert torch.isfinite(grad).all()
    assert grad.abs().sum() > 0
    expected = out.n_calls if depth == "full" else depth
    assert out.n_grad_calls == expected
    assert out.images.shape == (2, 3, parts.resolution, parts.resolution)
    assert out.images.min() >= 0 and out.images.max() <= 1


def test_pndm_repeats_a_timestep(parts):
    """PNDM makes one more UNet call than steps: the count that depth refers to is the call count."""
    _, out = token_grad(parts, "pndm", 1)
    assert out.n_calls == STEPS + 1
    assert len(set(out.timesteps)) == STEPS


def test_deeper_backprop_reaches_more(parts):
    g1, _ = token_grad(parts, "ddim", 1)
    gfull, _ = token_grad(parts, "ddim", "full")
    assert not torch.allclose(g1, gfull)


@pytest.mark.parametrize("mode", ["block", "step", "both"])
@pytest.mark.parametrize("depth", [1, "full"])
def test_checkpointing_gives_same_gradient(parts, mode, depth):
    ref, _ = token_grad(parts, "ddim", depth, "none")
    got, _ = token_grad(parts, "ddim", depth, mode)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-9)


def test_no_grad_outside_depth(parts):
    """depth 0 renders without any graph (generation), and a bad depth names the accepted range."""
    from dct.errors import ConfigError

    tokens = ClassTokens(parts.tokenizer, parts.text_encoder, ["newclas"], "a")
    cond = tokens.encode(["newclas"])
    latents = torch.randn(1, *parts.latent_shape)
    out = rollout(parts.unet, parts.vae, make_scheduler("ddim", parts.scheduler), cond, None, latents,
                  num_steps=STEPS, guidance=1.0, depth=0)
    assert out.n_grad_calls == 0 and not out.images.requires_grad
    with pytest.raises(ConfigError, match=r"depth 9 is out of range.*0\.\.4"):
        rollout(parts.unet, parts.vae, make_scheduler("ddim", parts.scheduler), cond, None, latents,
                num_steps=STEPS, guidance=1.0, depth=9)
