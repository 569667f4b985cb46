"""The `step` cell: the cost of ONE DCT optimisation step, measured exactly as training takes it.

A step is what `dct.train.train_token` does per epoch: zero the token's gradient, draw the epoch's
latents, render `images_per_update` images in rollouts of `batch` images through `dct.train.dct_loss`
(encode prompt with the token -> rollout with gradient through the last `depth` UNet calls -> VAE decode
-> classifier -> cross-entropy), backward each (loss-scaled for fp16, divided by the accumulation count),
unscale and check the gradient with torch's GradScaler, and step the optimiser on the token only.
It is `dct.train.TokenOptimiser.step`, the very step training takes; tests/bench/cells/test_cells_step.py checks
that both give the same gradient. There is no second rollout: everything goes through `dct_loss`.

Settings (defaults in DEFAULTS; `preset = "reference"` starts from the authors' code's settings):
    arch             tiny | sd15 | sd21base (dct.archs: full size with random weights)
    weights          tiny: "world" (the committed tiny world) or "random" (a tiny random pipeline);
                     full size: "random" only
    resolution       image side in pixels (None: native, 512 for full size)
    scheduler, steps, guidance, depth, checkpointing, precision ("fp16" loss-scaled, "fp16-noscale", "bf16",
                     "fp32"), text_encoder_precision (fp32 as the reference), train_padding
    batch            images per rollout
    images_per_update  images per optimisation step (a multiple of batch; default = batch). The reference
                     code renders 5 images one at a time and accumulates: batch 1, images_per_update 5
    classifier       "vit-l16-random" (ViT-L/16 architecture of the reference ImageNet classifier, random
                     weights: default for full size), "world" (the tiny world's guide), "tiny-random" (a
                     small random timm classifier), or any registry spec ("hf:<folder>", "timm:...")
    n_steps, warmup  measured steps, and steps before them left out of the medians
    seed

Metrics: sec_per_step (median of measured steps) and sec_per_image, fwd_s / bwd_s (the forward passes and
the backward passes inside a step), peak memory of a step (CUDA: max_memory_allocated / reserved reset at
the step's start, as the anchor's peak_gib; CPU: high-water RSS), weights_bytes (allocated before the
first step; CPU: resident set), the token gradient norm of the first step (before any update, so it is
comparable across checkpointing modes) and its status (ok | zero | nonfinite: fp16 underflow shows as
zero), unet_calls / grad_calls per rollout, parameters per component. One curve row per step.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from dataclasses import dataclass

import torch

from dct.errors import ConfigError

from bench.registry import CellOutput, register_cell

DEFAULTS = dict(
    preset=None, arch="tiny", weights=None, resolution=None, scheduler="ddim", steps=30, guidance=7.0, depth=1,
    checkpointing="none", precision="fp16", text_encoder_precision="fp32", train_padding="longest", batch=1,
    images_per_update=None, classifier=None, n_steps=3, warmup=1, seed=0,
)
# The reference implementation's run.py (official-dct.md, memory-anchor-h200.md): PNDM 30 steps = 31 UNet
# calls of which the last 2 carry gradient, guidance 7, fp16 UNet/VAE with a gradient scaler, gradient
# checkpointing (diffusers' per-block), 5 images per update rendered one at a time, unpadded prompts.
PRESETS = {
    "reference": dict(scheduler="pndm", steps=30, guidance=7.0, depth=2, checkpointing="block", precision="fp16",
                      text_encoder_precision="fp32", train_padding="longest", batch=1, images_per_update=5),
}
KEYS = set(DEFAULTS)
CLASSIFIER_NAMES = ("vit-l16-random", "world", "tiny-random")
# Image side must give latents the UNet can halve at every down block: VAE factor x 2^(down blocks - 1).
_ALIGN = {"tiny": 4 * 2, "sd15": 8 * 8, "sd21base": 8 * 8}
_NATIVE = {"tiny": None, "sd15": 512, "sd21base": 512}
IMAGENET_TARGET = 1  # "goldfish": any class serves, random weights have no preference


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate(config: dict) -> dict:
    """Fill the defaults (preset first, then explicit settings) and check every value without loading a model."""
    from dct.archs import ARCHS, FULL_SIZE
    from dct.config import PRECISIONS
    from dct.pipeline import SCHEDULERS
    from dct.rollout import CHECKPOINTING_MODES

    unknown = sorted(set(config) - KEYS)
    if unknown:
        raise ConfigError(f"unknown setting(s) {unknown} for a step cell; accepted: {sorted(KEYS)}")
    preset = config.get("preset")
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"preset={preset!r} is not accepted: use one of {sorted(PRESETS)} or leave it out")
    c = {**DEFAULTS, **(PRESETS[preset] if preset else {}), **config}

    def check(key: str, ok: bool, accepted: str) -> None:
        if not ok:
            raise ConfigError(f"{key}={c[key]!r} is not accepted: {accepted}")

    check("arch", c["arch"] in ARCHS, f"one of {ARCHS}")
    full = c["arch"] in FULL_SIZE
    if c["weights"] is None:
        c["weights"] = "random" if full else "world"
    check("weights", c["weights"] == "random" if full else c["weights"] in ("world", "random"),
          "'random' for the full-size archs (no weights can be downloaded), 'world' or 'random' for tiny")
    if c["resolution"] is None:
        c["resolution"] = _NATIVE[c["arch"]]
    check("resolution", c["resolution"] is None or (_is_int(c["resolution"]) and c["resolution"] > 0
                                                     and c["resolution"] % _ALIGN[c["arch"]] == 0),
          f"a positive multiple of {_ALIGN[c['arch']]} for arch {c['arch']!r} (or leave it out: native size)")
    check("scheduler", c["scheduler"] in SCHEDULERS, f"one of {SCHEDULERS}")
    check("steps", _is_int(c["steps"]) and c["steps"] >= 1, "an integer >= 1")
    check("guidance", isinstance(c["guidance"], (int, float)) and not isinstance(c["guidance"], bool), "a number")
    c["guidance"] = float(c["guidance"])
    check("checkpointing", c["checkpointing"] in CHECKPOINTING_MODES, f"one of {CHECKPOINTING_MODES}")
    check("precision", c["precision"] in PRECISIONS, f"one of {PRECISIONS}")
    check("text_encoder_precision", c["text_encoder_precision"] in ("fp32", "bf16", "fp16"), "fp32, bf16 or fp16")
    check("train_padding", c["train_padding"] in ("longest", "max_length"), "'longest' or 'max_length'")
    check("batch", _is_int(c["batch"]) and c["batch"] >= 1, "an integer >= 1")
    if c["images_per_update"] is None:
        c["images_per_update"] = c["batch"]
    check("images_per_update", _is_int(c["images_per_update"]) and c["images_per_update"] >= 1
          and c["images_per_update"] % c["batch"] == 0, f"a positive multiple of batch={c['batch']}")
    check("n_steps", _is_int(c["n_steps"]) and c["n_steps"] >= 1, "an integer >= 1")
    check("warmup", _is_int(c["warmup"]) and c["warmup"] >= 0, "an integer >= 0")
    check("seed", _is_int(c["seed"]), "an integer")
    if c["classifier"] is None:
        c["classifier"] = "vit-l16-random" if full else ("world" if c["weights"] == "world" else "tiny-random")
    check("classifier", isinstance(c["classifier"], str) and (c["classifier"] in CLASSIFIER_NAMES or ":" in c["classifier"]),
          f"one of {CLASSIFIER_NAMES} or a classifier spec '<family>:<target>'")
    if ":" in c["classifier"]:
        from dct.classifiers import CLASSIFIER_FAMILIES
        from dct.classifiers.spec import split_spec

        from dct.errors import ClassifierSpecError

        try:  # the family is checked now, the model when the cell runs
            split_spec(c["classifier"], list(CLASSIFIER_FAMILIES))
        except ClassifierSpecError as e:
            raise ConfigError(f"classifier={c['classifier']!r} is not accepted: {e}") from None
    n_calls = unet_calls(c["scheduler"], c["steps"])
    check("depth", c["depth"] in ("full", "all") or (_is_int(c["depth"]) and 1 <= c["depth"] <= n_calls),
          f"an integer 1..{n_calls} (scheduler {c['scheduler']} makes {n_calls} UNet calls for {c['steps']} steps) "
          "or 'full'")
    train_config(c)  # the TrainConfig it maps to must be valid too
    return c


@functools.lru_cache(maxsize=None)
def unet_calls(scheduler: str, steps: int) -> int:
    """UNet calls of one rollout (PNDM repeats a timestep: 31 for 30), from the SD scheduler config."""
    from dct.archs import build_scheduler
    from dct.pipeline import make_scheduler

    sched = make_scheduler(scheduler, build_scheduler("sd15"))
    sched.set_timesteps(steps)
    return len(sched.timesteps)


def train_config(c: dict):
    """The TrainConfig a cell trains with: the reference optimiser (AdamW 1.25e-3) and the cell's sampling."""
    from dct.config import load_preset

    return load_preset("paper", scheduler=c["scheduler"], steps=c["steps"], guidance=c["guidance"],
                       depth=c["depth"], checkpointing=c["checkpointing"], precision=c["precision"],
                       resolution=c["resolution"], train_padding=c["train_padding"], rollout_batch=c["batch"],
                       images_per_update=c["images_per_update"], seed=c["seed"])


# --- classifiers ------------------------------------------------------------------------------------


def tiny_random_classifier_dir(seed: int = 0):
    """A random 10-class timm `test_resnet` in timm's local-dir format, cached (for the tiny random pipeline)."""
    from dct.archs import _cached_folder

    def build(folder):
        import json

        import timm
        from safetensors.torch import save_file

        torch.manual_seed(seed)
        model = timm.create_model("test_resnet", num_classes=10, pretrained=False)
        save_file(model.state_dict(), str(folder / "model.safetensors"))
        names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
        cfg = {"architecture": "test_resnet", "num_classes": 10, "label_names": names,
               "pretrained_cfg": {"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.25] * 3,
                                  "interpolation": "bilinear", "crop_pct": 1.0, "num_classes": 10}}
        (folder / "config.json").write_text(json.dumps(cfg))

    return _cached_folder(f"tiny-random-classifier-s{seed}", build)


def load_step_classifier(name: str, device, seed: int = 0):
    """(classifier, target class index, class name for prompts, prompt templates)."""
    from dct.classifiers import load_classifier
    from dct.config import PAPER_TEMPLATES
    from dct.jobs import prompt_name

    if name == "vit-l16-random":
        from dct.archs import reference_classifier

        clf = reference_classifier(device, "fp32", seed)
        return clf, IMAGENET_TARGET, prompt_name(clf.labels, IMAGENET_TARGET), PAPER_TEMPLATES
    if name == "world":
        from dct.config import TrainConfig
        from dct.jobs import resolve_defaults

        res = resolve_defaults(TrainConfig())
        clf = load_classifier(res.classifier, device=device)
        names = res.class_names or clf.labels
        return clf, 0, prompt_name(names, 0), res.templates
    spec = f"timm:{tiny_random_classifier_dir(seed)}" if name == "tiny-random" else name
    clf = load_classifier(spec, device=device)
    return clf, 0, prompt_name(clf.labels, 0), PAPER_TEMPLATES


# --- measuring --------------------------------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class _Memory:
    """Memory of the cell's device. The step's peak is read at the end of a ctx.phase, whose start reset
    the high-water marks (CUDA peak stats, or the RSS high-water mark on CPU); this class never resets
    them itself, so the runner's overall peak stays exact."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def current(self) -> int:
        return torch.cuda.memory_allocated(self.device) if self.cuda else _rss_bytes()

    def peaks(self) -> tuple[int, int | None]:
        if self.cuda:
            return torch.cuda.max_memory_allocated(self.device), torch.cuda.max_memory_reserved(self.device)
        from bench.measure import peak_rss_bytes

        return peak_rss_bytes(), None


@dataclass
class Setup:
    """What a step needs besides its settings: the model parts and the classifier with its class."""

    parts: object
    classifier: torch.nn.Module
    target: int
    class_name: str
    templates: tuple[str, ...]


def prepare(config: dict, device) -> Setup:
    """Build (full size) or load (tiny) the parts and the classifier of a validated config."""
    from dct.archs import build_parts
    from dct.train import precision_dtype

    device = torch.device(device)
    parts = build_parts(config["arch"], device, dtype=precision_dtype(config["precision"]),
                        text_encoder_dtype=config["text_encoder_precision"], weights=config["weights"],
                        seed=config["seed"])
    classifier, target, class_name, templates = load_step_classifier(config["classifier"], device, config["seed"])
    return Setup(parts, classifier, target, class_name, tuple(templates))


def run(config: dict, ctx) -> CellOutput:
    with ctx.phase("build"):
        setup = prepare(config, ctx.device)
    return measure(setup, config, ctx)


def local_context(device: str = "cpu", warmup: int = 0, out_dir=None):
    """A CellContext for running `measure` outside the grid runner (tests, benchmarks, probes)."""
    import tempfile
    from pathlib import Path

    from bench.context import CellContext
    from bench.measure import DeviceMeter, StepTimer

    meter = DeviceMeter(device)
    return CellContext(out_dir=Path(out_dir or tempfile.mkdtemp(prefix="step-cell-")), device=device,
                       config_hash="local", label="local", timer=StepTimer(warmup, meter.sync()), meter=meter)


class TokenStep:
    """One DCT optimisation step, callable repeatedly: train_token's per-epoch body on a fresh token.

    Construction does what train_token does before its epochs (seed, cast the parts to the precision,
    splice the token, optimiser, loss scaler, scheduler, template RNG); `step(epoch)` runs one epoch's
    rollouts, backward passes, gradient check and optimiser step and returns its row. `close()` removes
    the token's hook from the text encoder (the tokenizer keeps the placeholder).
    """

    def __init__(self, setup: Setup, config: dict, device=None):
        from dct.token import ClassTokens
        from dct.train import TokenOptimiser, prepare_parts, template_rng

        self.cfg = cfg = train_config(config)
        self.setup = setup
        parts = setup.parts
        self.mem = _Memory(torch.device(device) if device is not None else parts.device)
        torch.manual_seed(cfg.seed)
        prepare_parts(parts, cfg)
        self.tokens = ClassTokens(parts.tokenizer, parts.text_encoder, [cfg.placeholder], cfg.init_word)
        self.engine = TokenOptimiser(parts, setup.classifier, cfg, self.tokens)
        self.rng = template_rng(cfg, setup.target)
        self.subject = f"{cfg.placeholder} {setup.class_name}"

    @property
    def scaler(self):
        return self.engine.scaler

    def step(self, epoch: int = 0) -> dict:
        from dct.train import epoch_latents, epoch_prompts

        cfg, mem = self.cfg, self.mem
        times = {"forward": 0.0, "backward": 0.0}
        last = [time.perf_counter()]

        def clock(phase: str) -> None:
            mem.sync()
            now = time.perf_counter()
            times[phase] += now - last[0]
            last[0] = now

        latents = epoch_latents(self.setup.parts, cfg, epoch)
        prompts = [epoch_prompts(self.rng, self.setup.templates, self.subject, cfg)]
        out = self.engine.step(latents, prompts, [0], [self.setup.target], clock=clock, epoch=epoch)
        grad_norm = float(out.grad[0].float().norm()) if out.status != "nonfinite" else math.nan
        return dict(epoch=epoch, loss=float(out.losses[0]) / cfg.images_per_update, grad_norm=grad_norm,
                    grad_status=out.status, loss_scale=out.scale, fwd_s=times["forward"], bwd_s=times["backward"],
                    unet_calls=out.n_calls, grad_calls=out.n_grad_calls)

    def close(self) -> None:
        self.tokens.remove()


def measure(setup: Setup, config: dict, ctx) -> CellOutput:
    """`warmup` + `n_steps` optimisation steps of a fresh token on `setup`'s parts (cast to the config's
    precision), each inside ctx.step() (the runner's step timer) and a ctx.phase (so its peak memory is
    the step's own)."""
    parts, classifier = setup.parts, setup.classifier
    runner = TokenStep(setup, config, ctx.device)
    mem, cfg = runner.mem, runner.cfg
    n_params = {name: sum(p.numel() for p in m.parameters())
                for name, m in (("unet", parts.unet), ("vae", parts.vae), ("text_encoder", parts.text_encoder),
                                ("classifier", classifier))}
    mem.sync()
    if mem.cuda:
        torch.cuda.empty_cache()
    weights_bytes = mem.current()
    rows: list[dict] = []
    total = config["warmup"] + config["n_steps"]
    try:
        for i in range(total):
            measured = i >= config["warmup"]
            with ctx.phase("step" if measured else "warmup"):
                with ctx.step():
                    row = runner.step(i)
                peak_alloc, peak_reserved = mem.peaks()
            rows.append(dict(measured=measured, step_s=ctx.timer.times[-1], peak_bytes=peak_alloc,
                             peak_reserved_bytes=peak_reserved, **row))
            ctx.progress(i + 1, total, loss=row["loss"], grad=row["grad_status"])
    finally:
        runner.close()

    timed = [r for r in rows if r["measured"]]
    med = lambda key: statistics.median(r[key] for r in timed)  # noqa: E731
    peak = max(r["peak_bytes"] for r in timed)
    reserved = max(r["peak_reserved_bytes"] for r in timed) if mem.cuda else None
    first = rows[0]
    gib = 2.0**30
    metrics = {
        "arch": config["arch"], "resolution": config["resolution"] or parts.resolution,
        "images_per_step": cfg.images_per_update, "rollouts_per_step": cfg.grad_accum,
        "unet_calls": first["unet_calls"], "grad_calls": first["grad_calls"],
        "sec_per_step": med("step_s"), "sec_per_image": med("step_s") / cfg.images_per_update,
        "fwd_s": med("fwd_s"), "bwd_s": med("bwd_s"),
        "peak_bytes": peak, "peak_gib": peak / gib,
        "peak_reserved_bytes": reserved, "reserved_gib": reserved / gib if reserved is not None else None,
        "weights_bytes": weights_bytes, "weights_gib": weights_bytes / gib,
        "memory_kind": "cuda_allocated" if mem.cuda else "cpu_rss",
        "grad_norm": first["grad_norm"], "grad_status": first["grad_status"], "loss": first["loss"],
        # fp16's loss scaler starts at 2^16 and may skip a first overflowing step: the first norm that counted
        "first_ok_grad_norm": next((r["grad_norm"] for r in rows if r["grad_status"] == "ok"), None),
        "grad_norm_median": statistics.median(finite) if (finite := [r["grad_norm"] for r in rows
                                                                      if math.isfinite(r["grad_norm"])]) else None,
        "zero_grad_steps": sum(r["grad_status"] == "zero" for r in rows),
        "nonfinite_grad_steps": sum(r["grad_status"] == "nonfinite" for r in rows),
        "loss_scale_final": float(runner.scaler.get_scale()) if runner.scaler.is_enabled() else 1.0,
        **{f"{k}_params": v for k, v in n_params.items()},
        "classifier_spec": getattr(classifier, "spec", config["classifier"]),
        "source": parts.source,
    }
    return CellOutput(metrics=metrics, curves=rows)


register_cell("step", keys=KEYS, validate=validate, run=run)
