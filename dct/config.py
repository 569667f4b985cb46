"""Training configuration: one dataclass, two presets, and a stable hash.

`paper` reproduces the reference code's protocol (official-dct.md). Every place where the project
deliberately differs from that code is a named field here, so a run's JSON says which behaviour it had:

- `token_mode`: "spliced" (default, both presets): the token is a separate vector spliced into the
  embedding output, so no other row can drift. The reference trains the whole table with AdamW, whose
  weight decay shrinks every row (the textual-inversion drift bug). There is no setting that copies
  the bug; we record that we do not.
- `clip_mode`: "reference" in `paper`: the reference calls `clip_grad_norm_(embeddings, 1)` BEFORE each
  micro-batch's backward, on the gradient accumulated so far, still multiplied by the fp16 loss scale
  (2^16). From the second micro-batch on, the earlier images' gradient is shrunk to norm 1 in scaled
  units (about 1.5e-5 unscaled), so each update is dominated by the epoch's LAST image. "none" in `fast`;
  "standard" clips the unscaled, accumulated gradient once before the step (the usual meaning).
  `clip_grad_norm` is the max norm (1.0, the reference's).
- `template_order`: "cycle" in `paper`: the reference gives image i of an epoch template i % 3 (2:2:1 of
  its three templates for 5 images), in a shuffled order. "random" in `fast`: each image draws a template.
- `class_name_rule`: "reference" in both: the first comma-separated synonym, lower-cased, "_" -> " "
  (CUB / iNat labels are written with underscores).
- `keep`: "post_update" in `paper`: the reference saves the embedding right AFTER the optimiser step of
  the best-loss epoch. "pre_update" in `fast`: the vector that produced the best loss.
- `classifier_preprocessing`: "reference" in `paper`: the reference's own transform (utils.py 37-49):
  ImageNet ViT: bicubic resize of the short side to 256 without antialias, centre crop 224, mean = std =
  0.5; the MAE heads (hf-vitmae:): bicubic 224, ImageNet mean/std; other classifiers get the ViT rule
  scaled to their input size (short side S + 2 round(S/14), then a crop to S). "model" in `fast`: the classifier's own
  processor or pretrained config (for the HF ViT a squashed 224 x 224 bilinear antialiased resize).
- `loss_scale_growth_interval`: torch's GradScaler (as Accelerate's, init 2^16, halve and skip on
  inf/NaN, double after this many good steps: 2000, torch's default, in both presets). `zero_grad_policy`
  "step" (torch's: a finite zero gradient is a normal step) or "rescale" (double the scale and skip the
  step, treating an exactly zero fp16 gradient as underflow).
- `bump_seed_on_spike`: not implemented (the reference bumps the seed on a loss spike, which breaks
  reproducibility); recorded as False.
- `train_padding`: "longest" in `paper` (the reference trains on unpadded prompts and evaluates on
  padded ones); "max_length" in `fast`, so training and evaluation see the same conditioning.
- `rollout_batch`: 1 in `paper` (5 rollouts of 1 image per update); `fast` renders all images of an
  update in ONE rollout ("batched rollouts").
- `stop_window`: 1 in `paper` (the reference stops on one epoch's accuracy); 3 in `fast`: with 8 images an
  epoch, the first all-correct batch is often luck, and a token stopped there judged 84% on unseen seeds
  in the tiny world (all 10 classes), so `fast` stops on the mean of the last 3 epochs.
- `depth`: the count of final UNet calls with gradient. The reference's "last step only" with PNDM is
  2 calls (PNDM repeats a timestep), which `paper` states explicitly.

Differences that no field can switch, because they change numerics or memory, not the method (the README
lists them): starting latents come from a CPU generator (the reference draws them on the GPU); latents
are carried in fp32 between denoising steps (the reference keeps them in fp16); the text encoder runs in
fp32 (Accelerate wraps the reference's in fp16 autocast); checkpointing never touches the text encoder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

PAPER_TEMPLATES = ("A photo of {}", "a high resolution realistic image of {}", "A close-up photo of a {}")
PAPER_EVAL_TEMPLATE = "A photo of {}"
PRECISIONS = ("fp32", "bf16", "fp16", "fp16-noscale")
OPTIMIZERS = ("adamw", "adam", "sgd")
CLIP_MODES = ("none", "reference", "standard")
ZERO_GRAD_POLICIES = ("step", "rescale")
TEMPLATE_ORDERS = ("random", "cycle")
CLASS_NAME_RULES = ("reference", "first_synonym")
KEEP_RULES = ("pre_update", "post_update")


@dataclass
class TrainConfig:
    # what to train
    model: str | None = None  # hub id or diffusers folder; None = the embedded tiny world
    classifier: str | None = None  # classifier spec; None = the tiny world's guide
    placeholder: str = "newclas"
    init_word: str = "a"
    templates: tuple[str, ...] | None = None  # None = the model's own (tiny world manifest, or the paper's)
    eval_template: str | None = None  # None = the model's own
    # sampling during training
    scheduler: str = "pndm"
    steps: int = 30
    guidance: float = 7.0
    depth: int | str = 2  # final UNet calls with gradient; "full" = all
    checkpointing: str = "block"
    precision: str = "fp16"  # UNet+VAE dtype; "fp16" uses dynamic loss scaling, "fp16-noscale" does not
    resolution: int | None = None  # None = the model's native size
    train_padding: str = "longest"
    # optimisation
    optimizer: str = "adamw"
    lr: float = 1.25e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    eps: float = 1e-8
    clip_mode: str = "none"  # none | reference | standard (see module docstring)
    clip_grad_norm: float = 1.0
    loss_scale_growth_interval: int = 2000  # torch.amp.GradScaler's default, as Accelerate uses it
    zero_grad_policy: str = "step"
    images_per_update: int = 5
    rollout_batch: int = 1  # images per rollout; images_per_update must be a multiple of it
    # stopping
    max_epochs: int = 50
    stop_accuracy: float = 0.7  # stop when the epoch's accuracy is strictly above this ...
    stop_window: int = 1  # ... averaged over the last `stop_window` epochs (1: the reference's single epoch)
    patience: int = 15  # epochs without a lower epoch loss
    # randomness
    seed: int = 35
    reseed_each_epoch: bool = True  # the reference re-seeds every epoch: the same latents recur
    template_order: str = "random"  # random | cycle (the reference: image i gets template i % n, shuffled)
    class_name_rule: str = "reference"  # reference (first synonym, lower-case, "_" -> " ") | first_synonym
    keep: str = "pre_update"  # pre_update | post_update (the reference: right after the best epoch's step)
    classifier_preprocessing: str = "model"  # model | reference | reference-inet | reference-mae
    # named deviations from the reference code (see module docstring)
    token_mode: str = "spliced"
    bump_seed_on_spike: bool = False
    preset: str = "custom"

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        from .pipeline import SCHEDULERS
        from .rollout import CHECKPOINTING_MODES

        def check(ok: bool, name: str, accepted: str) -> None:
            if not ok:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not accepted: {accepted}")

        check(self.scheduler in SCHEDULERS, "scheduler", f"use one of {SCHEDULERS}")
        check(self.checkpointing in CHECKPOINTING_MODES, "checkpointing", f"use one of {CHECKPOINTING_MODES}")
        check(self.precision in PRECISIONS, "precision", f"use one of {PRECISIONS}")
        check(self.optimizer in OPTIMIZERS, "optimizer", f"use one of {OPTIMIZERS}")
        check(self.train_padding in ("longest", "max_length"), "train_padding", "use 'longest' or 'max_length'")
        check(isinstance(self.steps, int) and self.steps >= 1, "steps", "an integer >= 1")
        check(self.depth in ("full", "all") or (isinstance(self.depth, int) and self.depth >= 1), "depth",
              "an integer >= 1 or 'full'")
        if isinstance(self.depth, int) and self.scheduler != "default":
            calls = self.steps + (1 if self.scheduler == "pndm" else 0)  # PNDM repeats one timestep
            check(self.depth <= calls, "depth", f"at most {calls}: {self.scheduler} with steps={self.steps} makes "
                                                f"{calls} UNet calls (or 'full')")
        check(isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr), "lr", "a positive number")
        check(self.clip_mode in CLIP_MODES, "clip_mode", f"use one of {CLIP_MODES}")
        check(isinstance(self.clip_grad_norm, (int, float)) and self.clip_grad_norm > 0
              and math.isfinite(self.clip_grad_norm), "clip_grad_norm", "a positive number")
        check(isinstance(self.loss_scale_growth_interval, int) and self.loss_scale_growth_interval >= 1,
              "loss_scale_growth_interval", "an integer >= 1")
        check(self.zero_grad_policy in ZERO_GRAD_POLICIES, "zero_grad_policy", f"use one of {ZERO_GRAD_POLICIES}")
        check(self.template_order in TEMPLATE_ORDERS, "template_order", f"use one of {TEMPLATE_ORDERS}")
        check(self.class_name_rule in CLASS_NAME_RULES, "class_name_rule", f"use one of {CLASS_NAME_RULES}")
        check(self.keep in KEEP_RULES, "keep", f"use one of {KEEP_RULES}")
        from .classifiers.preprocess import PREPROCESSING_MODES

        check(self.classifier_preprocessing in PREPROCESSING_MODES, "classifier_preprocessing",
              f"use one of {PREPROCESSING_MODES}")
        check(self.images_per_update >= 1, "images_per_update", "an integer >= 1")
        check(self.rollout_batch >= 1 and self.images_per_update % self.rollout_batch == 0, "rollout_batch",
              f"a divisor of images_per_update={self.images_per_update}")
        check(self.max_epochs >= 1, "max_epochs", "an integer >= 1")
        check(0.0 <= self.stop_accuracy <= 1.0, "stop_accuracy", "a number in [0, 1]")
        check(isinstance(self.stop_window, int) and self.stop_window >= 1, "stop_window", "an integer >= 1")
        check(self.token_mode == "spliced", "token_mode", "only 'spliced' (see dct/config.py)")
        check(self.bump_seed_on_spike is False, "bump_seed_on_spike", "only false (it breaks reproducibility)")
        check(self.templates is None or (len(self.templates) > 0 and all("{}" in t for t in self.templates)),
              "templates", "a non-empty list of strings each containing '{}'")

    def latent_seeds(self) -> list[int]:
        """The seeds whose generators drew this config's training latents (`dct.train.epoch_latents`).

        An evaluation image from one of these seeds starts from a latent the token was trained on."""
        return [self.seed] if self.reseed_each_epoch else [self.seed + e for e in range(self.max_epochs)]

    @property
    def grad_accum(self) -> int:
        return self.images_per_update // self.rollout_batch

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        return config_hash(self.to_dict())

    def replace(self, **changes) -> "TrainConfig":
        return from_dict({**self.to_dict(), **changes})


def config_hash(config: dict) -> str:
    """Stable 12-hex hash of a JSON-able config (key order and tuple/list differences ignored)."""
    blob = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def from_dict(values: dict) -> TrainConfig:
    unknown = sorted(set(values) - FIELDS)
    if unknown:
        raise ConfigError(f"unknown training option(s) {unknown}; accepted: {sorted(FIELDS)}")
    values = dict(values)
    if "clip_grad_norm" in values and values["clip_grad_norm"] is None and "clip_mode" not in values:
        values.pop("clip_grad_norm")  # a sidecar written before clip_mode existed: it did not clip
    for key in ("templates", "betas"):
        if isinstance(values.get(key), list):
            values[key] = tuple(values[key])
    return TrainConfig(**values)


PRESETS: dict[str, dict] = {
    # The reference protocol (official-dct.md, the authors' run.py): PNDM 30 steps (31 UNet calls), guidance
    # 7, last TWO UNet calls with gradient, fp16 UNet/VAE with torch's GradScaler, block checkpointing, AdamW
    # 1.25e-3, 5 images per update cycling the 3 templates 2:2:1, clipping before each backward, the
    # post-update vector of the best epoch, the reference classifier transform, stop above 0.7, patience 15,
    # <= 50 epochs, seed 35 re-seeded every epoch.
    "paper": dict(scheduler="pndm", steps=30, guidance=7.0, depth=2, checkpointing="block", precision="fp16",
                  train_padding="longest", optimizer="adamw", lr=1.25e-3, betas=(0.9, 0.999),
                  weight_decay=0.01, eps=1e-8, clip_mode="reference", clip_grad_norm=1.0,
                  loss_scale_growth_interval=2000, zero_grad_policy="step", images_per_update=5, rollout_batch=1,
                  max_epochs=50, stop_accuracy=0.7, stop_window=1, patience=15, seed=35, reseed_each_epoch=True,
                  template_order="cycle", class_name_rule="reference", keep="post_update",
                  classifier_preprocessing="reference"),
    # Our defaults: DDIM (deterministic, no repeated timestep), deeper backprop (class identity is decided
    # in early noisy steps), one batched rollout per update, fresh latents each epoch, Adam at a larger lr.
    "fast": dict(scheduler="ddim", steps=20, guidance=5.0, depth=4, checkpointing="none", precision="fp32",
                 train_padding="max_length", optimizer="adam", lr=5e-2, betas=(0.9, 0.999), weight_decay=0.0,
                 eps=1e-8, clip_mode="none", clip_grad_norm=1.0, loss_scale_growth_interval=2000,
                 zero_grad_policy="step", images_per_update=8, rollout_batch=8, max_epochs=40,
                 stop_accuracy=0.9, stop_window=3, patience=15, seed=0, reseed_each_epoch=False,
                 template_order="random", class_name_rule="reference", keep="pre_update",
                 classifier_preprocessing="model"),
}


def load_preset(name_or_file: str, **overrides) -> TrainConfig:
    """A named preset ("paper", "fast") or a TOML/JSON preset file, then `overrides` (None values skipped)."""
    if name_or_file in PRESETS:
        values = {**PRESETS[name_or_file], "preset": name_or_file}
    else:
        path = Path(name_or_file)
        if not path.is_file():
            raise ConfigError(f"preset {name_or_file!r} is neither a named preset {sorted(PRESETS)} nor a file")
        text = path.read_text()
        try:
            values = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except (ValueError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"preset file {str(path)!r} is not valid {path.suffix.lstrip('.').upper() or 'TOML'}: "
                              f"{e}") from None
        values = values.get("train", values)
        base = values.pop("base", None)  # `base = "paper"`: start from a named preset, override some fields
        if base is not None:
            if base not in PRESETS:
                raise ConfigError(f"base={base!r} in {str(path)!r} is not accepted: use one of {sorted(PRESETS)}")
            values = {**PRESETS[base], **values}
        values.setdefault("preset", path.stem)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(values)
