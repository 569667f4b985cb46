"""Training one discriminative class token (Schwartz et al., ICCV 2023, arXiv 2303.17155, Sec. 3).

    loss = CE( classifier( decode( rollout(latents, text_encoder(prompt with <token>)) ) ), class )

Only the token vector is a parameter. Each epoch renders `images_per_update` images from the training
templates (in rollouts of `rollout_batch` images, gradients accumulated), then takes one optimiser step.
The epoch's summed loss picks the best token (the reference keeps the lowest), and the epoch's accuracy
under the guiding classifier drives early stopping (strictly above `stop_accuracy`), with `patience`
epochs without a lower loss as the other stopping rule.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from contextlib import nullcontext
from typing import Callable, ContextManager

import torch
import torch.nn.functional as F

from .config import TrainConfig
from .errors import TrainingError
from .pipeline import Parts, make_scheduler, parse_dtype
from .rollout import rollout
from .token import ClassTokens, encode_prompts

PRECISION_DTYPES = {"fp32": "fp32", "bf16": "bf16", "fp16": "fp16", "fp16-noscale": "fp16"}


def precision_dtype(precision: str) -> torch.dtype:
    return parse_dtype(PRECISION_DTYPES[precision])


class LossScaler:
    """Dynamic loss scaling for fp16 (as torch.amp.GradScaler, for one small fp32 parameter).

    A non-finite gradient halves the scale and skips the step; a gradient that is exactly zero doubles
    it and skips, since in fp16 a zero token gradient almost always means underflow. Both are reported
    in the epoch's row, never trained through silently.
    """

    def __init__(self, enabled: bool, init_scale: float = 2.0**16, growth_interval: int = 20):
        self.enabled = enabled
        self.scale = init_scale if enabled else 1.0
        self.growth_interval = growth_interval
        self._good_steps = 0

    def unscale_and_check(self, grad: torch.Tensor) -> str:
        grad.div_(self.scale)
        if not torch.isfinite(grad).all():
            status = "nonfinite"
        elif grad.abs().max() == 0:
            status = "zero"
        else:
            status = "ok"
        if self.enabled:
            if status == "nonfinite":
                self.scale /= 2
            elif status == "zero":
                self.scale *= 2
            else:
                self._good_steps += 1
                if self._good_steps % self.growth_interval == 0:
                    self.scale *= 2
        return status


@dataclass
class TrainResult:
    vector: torch.Tensor  # the kept (lowest epoch loss) token vector, float32, cpu
    placeholder: str
    target: int
    class_name: str
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    stop_reason: str = ""
    images_to_threshold: int | None = None  # images consumed when the accuracy threshold fired
    n_images: int = 0
    n_calls: int = 0
    n_grad_calls: int = 0
    seconds: float = 0.0

    def summary(self) -> dict:
        return {k: getattr(self, k) for k in ("placeholder", "target", "class_name", "best_epoch", "stop_reason",
                                              "images_to_threshold", "n_images", "n_calls", "n_grad_calls",
                                              "seconds")}


def _make_optimizer(cfg: TrainConfig, params):
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, eps=cfg.eps)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, eps=cfg.eps)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.betas[0], weight_decay=cfg.weight_decay)


def prepare_parts(parts: Parts, cfg: TrainConfig) -> None:
    """Cast UNet and VAE to the run's precision (the text encoder, holding the token, stays as loaded)."""
    dtype = precision_dtype(cfg.precision)
    if parts.unet.dtype != dtype:
        parts.unet.to(dtype=dtype)
    if parts.vae.dtype != dtype:
        parts.vae.to(dtype=dtype)


def latent_shape(parts: Parts, resolution: int | None) -> tuple[int, int, int]:
    c, s, _ = parts.latent_shape
    if resolution is None:
        return (c, s, s)
    factor = parts.resolution // s
    if resolution % factor:
        raise TrainingError(f"resolution {resolution} is not a multiple of the VAE factor {factor}")
    return (c, resolution // factor, resolution // factor)


def epoch_latents(parts: Parts, cfg: TrainConfig, epoch: int) -> torch.Tensor:
    """The epoch's starting latents, drawn on the CPU so they are the same on every device."""
    seed = cfg.seed if cfg.reseed_each_epoch else cfg.seed + epoch
    gen = torch.Generator().manual_seed(seed)
    shape = (cfg.images_per_update, *latent_shape(parts, cfg.resolution))
    return torch.randn(shape, generator=gen).to(parts.device)


def dct_loss(parts: Parts, tokens: ClassTokens, classifier, scheduler, cfg: TrainConfig, prompts: list[str],
             latents: torch.Tensor, labels: torch.Tensor, uncond_cache: dict | None = None):
    """One DCT forward pass: encode prompts with the token, roll out, decode, classify, cross-entropy.

    Returns (loss, logits, RolloutResult); the caller calls backward. Training and every benchmark of
    "one DCT step" go through here, so what is measured is what is trained.
    """
    cond = tokens.encode(prompts, padding=cfg.train_padding)
    uncond = None
    if cfg.guidance != 1.0:
        # CLIP's attention is causal, so the first L positions of the padded empty prompt equal an
        # unpadded encoding of length L: one cached encoding serves every prompt length.
        cache = uncond_cache if uncond_cache is not None else {}
        length = cond.shape[1]
        if length not in cache:
            with torch.no_grad():
                cache[length] = encode_prompts(parts.tokenizer, parts.text_encoder, [""],
                                               padding="max_length")[:, :length]
        uncond = cache[length].expand(len(prompts), -1, -1)
    out = rollout(parts.unet, parts.vae, scheduler, cond, uncond, latents, num_steps=cfg.steps,
                  guidance=cfg.guidance, depth=cfg.depth, checkpointing=cfg.checkpointing)
    logits = classifier(out.images).float()
    return F.cross_entropy(logits, labels), logits, out


def train_token(
    parts: Parts,
    classifier: torch.nn.Module,
    target: int,
    class_name: str,
    cfg: TrainConfig,
    *,
    templates: tuple[str, ...],
    tokens: ClassTokens | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    timed_step: Callable[[], ContextManager] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train the token for class `target` (named `class_name` in prompts) against `classifier`.

    `timed_step()` wraps each optimisation step (an epoch: rollouts, backward, update), so a
    benchmark times exactly the training step and nothing around it.
    """
    torch.manual_seed(cfg.seed)
    prepare_parts(parts, cfg)
    if tokens is None:
        tokens = ClassTokens(parts.tokenizer, parts.text_encoder, [cfg.placeholder], cfg.init_word)
    optimizer = _make_optimizer(cfg, [tokens.vectors])
    scaler = LossScaler(cfg.precision == "fp16")
    scheduler = make_scheduler(cfg.scheduler, parts.scheduler)
    rng = random.Random(cfg.seed)  # template choice, independent of torch's stream
    subject = f"{cfg.placeholder} {class_name}"
    labels = torch.full((cfg.rollout_batch,), target, device=parts.device)
    uncond_cache: dict[int, torch.Tensor] = {}

    result = TrainResult(vector=tokens.vectors[0].detach().cpu().clone(), placeholder=cfg.placeholder,
                         target=target, class_name=class_name)
    best_loss, since_best, images_seen = math.inf, 0, 0
    bar = _progress(cfg.max_epochs, f"token for class {target} ({class_name})", progress)
    start = time.perf_counter()
    for epoch in range(cfg.max_epochs):
        t0 = time.perf_counter()
        with timed_step() if timed_step else nullcontext():
            optimizer.zero_grad(set_to_none=True)
            latents = epoch_latents(parts, cfg, epoch)
            epoch_loss, correct = 0.0, 0
            for micro in range(cfg.grad_accum):
                prompts = [rng.choice(templates).format(subject) for _ in range(cfg.rollout_batch)]
                batch = latents[micro * cfg.rollout_batch:(micro + 1) * cfg.rollout_batch]
                loss, logits, out = dct_loss(parts, tokens, classifier, scheduler, cfg, prompts, batch, labels,
                                             uncond_cache)
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"loss is {loss.item()} at epoch {epoch}, rollout {micro} (precision {cfg.precision}, "
                        f"lr {cfg.lr}): training stopped; try precision fp32/bf16 or a lower lr")
                (loss * scaler.scale / cfg.grad_accum).backward()
                epoch_loss += loss.item() * cfg.rollout_batch
                correct += int((logits.argmax(-1) == target).sum())
                result.n_calls, result.n_grad_calls = out.n_calls, out.n_grad_calls
            grad = tokens.vectors.grad
            status = scaler.unscale_and_check(grad)
            grad_norm = float(grad.float().norm()) if status != "nonfinite" else float("nan")
            if status != "ok" and not scaler.enabled:
                raise TrainingError(
                    f"the token gradient is {'exactly zero' if status == 'zero' else 'not finite'} at epoch "
                    f"{epoch} with precision {cfg.precision}" + (
                        " (fp16 underflow: use precision 'fp16' with loss scaling, 'bf16' or 'fp32')"
                        if status == "zero" else ""))
            improved = epoch_loss < best_loss
            if improved:  # the vector that produced this loss is the one before this epoch's update
                best_loss, since_best, result.best_epoch = epoch_loss, 0, epoch
                result.vector = tokens.vectors[0].detach().float().cpu().clone()
            else:
                since_best += 1
            if status == "ok":
                if cfg.clip_grad_norm:
                    torch.nn.utils.clip_grad_norm_([tokens.vectors], cfg.clip_grad_norm)
                optimizer.step()
        images_seen += cfg.images_per_update
        accuracy = correct / cfg.images_per_update
        row = dict(epoch=epoch, loss=epoch_loss / cfg.images_per_update, accuracy=accuracy, grad_norm=grad_norm,
                   grad_status=status, loss_scale=scaler.scale, images=images_seen,
                   step_seconds=time.perf_counter() - t0, best=improved)
        result.history.append(row)
        if on_epoch:
            on_epoch(row)
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{accuracy:.2f}")
        if status == "zero" and sum(r["grad_status"] == "zero" for r in result.history[-5:]) == 5:
            raise TrainingError(f"the token gradient stayed exactly zero for 5 epochs even with loss scale "
                                f"{scaler.scale:g}: nothing reaches the token (check depth and the classifier)")
        if accuracy > cfg.stop_accuracy:
            result.stop_reason, result.images_to_threshold = "threshold", images_seen
            break
        if since_best > cfg.patience:
            result.stop_reason = "patience"
            break
    else:
        result.stop_reason = "max_epochs"
    bar.close()
    result.n_images = images_seen
    result.seconds = time.perf_counter() - start
    return result


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)
