"""Architectures of the tiny world's text-to-image model, and a builder of a random-weight pipeline
folder in the standard diffusers layout (used by the world recipe and by the tests)."""

from __future__ import annotations

from pathlib import Path

import torch

from .tokenizer import write_clip_tokenizer

MAX_LENGTH = 16  # prompts of the tiny world are short; 16 positions keep the text encoder small
IMAGE_SIZE = 32

TEXT_ENCODER = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                    max_position_embeddings=MAX_LENGTH, vocab_size=49408, projection_dim=64,
                    hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
UNET = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
            block_out_channels=(64, 128), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=64,
            attention_head_dim=8, norm_num_groups=32)
VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
           block_out_channels=(32, 64, 64), norm_num_groups=32,
           down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
           sample_size=IMAGE_SIZE)
SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                 clip_sample=False, set_alpha_to_one=False, steps_offset=1, skip_prk_steps=True)


def build_components(seed: int = 0, token_init_std: float = 0.5):
    """Random-weight tokenizer-free components: (text_encoder, unet, vae, scheduler)."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_ENCODER))
    # CLIP's default init (std 0.02) makes all words nearly alike; text conditioning then never emerges
    # in a small training budget (tiny-world notes, lesson 1).
    torch.nn.init.normal_(text_encoder.get_input_embeddings().weight, std=token_init_std)
    unet = UNet2DConditionModel(**UNET)
    vae = AutoencoderKL(**VAE)
    scheduler = PNDMScheduler.from_config(SCHEDULER)  # keeps clip_sample=False for DDIM built from it
    return text_encoder, unet, vae, scheduler


def save_pipeline(folder: str | Path, text_encoder, unet, vae, scheduler, *, tokenizer_dir: str | Path | None = None,
                  dtype: torch.dtype = torch.float32) -> Path:
    """Save the components as a diffusers StableDiffusionPipeline folder (loadable offline)."""
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTokenizer

    folder = Path(folder)
    tok_dir = Path(tokenizer_dir) if tokenizer_dir else write_clip_tokenizer(folder / "_tok", MAX_LENGTH)
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), model_max_length=MAX_LENGTH)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   image_encoder=None, requires_safety_checker=False)
    pipe.to(dtype=dtype)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    if not tokenizer_dir:
        import shutil

        shutil.rmtree(tok_dir)
    return folder


def build_random_pipeline(folder: str | Path, seed: int = 0) -> Path:
    """A tiny random-weight Stable Diffusion folder with the real CLIP vocabulary (tests, benchmarks)."""
    return save_pipeline(folder, *build_components(seed))
