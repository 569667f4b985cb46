"""Plan a DCT step without a GPU: predicted peak device memory, FLOPs and time of one optimisation step.

    from bench.plan.planner import plan
    p = plan({"arch": "sd15", "depth": 10, "checkpointing": "none", "batch": 4}, gpu="rtx4090")
    p.peak_bytes, p.flops, p.seconds, p.fits

The config is a `step` cell's (bench/cells/step.py: arch, resolution, scheduler, steps, guidance, depth,
checkpointing, precision, batch, images_per_update, classifier...), validated by the same code.

How: the REAL step (dct.train.dct_loss: text encoder with the spliced token, dct.rollout.rollout, VAE
decode, classifier, cross-entropy, then backward) runs on the meta device under bench.plan.trace.Tracer,
with depth 1 and a 2-call schedule; one UNet call with gradient, wrapped as the rollout wraps it for the
checkpointing mode, is traced alone. Everything else is arithmetic, exact for the rollout's structure:

    peak(depth)   = weights + cuBLAS workspaces + step peak at depth 1 + (depth - 1) x bytes one more
                    call with gradient keeps until backward (none: its saved tensors; block: its block
                    inputs; step/both: its inputs) + the calibrated untraced bytes per image
    FLOPs(depth)  = step FLOPs + (calls - 2) x no-grad call + (depth - 1) x (call with grad - no-grad call)

The peak of a deeper rollout sits where the depth-1 peak sits (VAE / classifier backward, or one call's
recomputation), with every extra call's retained bytes still live: nothing of an earlier call is freed
before the backward reaches it. Traces are cached per (arch, resolution, batch, element size, mode,
protocol, classifier, device) in memory and on disk (`dct.archs.cache_dir()/plan`), so a grid of any depths is
arithmetic after the first cells.

Protocols (what code the prediction is of):
    dct            this repository's rollout (the default)
    anchor-h200    the rollout the H200 anchor was measured with (d6273e2): the first call with gradient
                   runs the full classifier-free-guidance batch with gradient, and the VAE is checkpointed
                   only with block checkpointing (today: in every mode but none)
    reference-code the authors' run.py: as anchor-h200 but the VAE is never checkpointed; added by
                   arithmetic (their code is not here to trace): the trained parameter is the whole
                   fp32 embedding table (its gradient and AdamW's two moments), the classifier is
                   never frozen (a fp32 gradient per weight), and Accelerate's fp16 autocast saves
                   fp16 copies of the text encoder's Linear weights in both passes with gradient
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from dct.errors import ConfigError

from bench.plan.trace import GPUS, Tracer, fused_attention, rounded

GIB = 2**30
PROTOCOLS = ("dct", "anchor-h200", "reference-code")
TRACE_VERSION = 2  # bump when what a trace measures changes: invalidates the disk cache

# The one calibrated memory constant (for every arch: the untraced bytes sit in the shared VAE decode and
# classifier): bytes per image of the rollout at 512 px (scaled by pixel count), added to every
# predicted peak, for what the trace does not see on CUDA (cuDNN convolution workspaces of the 512-px
# decode, allocator slack). It is the anchor's measured peak minus the uncalibrated prediction on ONE
# row, MEMORY_CALIBRATION_ROW, divided by its images; every other anchor row validates it (README
# "Planning a GPU run"). `python -m bench.plan.anchor calibrate` recomputes it.
MEMORY_CALIBRATION_ROW = ("sd15", 4, "both", 1)  # arch, batch, checkpointing, depth
UNTRACED_BYTES_PER_IMAGE = 310_402_032  # 0.289 GiB
# Time = the per-op roofline (bench/plan/trace.py) + a launch cost per kernel: at batch 1 a DCT step
# is bound by kernel launches (the H200 runs a batch-4 step in about the time of a batch-1 step), so a
# roofline scaled by one efficiency cannot describe both. The cost (host launch and dispatch overhead,
# taken to be the same on every GPU) is calibrated on one anchor row; only the H200 has been measured.
TIME_CALIBRATION_ROW = ("sd15", 1, "block", 5)
LAUNCH_SECONDS = 4.2e-05  # 42 us per kernel (launch + host dispatch)


# --- parsing ------------------------------------------------------------------------------------------

_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(GiB|GB|MiB|MB|G|M)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'24GiB', '24 GB', '80G', '500MiB' -> bytes (GB and G are taken as GiB: what cards are sold as is
    close to what torch reports in GiB, e.g. a '24 GB' card shows 23.6 GiB)."""
    m = _SIZE.match(str(text))
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"size {text!r} is not accepted: give a positive number with GiB, GB, G, MiB or MB "
                          "(e.g. 24GiB)")
    unit = (m.group(2) or "GiB").lower()
    return int(float(m.group(1)) * (2**20 if unit.startswith("m") else GIB))


def check_gpu(name: str) -> str:
    if name not in GPUS:
        raise ConfigError(f"gpu {name!r} is not accepted: use one of {sorted(GPUS)}")
    return name


def gpu_for(device_name: str, total_memory: int) -> str:
    """The GPUS entry of a CUDA device, by name and memory ('NVIDIA A100-SXM4-80GB' -> a100-80gb); the
    H100 when none matches (memory is still judged against the device's own size)."""
    flat = device_name.lower().replace(" ", "").replace("-", "")
    known = [g for g in GPUS.values() if g.name.split("-")[0] in flat]
    if not known:
        return "h100"
    return min(known, key=lambda g: abs(g.memory_gib * GIB - total_memory)).name


def check_protocol(name: str) -> str:
    if name not in PROTOCOLS:
        raise ConfigError(f"protocol {name!r} is not accepted: use one of {PROTOCOLS}")
    return name


def validate(config: dict) -> dict:
    """A step cell config with defaults filled; `arch` may also be a diffusers folder."""
    from bench.cells.step import validate as validate_step

    arch = config.get("arch", "tiny")
    if isinstance(arch, str) and arch not in ("tiny", "sd15", "sd21base"):
        folder = Path(arch).expanduser()
        if not (folder / "model_index.json").is_file():
            raise ConfigError(f"arch {arch!r} is not accepted: use sd15, sd21base, tiny or a diffusers folder "
                              "(one with model_index.json)")
        # the step cell knows only named archs: validate the rest against tiny, then put the folder back
        c = validate_step({**config, "arch": "tiny", "weights": "random", "resolution": None,
                           "classifier": config.get("classifier") or "tiny-random"})
        c["arch"] = str(folder)
        c["resolution"] = config.get("resolution")
        return c
    return validate_step(config)


# --- meta-device parts ------------------------------------------------------------------------------


def _dtype(name: str) -> torch.dtype:
    from dct.train import precision_dtype

    return precision_dtype(name)


@functools.lru_cache(maxsize=4)
def meta_parts(arch: str, precision: str, text_encoder_precision: str, weights: str | None = None):
    """dct.pipeline.Parts on the meta device: the full-size archs from dct.archs' configs, the tiny world or
    a diffusers folder from its config files. No weights are read or allocated."""
    from dct.pipeline import Parts

    if arch in ("sd15", "sd21base"):
        from dct.archs import build_scheduler, build_text_encoder, build_tokenizer, build_unet, build_vae

        unet, vae, text = build_unet(arch), build_vae(arch), build_text_encoder(arch)
        tokenizer, scheduler = build_tokenizer(arch), build_scheduler(arch)
    else:
        from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

        if arch == "tiny" and weights == "random":  # the tiny random pipeline: its own (cached) folder
            from dct.archs import tiny_random_dir

            folder = tiny_random_dir()
        elif arch == "tiny":
            from dct.world.paths import default_pipeline_dir

            folder = default_pipeline_dir()
        else:
            folder = Path(arch)
        with torch.device("meta"):
            unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
            vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
            text = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
        # model_max_length must be given (transformers 5 reads ~1e30 otherwise): the encoder's positions
        tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"),
                                                  model_max_length=text.config.max_position_embeddings)
        scheduler = PNDMScheduler.from_config(PNDMScheduler.load_config(folder / "scheduler"))
    torch.nn.Module.to(unet, _dtype(precision))
    torch.nn.Module.to(vae, _dtype(precision))
    text.to(_dtype(text_encoder_precision))
    for m in (unet, vae, text):
        m.requires_grad_(False)
        m.eval()
    return Parts(tokenizer=tokenizer, text_encoder=text, unet=unet, vae=vae, scheduler=scheduler,
                 source=f"meta:{arch}", device=torch.device("meta"))


def _parts(c: dict):
    return meta_parts(c["arch"], c["precision"], c["text_encoder_precision"], c.get("weights"))


@functools.lru_cache(maxsize=4)
def meta_classifier(name: str, seed: int = 0):
    """(classifier on the meta device, target, class name, templates), as bench.cells.step loads them.
    The reference ViT-L/16 is built from its config without the random-weights folder; any other
    classifier is loaded as the cell would and moved to the meta device (its weights are not needed)."""
    from bench.cells.step import IMAGENET_TARGET, load_step_classifier

    if name == "vit-l16-random":
        from transformers import ViTImageProcessor

        from dct.archs import VIT_L16, VIT_L16_PROCESSOR, build_vit_l16
        from dct.classifiers.base import Classifier, HFNet
        from dct.classifiers.preprocess import from_hf_processor
        from dct.config import PAPER_TEMPLATES

        model = build_vit_l16()
        labels = [f"class {i}" for i in range(VIT_L16["num_labels"])]
        clf = Classifier(HFNet(model, len(labels)), from_hf_processor(ViTImageProcessor(**VIT_L16_PROCESSOR), "ViT-L/16"),
                         labels, spec="vit-l16 (meta)", family="hf", source="dct.archs.VIT_L16")
        return clf.to("meta"), IMAGENET_TARGET, labels[IMAGENET_TARGET], PAPER_TEMPLATES
    clf, target, class_name, templates = load_step_classifier(name, "cpu", seed)
    return clf.to("meta"), target, class_name, tuple(templates)


def param_bytes(module: torch.nn.Module, cuda: bool = True) -> int:
    """Bytes the weights take: each parameter and buffer one allocation (rounded on CUDA)."""
    size = rounded if cuda else (lambda n: n)
    return sum(size(t.numel() * t.element_size()) for t in [*module.parameters(), *module.buffers()])


# --- protocol adapters --------------------------------------------------------------------------------


class _CPUTimesteps:
    """The scheduler, with its timesteps kept on the CPU: rollout() asks for them on the latents' device,
    and a meta timestep has no value to index the noise schedule with. With `grad_latents`, each step's
    output requires grad, as if the latents already depended on the token: the real rollout then runs
    the first call with gradient on the whole guidance batch, as the anchor's and the authors' code did."""

    def __init__(self, scheduler, grad_latents: bool):
        self._scheduler = scheduler
        self._grad_latents = grad_latents

    def set_timesteps(self, num_steps, device=None):
        return self._scheduler.set_timesteps(num_steps, device="cpu")

    def step(self, *args, **kwargs):
        out = self._scheduler.step(*args, **kwargs)
        if self._grad_latents and not out[0].requires_grad:
            return (out[0].detach().requires_grad_(True), *out[1:])
        return out

    def __getattr__(self, name):
        return getattr(self._scheduler, name)


class _VAEWithoutCheckpointing:
    """The VAE as a rollout that never checkpoints it sees it: enable requests are ignored."""

    is_gradient_checkpointing = False

    def __init__(self, vae):
        self._vae = vae

    def enable_gradient_checkpointing(self):
        pass

    def __getattr__(self, name):
        return getattr(self._vae, name)


def _meta_tokens():
    from dct.token import ClassTokens

    class MetaTokens(ClassTokens):
        """The spliced token without its shortcut for prompts that lack it (`hits.any()` needs values,
        which meta tensors do not have); a traced prompt always holds the placeholder."""

        def _splice(self, module, args, output):
            return self._spliced(self._hits(args[0]), output)

    return MetaTokens


def _vae_checkpointed(protocol: str, mode: str) -> bool:
    if protocol == "dct":
        return mode != "none"
    if protocol == "anchor-h200":
        return mode in ("block", "both")
    return False


# --- traces -------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _code_hash() -> str:
    """The traced code and the tracer: a change to either makes every cached trace stale."""
    import dct.rollout
    import dct.token
    import dct.train

    from bench.plan import trace as plan_trace

    files = [Path(m.__file__) for m in (dct.rollout, dct.token, dct.train, plan_trace)] + [Path(__file__)]
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:12]


def _cache_path(key: dict) -> Path:
    from dct.archs import cache_dir

    import diffusers
    import transformers

    text = json.dumps({**key, "v": TRACE_VERSION, "code": _code_hash(), "torch": torch.__version__,
                       "diffusers": diffusers.__version__, "transformers": transformers.__version__},
                      sort_keys=True)
    return cache_dir() / "plan" / f"{hashlib.sha256(text.encode()).hexdigest()[:20]}.json"


_MEMO: dict[str, dict] = {}


def _cached(kind: str, key: dict, compute) -> dict:
    """compute() once per key: in memory, then in a JSON file (written atomically) for later processes."""
    full = {"kind": kind, **key}
    path = _cache_path(full)
    if str(path) in _MEMO:
        return _MEMO[str(path)]
    if path.is_file():
        try:
            _MEMO[str(path)] = json.loads(path.read_text())
            return _MEMO[str(path)]
        except (OSError, json.JSONDecodeError):
            pass
    value = compute()
    _MEMO[str(path)] = value
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{id(value)}")
        tmp.write_text(json.dumps(value))
        tmp.replace(path)
    except OSError:
        pass
    return value


DEVICES = ("cuda", "cpu")


def check_device(device: str) -> str:
    if device not in DEVICES:
        raise ConfigError(f"device {device!r} is not accepted: use one of {DEVICES}")
    return device


def _element_bits(precision: str) -> int:
    # fp16 and bf16 tensors have the same sizes and run at the same roofline rate: one trace serves both
    return _dtype(precision).itemsize * 8


def _trace_key(c: dict, protocol: str, device: str) -> dict:
    return {k: c[k] for k in ("arch", "weights", "resolution", "batch", "checkpointing", "guidance",
                              "train_padding", "classifier", "seed")} | {
        "unet_bits": _element_bits(c["precision"]), "text_bits": _element_bits(c["text_encoder_precision"]),
        "protocol": protocol, "device": device}


def _latent_hw(parts, resolution) -> tuple[int, int, int]:
    c, s, _ = parts.latent_shape
    if resolution is None:
        return c, s, s
    factor = 2 ** (len(parts.vae.config.block_out_channels) - 1)
    return c, resolution // factor, resolution // factor


def trace_step(c: dict, protocol: str = "dct", device: str = "cuda") -> dict:
    """Live/peak bytes, marks, FLOPs and roofline seconds of one real DCT step at depth 1 (2 UNet calls)."""
    return _cached("step", _trace_key(c, protocol, device), lambda: _trace_step(c, protocol, device))


def _trace_step(c: dict, protocol: str, device: str) -> dict:
    from dct.pipeline import make_scheduler
    from dct.train import dct_loss

    from bench.cells.step import train_config

    parts = _parts(c)
    classifier, target, class_name, templates = meta_classifier(c["classifier"], c["seed"])
    # any schedule of 2 calls traces the same: memory does not depend on the no-grad calls' count
    cfg = train_config({**c, "scheduler": "ddim", "steps": 2, "depth": 1, "images_per_update": c["batch"]})
    vae = parts.vae if _vae_checkpointed(protocol, c["checkpointing"]) else _VAEWithoutCheckpointing(parts.vae)
    if not _vae_checkpointed(protocol, c["checkpointing"]):
        from dct.rollout import set_block_checkpointing

        set_block_checkpointing(parts.vae, False)
    traced = dataclasses.replace(parts, vae=vae)
    scheduler = _CPUTimesteps(make_scheduler("ddim", parts.scheduler), grad_latents=protocol != "dct")
    tokens = _meta_tokens()(parts.tokenizer, parts.text_encoder, [cfg.placeholder], cfg.init_word)
    prompts = [templates[0].format(f"{cfg.placeholder} {class_name}")] * c["batch"]
    latents = torch.randn((c["batch"], *_latent_hw(parts, c["resolution"])), device="meta")
    labels = torch.full((c["batch"],), target, device="meta")
    modules = [parts.unet, parts.vae, parts.text_encoder, classifier]
    tracer = Tracer(exclude=[*modules, tokens, latents, labels], cuda=device == "cuda")
    hooks = []

    def mark_once(name):
        def hook(*_):
            if name not in tracer.result.marks:
                tracer.mark(name)
        return hook

    first = parts.vae.post_quant_conv or parts.vae.decoder  # the decode's first module
    hooks.append(first.register_forward_pre_hook(mark_once("decode_start")))
    hooks.append(parts.vae.decoder.register_forward_hook(mark_once("decode_end")))
    try:
        with fused_attention(), tracer:
            loss, _, _ = dct_loss(traced, tokens, classifier, scheduler, cfg, prompts, latents, labels)
            tracer.mark("forward")
            loss.backward()
            del loss
    finally:
        for h in hooks:
            h.remove()
        tokens.remove()
    return tracer.result.to_dict()


def trace_call(c: dict, with_grad: bool = True, device: str = "cuda") -> dict:
    """One guided UNet call of the config's rollout, wrapped as rollout() wraps it for the checkpointing
    mode. With gradient: `retained` = bytes it keeps until backward (live after its forward, output
    excluded), FLOPs and seconds of forward + backward + recomputation. Without: its forward only."""
    key = {k: c[k] for k in ("arch", "weights", "resolution", "batch", "guidance", "train_padding")}
    key["unet_bits"] = _element_bits(c["precision"])
    key["mode"] = c["checkpointing"] if with_grad else "no-grad"
    key["device"] = device
    return _cached("call", key, lambda: _trace_call(c, with_grad, device))


def _trace_call(c: dict, with_grad: bool, device: str) -> dict:
    from torch.utils.checkpoint import checkpoint

    from dct.rollout import set_block_checkpointing

    parts = _parts(c)
    unet, dtype = parts.unet, _dtype(c["precision"])
    mode = c["checkpointing"]
    set_block_checkpointing(unet, with_grad and mode in ("block", "both"))
    rows = c["batch"] * (2 if c["guidance"] != 1.0 else 1)
    length = _prompt_length(parts, c)
    x = torch.randn((rows, *_latent_hw(parts, c["resolution"])), device="meta", dtype=dtype, requires_grad=with_grad)
    emb = torch.randn((rows, length, unet.config.cross_attention_dim), device="meta", dtype=dtype,
                      requires_grad=with_grad)
    t = torch.tensor(500)

    def call(x_in, t_in, e):
        return unet(x_in, t_in, encoder_hidden_states=e, return_dict=False)[0]

    tracer = Tracer(exclude=[unet, x, emb, t], cuda=device == "cuda")
    with fused_attention(), tracer, torch.set_grad_enabled(with_grad):
        eps = checkpoint(call, x, t, emb, use_reentrant=False) if with_grad and mode in ("step", "both") \
            else call(x, t, emb)
        tracer.mark("forward")
        out_bytes = eps.untyped_storage().nbytes()
        out_bytes = rounded(out_bytes) if device == "cuda" else out_bytes
        if with_grad:
            eps.float().sum().backward()
        del eps
    set_block_checkpointing(unet, False)
    result = tracer.result.to_dict()
    result["retained"] = max(result["marks"]["forward"] - out_bytes, 0)
    return result


def _prompt_length(parts, c: dict) -> int:
    """Token count of the step's prompts ('longest' padding: the prompt's own length)."""
    if c["train_padding"] == "max_length":
        return parts.tokenizer.model_max_length
    classifier, _, class_name, templates = meta_classifier(c["classifier"], c["seed"])
    return len(parts.tokenizer(templates[0].format(f"newclas {class_name}"))["input_ids"]) + 1  # + the placeholder


# --- the plan -----------------------------------------------------------------------------------------


@dataclass
class Plan:
    config: dict
    protocol: str
    gpu: str
    unet_calls: int
    grad_calls: int
    weights_bytes: int
    workspace_bytes: int
    activations_bytes: int  # saved for backward by the text encoder and the UNet calls with gradient
    vae_decode_bytes: int  # saved by the decode (checkpointed per block: its block inputs)
    classifier_bytes: int  # saved by the classifier and the loss
    transient_bytes: int  # the backward's peak above everything saved
    calibration_bytes: int
    reference_code_bytes: int
    peak_bytes: int
    capacity_bytes: int
    flops: float
    kernels: int  # kernel launches of the step
    roofline_seconds: float
    seconds: float  # roofline + kernels x LAUNCH_SECONDS
    trace_seconds: float = 0.0

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= self.capacity_bytes

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["fits"] = self.fits
        d["peak_gib"] = self.peak_bytes / GIB
        return d


def parts_resolution(c: dict) -> int:
    return _parts(c).resolution


def reference_code_extra(c: dict) -> int:
    """What the authors' run.py holds that this repository's step does not (their code is not traced here:
    it is not part of this repository): the classifier is never frozen, so backward allocates a fp32
    gradient for every classifier weight; Accelerate's fp16 autocast casts each text-encoder Linear
    weight to fp16 and saves the cast for backward, in both text-encoder passes with gradient (the
    prompt and the empty prompt)."""
    parts = _parts(c)
    classifier = meta_classifier(c["classifier"], c["seed"])[0]
    classifier_grads = sum(rounded(p.numel() * 4) for p in classifier.parameters())
    linear_casts = sum(rounded(m.weight.numel() * 2) for m in parts.text_encoder.modules()
                       if isinstance(m, torch.nn.Linear))
    return classifier_grads + 2 * linear_casts


def weights_bytes(c: dict, protocol: str, cuda: bool = True) -> int:
    parts = _parts(c)
    classifier = meta_classifier(c["classifier"], c["seed"])[0]
    total = sum(param_bytes(m, cuda) for m in (parts.unet, parts.vae, parts.text_encoder, classifier))
    if protocol == "reference-code":
        # the trained parameter is the whole embedding table (fp32): its gradient and AdamW's exp_avg and
        # exp_avg_sq persist from the first step on (the table itself is counted with the text encoder)
        table = parts.text_encoder.get_input_embeddings().weight
        total += 3 * rounded(table.numel() * 4)
    else:
        # the spliced token: vector, gradient, two Adam moments, the scaler's copy (a few KiB)
        total += 5 * rounded(parts.text_encoder.config.hidden_size * 4)
    return total


def plan(config: dict, *, gpu: str = "h200", protocol: str = "dct", capacity: int | None = None,
         calibrated: bool = True, device: str = "cuda") -> Plan:
    """The predicted peak memory, FLOPs and time of one optimisation step of `config` on `gpu`.

    device "cpu" predicts what the same step holds on the CPU (no allocator rounding, no cuBLAS
    workspaces, no calibration; attention fused too: the CPU's SDPA runs a flash kernel when it can): the tests compare it with exact CPU measurements, and CPU
    grids take its FLOPs. Its time is still the GPU's roofline."""
    from dct.rollout import resolve_depth

    from bench.cells.step import unet_calls

    check_gpu(gpu)
    check_protocol(protocol)
    check_device(device)
    cuda = device == "cuda"
    c = validate(dict(config))
    started = time.perf_counter()
    n = unet_calls(c["scheduler"], c["steps"])
    d = resolve_depth(c["depth"], n)
    step = trace_step(c, protocol, device)
    call = trace_call(c, device=device)
    fwd = trace_call(c, with_grad=False, device=device)
    extra = max(d - 1, 0)
    marks = step["marks"]
    activations = marks["decode_start"] + extra * call["retained"]
    vae_bytes = marks["decode_end"] - marks["decode_start"]
    clf_bytes = marks["forward"] - marks["decode_end"]
    transient = step["peak"] - marks["forward"]
    accum = c["images_per_update"] // c["batch"]
    pixels = (c["resolution"] or parts_resolution(c)) ** 2
    calibration = int(UNTRACED_BYTES_PER_IMAGE * c["batch"] * pixels / 512**2) if calibrated and cuda else 0
    weights = weights_bytes(c, protocol, cuda)
    workspace = 2 * int(GPUS[gpu].cublas_workspace_mib * 2**20) if cuda else 0  # cuBLAS + cuBLASLt handles
    reference_extra = reference_code_extra(c) if protocol == "reference-code" else 0
    peak = weights + workspace + step["peak"] + extra * call["retained"] + calibration + reference_extra

    def per_step(pick):  # a traced quantity for the whole step: this depth, this many calls and rollouts
        return accum * (pick(step) + (n - 2) * pick(fwd) + extra * (pick(call) - pick(fwd)))

    flops = per_step(lambda t: t["flops"])
    kernels = per_step(lambda t: t["kernels"])
    roof = per_step(lambda t: t["seconds"][gpu])
    return Plan(config=c, protocol=protocol, gpu=gpu, unet_calls=n, grad_calls=d, weights_bytes=weights,
                workspace_bytes=workspace, activations_bytes=activations, vae_decode_bytes=vae_bytes,
                classifier_bytes=clf_bytes, transient_bytes=transient, calibration_bytes=calibration,
                reference_code_bytes=reference_extra,
                peak_bytes=peak, capacity_bytes=capacity if capacity is not None else int(GPUS[gpu].memory_gib * GIB),
                flops=flops, kernels=kernels, roofline_seconds=roof, seconds=roof + kernels * LAUNCH_SECONDS,
                trace_seconds=time.perf_counter() - started)
