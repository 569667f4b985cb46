"""Full-size Stable Diffusion architectures and the reference ImageNet classifier, built from configs
embedded here (no download), with RANDOM weights.

Memory and time of a DCT step depend on the architecture, the resolution and the dtypes, not on the
weight values, so the full-size benchmarks (bench/cells/step.py) run these where real weights cannot be
fetched. Every config below is the public one, with its source named; the parameter counts are checked
against the public models in tests/bench/cells/test_cells_step.py.

    sd15      SD 1.x (CompVis/stable-diffusion-v1-4 = runwayml/stable-diffusion-v1-5 architecture):
              UNet 859.5M, VAE 83.7M, CLIP ViT-L/14 text encoder 123.1M; PNDM; 512 px
    sd21base  SD 2.1-base (stabilityai/stable-diffusion-2-1-base): UNet 865.9M (head counts [5,10,20,20],
              cross-attention 1024, linear projections), same VAE, OpenCLIP ViT-H/14 text tower as a
              CLIPTextModel (23 layers: SD 2 takes the penultimate of 24) 340.4M; PNDM; 512 px
    tiny      the embedded tiny world (`load_parts()`), or a tiny random pipeline (`weights="random"`)
    ViT-L/16  google/vit-large-patch16-224 (the reference code's ImageNet classifier) 304.3M, loaded
              through the classifier registry (`hf:<folder>`) like a real one

Construction is on the meta device, then the tensors are allocated once on the target device in the
target dtype and initialised there (torch's default init for diffusers models, transformers' usual
normal(0.02) init for the text encoder and the ViT). Building in fp32 and casting would briefly hold both
copies, and on the GPU that transient would be the process's peak memory, not the step's.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .errors import ConfigError
from .pipeline import Parts, parse_dtype

ARCHS = ("tiny", "sd15", "sd21base")
FULL_SIZE = ("sd15", "sd21base")
WEIGHTS = ("random", "world")

# --- Stable Diffusion 1.x -----------------------------------------------------------------------------
# huggingface.co/CompVis/stable-diffusion-v1-4/blob/main/unet/config.json (identical in v1-5); it is what
# diffusers' convert_from_ckpt derives from v1-inference.yaml (model_channels 320, channel_mult 1,2,4,4,
# num_heads 8, context_dim 768). Keys left out take diffusers' defaults, which equal the file's values.
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, act_fn="silu", norm_num_groups=32, norm_eps=1e-5,
    center_input_sample=False, flip_sin_to_cos=True, freq_shift=0, downsample_padding=1,
    mid_block_scale_factor=1, use_linear_projection=False, upcast_attention=False,
)
# huggingface.co/CompVis/stable-diffusion-v1-4/blob/main/vae/config.json; scaling_factor 0.18215 is the
# one every SD 1.x/2.x pipeline divides latents by before decoding.
SD_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    act_fn="silu", norm_num_groups=32, sample_size=512, scaling_factor=0.18215,
)
# The text_config of huggingface.co/openai/clip-vit-large-patch14/blob/main/config.json, as in
# CompVis/stable-diffusion-v1-4/text_encoder/config.json (CLIPTextModel: no projection layer).
SD15_TEXT = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768, layer_norm_eps=1e-5,
    bos_token_id=0, eos_token_id=2, pad_token_id=1,
)
# huggingface.co/CompVis/stable-diffusion-v1-4/blob/main/scheduler/scheduler_config.json; the same values
# in stabilityai/stable-diffusion-2-1-base (an epsilon-prediction model, unlike the 768-v one).
SD_SCHEDULER = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1, clip_sample=False, prediction_type="epsilon",
)

# --- Stable Diffusion 2.1-base ------------------------------------------------------------------------
# huggingface.co/stabilityai/stable-diffusion-2-1-base/blob/main/unet/config.json: "attention_head_dim"
# holds head COUNTS per block (64 channels per head, from num_head_channels 64 in v2-inference.yaml),
# cross_attention_dim 1024 (OpenCLIP-H width), linear in/out projections of the transformer blocks.
# The 768-v model (stable-diffusion-2-1) differs by sample_size 96 and upcast_attention true.
SD21BASE_UNET = {**SD15_UNET, "attention_head_dim": (5, 10, 20, 20), "cross_attention_dim": 1024,
                 "use_linear_projection": True}
# huggingface.co/stabilityai/stable-diffusion-2-1-base/blob/main/text_encoder/config.json: OpenCLIP ViT-H/14's
# text tower without its last layer (SD 2 conditions on the penultimate layer), GELU, 16 heads.
SD21BASE_TEXT = dict(
    vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
    max_position_embeddings=77, hidden_act="gelu", projection_dim=512, layer_norm_eps=1e-5,
    bos_token_id=0, eos_token_id=2, pad_token_id=1,
)

ARCH_CONFIGS = {
    "sd15": dict(unet=SD15_UNET, vae=SD_VAE, text=SD15_TEXT, scheduler=SD_SCHEDULER,
                 # SD 1.x's tokenizer pads with <|endoftext|>
                 tokenizer_pad="<|endoftext|>", source="CompVis/stable-diffusion-v1-4 (architecture)"),
    # stabilityai/stable-diffusion-2-1-base/tokenizer/special_tokens_map.json pads with "!" (OpenCLIP's pad)
    "sd21base": dict(unet=SD21BASE_UNET, vae=SD_VAE, text=SD21BASE_TEXT, scheduler=SD_SCHEDULER,
                     tokenizer_pad="!", source="stabilityai/stable-diffusion-2-1-base (architecture)"),
}

# --- the reference ImageNet classifier ---------------------------------------------------------------
# huggingface.co/google/vit-large-patch16-224/blob/main/config.json (ViTForImageClassification, 1000
# ImageNet classes) and its preprocessor_config.json (resize to 224x224, bilinear, mean = std = 0.5).
VIT_L16 = dict(
    hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, hidden_act="gelu",
    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.02, layer_norm_eps=1e-12,
    image_size=224, patch_size=16, num_channels=3, qkv_bias=True, num_labels=1000,
)
VIT_L16_PROCESSOR = dict(do_resize=True, size={"height": 224, "width": 224}, resample=2, do_rescale=True,
                         rescale_factor=1 / 255, do_normalize=True, image_mean=[0.5, 0.5, 0.5],
                         image_std=[0.5, 0.5, 0.5])
VIT_L16_NAME = "vit-large-patch16-224"

# Public parameter counts (from the released checkpoints), checked by the tests against our builds.
PUBLIC_PARAMS = {
    ("sd15", "unet"): 859_520_964, ("sd15", "vae"): 83_653_863, ("sd15", "text_encoder"): 123_060_480,
    ("sd21base", "unet"): 865_910_724, ("sd21base", "vae"): 83_653_863, ("sd21base", "text_encoder"): 340_387_840,
    ("vit-l16", "classifier"): 304_326_632,
}


def check_arch(arch: str) -> str:
    if arch not in ARCHS:
        raise ConfigError(f"arch {arch!r} is not accepted: use one of {ARCHS}")
    return arch


def cache_dir() -> Path:
    """Where built-once artefacts (tokenizer folders, the random ViT folder) are kept: $DCT_CACHE, else
    $XDG_CACHE_HOME/dct, else ~/.cache/dct."""
    if os.environ.get("DCT_CACHE"):
        return Path(os.environ["DCT_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "dct"


def _cached_folder(name: str, build) -> Path:
    """`cache_dir()/archs/<name>`, built by `build(tmp_folder)` into a temporary folder and renamed into
    place, so two processes building it at once never see a half-written folder."""
    target = cache_dir() / "archs" / name
    if (target / ".complete").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        build(tmp)
        (tmp / ".complete").write_text("")
        try:
            tmp.rename(target)
        except OSError:  # another process finished first
            if not (target / ".complete").is_file():
                shutil.rmtree(target, ignore_errors=True)
                tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# --- construction --------------------------------------------------------------------------------------


def _materialize_torch_init(module: torch.nn.Module, device, dtype: torch.dtype) -> torch.nn.Module:
    """Allocate a meta-built diffusers model on `device` in `dtype` and give it torch's default init
    (what `UNet2DConditionModel(**config)` does, without first building it in fp32 on the CPU)."""
    torch.nn.Module.to(module, dtype=dtype)  # nn.Module.to: diffusers' override warns about fp32 modules
    module.to_empty(device=device)
    for name, sub in module.named_modules():
        if hasattr(sub, "reset_parameters"):
            sub.reset_parameters()
        else:
            for pname, param in sub.named_parameters(recurse=False):
                # No module of the SD UNet/VAE has such a parameter today; a future one gets a small init
                # rather than uninitialised memory.
                torch.nn.init.normal_(param, std=0.02)
    if any(True for _ in module.buffers()):
        raise RuntimeError(f"{type(module).__name__} has buffers that to_empty leaves uninitialised: "
                           f"{[n for n, _ in module.named_buffers()]}")
    return module


def _materialize_hf_init(model: torch.nn.Module, device, dtype: torch.dtype) -> torch.nn.Module:
    """Allocate a meta-built transformers model and give it transformers' usual init (normal 0.02 for
    linear, conv and embedding weights and for free parameters such as ViT's cls token, zero biases,
    unit LayerNorms). Written out here rather than calling `init_weights()`, whose handling of tensors
    re-allocated by `to_empty` differs between transformers versions (5.17 on the GPU machine, 5.24 here):
    uninitialised memory must never reach a benchmark."""
    from torch import nn

    model.to(dtype=dtype)
    model.to_empty(device=device)
    with torch.no_grad():
        for sub in model.modules():
            if isinstance(sub, (nn.Linear, nn.Conv2d, nn.Embedding)):
                nn.init.normal_(sub.weight, std=0.02)
                if getattr(sub, "bias", None) is not None:
                    nn.init.zeros_(sub.bias)
            elif isinstance(sub, nn.LayerNorm):
                nn.init.ones_(sub.weight)
                nn.init.zeros_(sub.bias)
            else:
                for param in sub.parameters(recurse=False):
                    nn.init.normal_(param, std=0.02)
        for name, buf in model.named_buffers():
            if not name.endswith("position_ids"):
                raise RuntimeError(f"{type(model).__name__} buffer {name!r} would stay uninitialised after to_empty")
            buf.copy_(torch.arange(buf.shape[-1], device=buf.device).expand_as(buf))
    return model


def _as_dtype(dtype) -> torch.dtype:
    return parse_dtype(dtype) if isinstance(dtype, str) else dtype


def build_unet(arch: str, device="meta", dtype="fp32"):
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**ARCH_CONFIGS[arch]["unet"])
    return unet if str(device) == "meta" else _materialize_torch_init(unet, device, _as_dtype(dtype))


def build_vae(arch: str, device="meta", dtype="fp32"):
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        vae = AutoencoderKL(**ARCH_CONFIGS[arch]["vae"])
    return vae if str(device) == "meta" else _materialize_torch_init(vae, device, _as_dtype(dtype))


def build_text_encoder(arch: str, device="meta", dtype="fp32"):
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        model = CLIPTextModel(CLIPTextConfig(**ARCH_CONFIGS[arch]["text"]))
    return model if str(device) == "meta" else _materialize_hf_init(model, device, _as_dtype(dtype))


def build_vit_l16(device="meta", dtype="fp32"):
    from transformers import ViTConfig, ViTForImageClassification

    with torch.device("meta"):
        model = ViTForImageClassification(ViTConfig(**VIT_L16))
    return model if str(device) == "meta" else _materialize_hf_init(model, device, _as_dtype(dtype))


def build_scheduler(arch: str):
    from diffusers import PNDMScheduler

    return PNDMScheduler.from_config(ARCH_CONFIGS[arch]["scheduler"])


def tokenizer_dir(arch: str) -> Path:
    """The real CLIP BPE tokenizer (dct.world.tokenizer), 77 positions, with the arch's pad token."""
    from .world.tokenizer import write_clip_tokenizer

    pad = ARCH_CONFIGS[arch]["tokenizer_pad"]

    def build(folder: Path) -> None:
        write_clip_tokenizer(folder, model_max_length=77)
        cfg_path = folder / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["pad_token"] = pad
        cfg_path.write_text(json.dumps(cfg, indent=2))
        special = folder / "special_tokens_map.json"
        tokens = json.loads(special.read_text())
        tokens["pad_token"] = pad
        special.write_text(json.dumps(tokens, indent=2))

    name = "clip-tokenizer-77" + ("-pad-excl" if pad == "!" else "")
    return _cached_folder(name, build)


def build_tokenizer(arch: str):
    from transformers import CLIPTokenizer

    # model_max_length must be given: without it transformers 5 reads ~1e30 (environment.md)
    return CLIPTokenizer.from_pretrained(str(tokenizer_dir(arch)), model_max_length=77)


def param_counts(arch: str) -> dict[str, int]:
    """Parameters per component, counted on the meta device (no memory, milliseconds)."""
    check_arch(arch)
    if arch == "tiny":
        raise ConfigError("param_counts is for the full-size archs; the tiny world's are in its manifest")

    def n(module) -> int:
        return sum(p.numel() for p in module.parameters())

    return {"unet": n(build_unet(arch)), "vae": n(build_vae(arch)), "text_encoder": n(build_text_encoder(arch))}


def build_parts(arch: str, device="cpu", dtype="fp16", text_encoder_dtype="fp32", *, weights: str | None = None,
                seed: int = 0) -> Parts:
    """`dct.pipeline.Parts` of an architecture: UNet and VAE in `dtype`, text encoder in `text_encoder_dtype`
    (fp32 in the reference protocol: the trained token lives there).

    arch "tiny": weights "world" (default) is the embedded tiny world through `load_parts()`, "random" a
    tiny random-weight pipeline (dct.world.arch.build_random_pipeline, cached), so the benchmarks run
    before a world is committed. Full-size archs: weights "random" only (seeded by `seed`).
    """
    check_arch(arch)
    device = torch.device(device)
    if arch == "tiny":
        from .pipeline import load_parts

        weights = weights or "world"
        if weights == "world":
            return load_parts(None, device=device, dtype=dtype, text_encoder_dtype=text_encoder_dtype)
        if weights == "random":
            return load_parts(str(tiny_random_dir(seed)), device=device, dtype=dtype,
                              text_encoder_dtype=text_encoder_dtype)
        raise ConfigError(f"weights {weights!r} is not accepted for arch 'tiny': use one of {WEIGHTS}")
    weights = weights or "random"
    if weights != "random":
        raise ConfigError(f"weights {weights!r} is not accepted for arch {arch!r}: only 'random' (no full-size "
                          "weights can be downloaded here; for real weights load a diffusers folder with "
                          "dct.pipeline.load_parts)")
    torch.manual_seed(seed)
    unet = build_unet(arch, device, dtype)
    vae = build_vae(arch, device, dtype)
    text_encoder = build_text_encoder(arch, device, text_encoder_dtype)
    for m in (unet, vae, text_encoder):
        m.requires_grad_(False)
        m.eval()
    return Parts(tokenizer=build_tokenizer(arch), text_encoder=text_encoder, unet=unet, vae=vae,
                 scheduler=build_scheduler(arch), source=f"arch:{arch} random weights seed {seed} "
                 f"({ARCH_CONFIGS[arch]['source']})", device=device)


def tiny_random_dir(seed: int = 0) -> Path:
    from .world.arch import build_random_pipeline

    return _cached_folder(f"tiny-random-sd-s{seed}", lambda folder: build_random_pipeline(folder / "sd", seed=seed)) / "sd"


# --- the reference classifier ------------------------------------------------------------------------


def vit_l16_dir(seed: int = 0) -> Path:
    """A random-weight google/vit-large-patch16-224 folder (config, fp16 safetensors, image processor),
    built once into the cache: loaded with `hf:<folder>` it goes through the same code as the real one."""

    def build(folder: Path) -> None:
        from transformers import ViTImageProcessor

        torch.manual_seed(seed)
        model = build_vit_l16("cpu", "fp32")
        # Half the bytes on disk; the loader casts to the dtype asked for.
        model.to(torch.float16).save_pretrained(str(folder), safe_serialization=True)
        ViTImageProcessor(**VIT_L16_PROCESSOR).save_pretrained(str(folder))

    return _cached_folder(f"{VIT_L16_NAME}-random-s{seed}", build)


def reference_classifier(device="cpu", dtype="fp32", seed: int = 0) -> torch.nn.Module:
    """The reference code's ImageNet classifier architecture (ViT-L/16) with random weights, as a
    `dct.classifiers.Classifier`: takes (B, 3, H, W) images in [0, 1], preprocessing inside."""
    from .classifiers import load_classifier

    clf = load_classifier(f"hf:{vit_l16_dir(seed)}")
    return clf.to(device=torch.device(device), dtype=_as_dtype(dtype))
