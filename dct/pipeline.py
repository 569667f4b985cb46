"""Loading a Stable Diffusion 1.x/2.x text-to-image model: a hub id or a local diffusers folder.

The embedded tiny world is a local diffusers folder and goes through exactly this code, so the path a
user with real weights runs is the path every test runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import ConfigError, ModelNotFoundError

SCHEDULERS = ("default", "ddim", "pndm", "dpm++", "euler")
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
          "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


@dataclass
class Parts:
    """The components of a text-to-image pipeline that DCT needs, with where they came from."""

    tokenizer: object
    text_encoder: torch.nn.Module
    unet: torch.nn.Module
    vae: torch.nn.Module
    scheduler: object
    source: str
    device: torch.device

    @property
    def resolution(self) -> int:
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return int(self.unet.config.sample_size) * factor

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        s = int(self.unet.config.sample_size)
        return (int(self.unet.config.in_channels), s, s)


def dtype_kwarg(dtype: torch.dtype) -> dict:
    """`dtype=` where diffusers reads it (it deprecates `torch_dtype`, with a warning per load), else the
    older `torch_dtype=`: decided from diffusers' own loader, not from a version number."""
    import inspect

    from diffusers import DiffusionPipeline

    try:
        modern = 'kwargs.pop("dtype"' in inspect.getsource(DiffusionPipeline.from_pretrained)
    except (OSError, TypeError):
        modern = False
    return {"dtype": dtype} if modern else {"torch_dtype": dtype}


def parse_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise ConfigError(f"dtype {name!r} is not accepted: use one of {sorted(set(DTYPES))}") from None


def _looks_like_path(model: str) -> bool:
    # A hub id is exactly "org/name"; anything else that does not exist is a missing folder.
    return model.startswith((".", "/", "~")) or model.count("/") != 1


def resolve_model_source(model: str) -> str:
    """A local folder (checked for model_index.json) or a hub id; fail fast with a clear message."""
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise ModelNotFoundError(
                f"model folder {str(path)!r} has no model_index.json: expected a diffusers pipeline folder "
                "(model_index.json, tokenizer/, text_encoder/, unet/, vae/, scheduler/)"
            )
        return str(path)
    if _looks_like_path(model):
        raise ModelNotFoundError(
            f"model folder {model!r} does not exist; give an existing diffusers folder or a hub id such as "
            "'CompVis/stable-diffusion-v1-4' (omit --model to use the embedded tiny world)"
        )
    return model


def load_parts(
    model: str | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "fp32",
    text_encoder_dtype: str | torch.dtype = "fp32",
    local_files_only: bool | None = None,
) -> Parts:
    """Load tokenizer, text encoder, UNet, VAE and scheduler; `model=None` is the embedded tiny world.

    UNet and VAE get `dtype`; the text encoder `text_encoder_dtype` (fp32 in the reference protocol,
    since the trained row lives there). Offline mode (HF_HUB_OFFLINE=1) is honoured by diffusers;
    `local_files_only=True` forces it.
    """
    from diffusers import StableDiffusionPipeline

    if model is None:
        from .world.paths import default_pipeline_dir

        model = str(default_pipeline_dir())
    source = resolve_model_source(model)
    dtype = parse_dtype(dtype) if isinstance(dtype, str) else dtype
    te_dtype = parse_dtype(text_encoder_dtype) if isinstance(text_encoder_dtype, str) else text_encoder_dtype
    if local_files_only is None:
        local_files_only = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            source, **dtype_kwarg(dtype), safety_checker=None, feature_extractor=None,
            image_encoder=None, requires_safety_checker=False, local_files_only=local_files_only,
        )
    except (OSError, EnvironmentError, ValueError) as exc:
        raise ModelNotFoundError(
            f"could not load model {model!r}: {exc.__class__.__name__}: {str(exc).splitlines()[0][:300]}. "
            "Give a local diffusers folder, or a hub id that is cached or reachable"
        ) from exc
    device = torch.device(device)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.requires_grad_(False)
        m.eval()
    pipe.text_encoder.to(device=device, dtype=te_dtype)
    pipe.unet.to(device)
    pipe.vae.to(device)
    return Parts(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, unet=pipe.unet, vae=pipe.vae,
                 scheduler=pipe.scheduler, source=source, device=device)


def make_scheduler(name: str, base):
    """A fresh scheduler of kind `name`, built from the pipeline's own scheduler config."""
    from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler,
                           PNDMScheduler)

    config = base.config
    if name == "default":
        return base.__class__.from_config(config)
    if name == "ddim":
        return DDIMScheduler.from_config(config)
    if name == "pndm":
        return PNDMScheduler.from_config(config, skip_prk_steps=True)
    if name == "dpm++":
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++")
    if name == "euler":
        return EulerDiscreteScheduler.from_config(config)
    raise ConfigError(f"scheduler {name!r} is not accepted: use one of {SCHEDULERS}")
