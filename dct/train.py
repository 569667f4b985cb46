"""Training discriminative class tokens (Schwartz et al., ICCV 2023, arXiv 2303.17155, Sec. 3).

    loss = CE( classifier( decode( rollout(latents, text_encoder(prompt with <token>)) ) ), class )

Only the token vectors are parameters. Each epoch renders `images_per_update` images per class from the
training templates (in rollouts of `rollout_batch` images per class, gradients accumulated), then takes
one optimiser step. Per class, the epoch's summed loss picks the best token (the reference keeps the
lowest), and the epoch's accuracy under the guiding classifier drives early stopping (its mean over the
last `stop_window` epochs strictly above `stop_accuracy`), with `patience` epochs without a lower loss as
the other stopping rule.

Several classes train in the same rollouts, each sample spliced with its own class's token. Starting
latents depend only on (seed, epoch) and template choices only on (seed, class), and Adam works element
by element, so a class trained among others gets the token it would get alone (up to float rounding);
a class that stops leaves the batch and its row is frozen.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from contextlib import nullcontext
from pathlib import Path
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


def make_grad_scaler(cfg: TrainConfig, device: torch.device) -> torch.amp.GradScaler:
    """torch's dynamic loss scaler, as Accelerate builds it for the reference code (init 2^16, halve and
    skip the step on inf/NaN, double after `loss_scale_growth_interval` good steps); off unless fp16."""
    return torch.amp.GradScaler(device.type, init_scale=2.0**16, growth_interval=cfg.loss_scale_growth_interval,
                                enabled=cfg.precision == "fp16")


def clip_rows_(grad: torch.Tensor | None, rows: list[int], max_norm: float) -> list[float]:
    """`torch.nn.utils.clip_grad_norm_(max_norm)` applied to each class's row on its own (so a class in a
    bank is clipped as it would be alone); returns each row's norm before clipping."""
    if grad is None:
        return [0.0] * len(rows)
    g = grad[rows]
    norms = torch.linalg.vector_norm(g, dim=-1)
    grad[rows] = g * torch.clamp(max_norm / (norms + 1e-6), max=1.0)[:, None]  # torch's formula
    return norms.tolist()


def gradient_status(grad: torch.Tensor, rows: list[int]) -> str:
    """"nonfinite", "zero" (some class's row is exactly zero: in fp16 usually underflow) or "ok"."""
    g = grad[rows]
    if not torch.isfinite(g).all():
        return "nonfinite"
    return "zero" if (g.abs().amax(-1) == 0).any() else "ok"


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
             latents: torch.Tensor, labels: torch.Tensor, uncond_cache: dict | None = None,
             reduction: str = "mean"):
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
    return F.cross_entropy(logits, labels, reduction=reduction), logits, out


def template_rng(cfg: TrainConfig, target: int) -> random.Random:
    """A class's own template RNG: its prompts do not depend on which other classes train beside it."""
    return random.Random(cfg.seed * 1_000_003 + target)


def epoch_prompts(rng: random.Random, templates: tuple[str, ...], subject: str, cfg: TrainConfig) -> list[str]:
    """One class's prompts for the `images_per_update` images of an epoch, in rendering order.

    "random": each image draws a template. "cycle" (the reference's PromptDataset with a shuffling
    DataLoader): image i gets template i % len(templates), then the order is shuffled.
    """
    if cfg.template_order == "cycle":
        chosen = [templates[i % len(templates)] for i in range(cfg.images_per_update)]
        rng.shuffle(chosen)
    else:
        chosen = [rng.choice(templates) for _ in range(cfg.images_per_update)]
    return [t.format(subject) for t in chosen]


@dataclass
class StepOutcome:
    """What one optimisation step did, per row of the token vectors (absolute row indices)."""

    losses: torch.Tensor  # (n_rows,) each row's summed image losses
    correct: torch.Tensor  # (n_rows,) each row's images classified right by the guide
    status: str  # ok | zero | nonfinite (of the unscaled gradient of the rows that trained)
    scale: float  # the loss scale the backward passes used (1.0 without scaling)
    stepped: bool  # whether the optimiser stepped
    grad: torch.Tensor  # (n_rows, D) the unscaled gradient the optimiser was given
    before: torch.Tensor  # (n_rows, D) the vectors that produced the losses
    after: torch.Tensor  # (n_rows, D) the vectors after the step
    clip_norms: dict[int, list[float]]  # row -> gradient norms seen by each clip (before clipping)
    n_calls: int
    n_grad_calls: int


class TokenOptimiser:
    """What lasts from step to step: the token vectors, the optimiser, the loss scaler, the scheduler.

    `step` is one epoch's optimisation step, shared by training and by the benchmark of "one DCT step"
    (bench/cells/step.py), so what is measured is what is trained.
    """

    def __init__(self, parts: Parts, classifier: torch.nn.Module, cfg: TrainConfig, tokens: ClassTokens):
        self.parts, self.classifier, self.cfg, self.tokens = parts, classifier, cfg, tokens
        self.optimizer = _make_optimizer(cfg, [tokens.vectors])
        self.scaler = make_grad_scaler(cfg, parts.device)
        self.scheduler = make_scheduler(cfg.scheduler, parts.scheduler)
        self.uncond_cache: dict[int, torch.Tensor] = {}

    def step(self, latents: torch.Tensor, prompts: list[list[str]], rows: list[int], targets: list[int],
             frozen: list[int] = (), clock: Callable[[str], None] | None = None, epoch: int = 0) -> StepOutcome:
        """Render the epoch's images for the classes `targets` (token rows `rows`, prompts[k] for class k,
        `images_per_update` each, on the same `latents`), backpropagate, and step the optimiser.

        Images go in rollouts of `rollout_batch` per class, their gradients accumulated (each image's
        loss / images_per_update, times the loss scale). `frozen` rows are put back after the step.
        `clock("forward")` / `clock("backward")` is called after each forward pass / backward pass.
        """
        cfg, parts, tokens = self.cfg, self.parts, self.tokens
        rb, ipu = cfg.rollout_batch, cfg.images_per_update
        self.optimizer.zero_grad(set_to_none=True)
        before = tokens.vectors.detach().clone()
        n = tokens.vectors.shape[0]
        losses, correct = torch.zeros(n), torch.zeros(n)
        clip_norms: dict[int, list[float]] = {r: [] for r in rows}

        def clip(grad: torch.Tensor | None) -> None:
            for r, norm in zip(rows, clip_rows_(grad, rows, cfg.clip_grad_norm)):
                clip_norms[r].append(norm)
        scale = float(self.scaler.get_scale()) if self.scaler.is_enabled() else 1.0
        sample_rows = torch.tensor(rows).repeat_interleave(rb)
        labels = torch.tensor(targets, device=parts.device).repeat_interleave(rb)
        for micro in range(cfg.grad_accum):
            batch = latents[micro * rb:(micro + 1) * rb].repeat(len(rows), 1, 1, 1)
            texts = [p[micro * rb + j] for p in prompts for j in range(rb)]
            loss, logits, out = dct_loss(parts, tokens, self.classifier, self.scheduler, cfg, texts, batch, labels,
                                         self.uncond_cache, reduction="none")
            if clock:
                clock("forward")
            if not torch.isfinite(loss).all():
                raise TrainingError(
                    f"loss is {loss.sum().item()} at epoch {epoch}, rollout {micro} (precision {cfg.precision}, lr {cfg.lr}): "
                    "training stopped; try precision fp32/bf16 or a lower lr")
            if cfg.clip_mode == "reference" and micro > 0:
                # The reference clips BEFORE each backward, the gradient accumulated so far, still loss-scaled.
                clip(tokens.vectors.grad)
            # the sum over images / images_per_update: each class's row gets the gradient of ITS mean loss
            self.scaler.scale(loss.sum() / ipu).backward()
            if clock:
                clock("backward")
            losses.index_add_(0, sample_rows, loss.detach().cpu())
            correct.index_add_(0, sample_rows, (logits.argmax(-1) == labels).float().cpu())
        if tokens.vectors.grad is None:
            tokens.vectors.grad = torch.zeros_like(tokens.vectors)
        self.scaler.unscale_(self.optimizer)
        grad = tokens.vectors.grad
        status = gradient_status(grad, rows)
        if cfg.clip_mode == "standard" and status != "nonfinite":
            clip(grad)
        seen = grad.detach().clone()
        scaled = self.scaler.is_enabled()
        stepped = status == "ok" or (status == "zero" and scaled and cfg.zero_grad_policy == "step")
        if stepped:
            self.scaler.step(self.optimizer)  # skips by itself on inf/NaN
            self.scaler.update()
        elif status == "zero" and scaled:  # zero_grad_policy "rescale": take an exactly zero fp16 gradient for underflow
            self.scaler.update(new_scale=scale * 2)
        else:
            self.scaler.update()  # halves the scale
        with torch.no_grad():
            tokens.vectors[list(frozen)] = before[list(frozen)]
        return StepOutcome(losses=losses, correct=correct, status=status, scale=scale, stepped=stepped, grad=seen,
                           before=before, after=tokens.vectors.detach().clone(), clip_norms=clip_norms,
                           n_calls=out.n_calls, n_grad_calls=out.n_grad_calls)


def train_token(parts: Parts, classifier: torch.nn.Module, target: int, class_name: str, cfg: TrainConfig, *,
                templates: tuple[str, ...], tokens: ClassTokens | None = None, **kwargs) -> TrainResult:
    """Train the token of one class `target`, named `class_name` in prompts (see `train_tokens`)."""
    return train_tokens(parts, classifier, [target], [class_name], cfg, templates=templates, tokens=tokens,
                        **kwargs)[0]


@dataclass
class _ClassState:
    result: TrainResult
    row: int  # this class's row of tokens.vectors
    rng: random.Random  # template choice, per class so a class's prompts do not depend on the others
    best_loss: float = math.inf
    since_best: int = 0
    active: bool = True


def train_tokens(
    parts: Parts,
    classifier: torch.nn.Module,
    targets: list[int],
    class_names: list[str],
    cfg: TrainConfig,
    *,
    templates: tuple[str, ...],
    tokens: ClassTokens | None = None,
    placeholders: list[str] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    on_class_done: Callable[[TrainResult], None] | None = None,
    timed_step: Callable[[], ContextManager] | None = None,
    progress: bool = True,
    on_checkpoint: Callable[["TrainState"], None] | None = None,
    resume: "TrainState | None" = None,
) -> list[TrainResult]:
    """Train one token per class in `targets` against `classifier`, all classes in the same rollouts.

    Placeholders default to `cfg.placeholder` for one class, `<placeholder><class>` for several.
    `timed_step()` wraps each optimisation step (rollouts, backward, update), so a benchmark times
    exactly the training step; `on_class_done(result)` fires as each class stops (resumable banks).
    `on_checkpoint(state)` receives the whole training state after every epoch; `resume=state` continues
    from it exactly as if training had not stopped (same tokens, optimiser, loss scale, template RNG).
    """
    if len(targets) != len(class_names) or not targets:
        raise TrainingError(f"need one class name per target; got {len(targets)} targets, {len(class_names)} names")
    if placeholders is None:
        placeholders = [cfg.placeholder] if len(targets) == 1 else [f"{cfg.placeholder}{t}" for t in targets]
    torch.manual_seed(cfg.seed)
    prepare_parts(parts, cfg)
    if tokens is None:
        tokens = ClassTokens(parts.tokenizer, parts.text_encoder, placeholders, cfg.init_word)
    engine = TokenOptimiser(parts, classifier, cfg, tokens)
    states = [_ClassState(TrainResult(vector=tokens.vectors[i].detach().float().cpu().clone(), placeholder=ph,
                                      target=t, class_name=name), row=i, rng=template_rng(cfg, t))
              for i, (t, ph, name) in enumerate(zip(targets, placeholders, class_names))]
    first_epoch = 0
    if resume is not None:
        first_epoch = resume.restore(engine, states)
    ipu = cfg.images_per_update
    desc = f"token for class {targets[0]} ({class_names[0]})" if len(targets) == 1 else f"{len(targets)} tokens"
    bar = _progress(cfg.max_epochs, desc, progress)
    bar.update(first_epoch)
    start = time.perf_counter()
    for epoch in range(first_epoch, cfg.max_epochs):
        active = [st for st in states if st.active]
        if not active:
            break
        rows = [st.row for st in active]
        t0 = time.perf_counter()
        with timed_step() if timed_step else nullcontext():
            latents = epoch_latents(parts, cfg, epoch)  # the same for every class, as the reference
            prompts = [epoch_prompts(st.rng, templates, f"{st.result.placeholder} {st.result.class_name}", cfg)
                       for st in active]
            out = engine.step(latents, prompts, rows, [st.result.target for st in active],
                              frozen=[st.row for st in states if not st.active], epoch=epoch)
            if out.status != "ok" and not engine.scaler.is_enabled():
                raise TrainingError(
                    f"the token gradient is {'exactly zero' if out.status == 'zero' else 'not finite'} at epoch "
                    f"{epoch} with precision {cfg.precision}" + (
                        " (fp16 underflow: use precision 'fp16' with loss scaling, 'bf16' or 'fp32')"
                        if out.status == "zero" else ""))
        seconds = time.perf_counter() - t0
        for st, class_prompts in zip(active, prompts):
            st.result.n_calls, st.result.n_grad_calls = out.n_calls, out.n_grad_calls
            _end_epoch(st, cfg, epoch, out, seconds, on_epoch, class_prompts)
            if not st.active:
                st.result.seconds = time.perf_counter() - start
                if on_class_done:
                    on_class_done(st.result)
        bar.update(1)
        bar.set_postfix(active=len([st for st in states if st.active]),
                        loss=f"{float(out.losses[rows].mean()) / ipu:.3f}")
        if on_checkpoint:
            on_checkpoint(TrainState.capture(epoch + 1, engine, states))
    bar.close()
    for st in states:
        if st.active:
            st.active, st.result.stop_reason = False, "max_epochs"
            st.result.seconds = time.perf_counter() - start
            if on_class_done:
                on_class_done(st.result)
    return [st.result for st in states]


@dataclass
class TrainState:
    """Everything `train_tokens` needs to continue after epoch `epoch - 1`: tensors (token vectors, each
    class's kept vector, the optimiser's moment tensors) and a JSON-able rest (loss scaler, per-class
    bookkeeping and template RNG). Saved as safetensors + JSON, so resuming unpickles nothing."""

    epoch: int
    tensors: dict[str, torch.Tensor]
    meta: dict

    @classmethod
    def capture(cls, epoch: int, engine: TokenOptimiser, states: list[_ClassState]) -> "TrainState":
        tensors = {"vectors": engine.tokens.vectors.detach().cpu().clone()}
        opt = engine.optimizer.state_dict()
        opt_meta = {}
        for idx, st in opt["state"].items():
            for name, value in st.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optimizer.{idx}.{name}"] = value.detach().cpu().clone()
                else:
                    opt_meta[f"{idx}.{name}"] = value
        classes = []
        for st in states:
            r = st.result
            tensors[f"kept.{st.row}"] = r.vector.clone()
            version, internal, gauss = st.rng.getstate()
            classes.append(dict(row=st.row, target=r.target, best_loss=st.best_loss, since_best=st.since_best,
                                active=st.active, best_epoch=r.best_epoch, stop_reason=r.stop_reason,
                                images_to_threshold=r.images_to_threshold, n_images=r.n_images, n_calls=r.n_calls,
                                n_grad_calls=r.n_grad_calls, history=r.history,
                                rng=[version, list(internal), gauss]))
        meta = {"epoch": epoch, "optimizer": opt_meta, "scaler": engine.scaler.state_dict(), "classes": classes}
        return cls(epoch=epoch, tensors=tensors, meta=meta)

    def restore(self, engine: TokenOptimiser, states: list[_ClassState]) -> int:
        """Put this state into a freshly built engine and class states; returns the next epoch."""
        if [c["target"] for c in self.meta["classes"]] != [st.result.target for st in states]:
            raise TrainingError(f"resume state is for classes {[c['target'] for c in self.meta['classes']]}, "
                                f"not {[st.result.target for st in states]}")
        with torch.no_grad():
            engine.tokens.vectors.copy_(self.tensors["vectors"].to(engine.tokens.vectors.device))
        opt = engine.optimizer.state_dict()
        state: dict = {}
        for key, value in self.tensors.items():
            if key.startswith("optimizer."):
                _, idx, name = key.split(".", 2)
                state.setdefault(int(idx), {})[name] = value
        for key, value in self.meta["optimizer"].items():
            idx, name = key.split(".", 1)
            state.setdefault(int(idx), {})[name] = value
        engine.optimizer.load_state_dict({"state": state, "param_groups": opt["param_groups"]})
        if self.meta["scaler"]:
            engine.scaler.load_state_dict(self.meta["scaler"])
        for st, c in zip(states, self.meta["classes"]):
            r = st.result
            st.best_loss, st.since_best, st.active = c["best_loss"], c["since_best"], c["active"]
            r.vector = self.tensors[f"kept.{c['row']}"].clone()
            r.best_epoch, r.stop_reason, r.images_to_threshold = c["best_epoch"], c["stop_reason"], c["images_to_threshold"]
            r.n_images, r.n_calls, r.n_grad_calls, r.history = c["n_images"], c["n_calls"], c["n_grad_calls"], c["history"]
            version, internal, gauss = c["rng"]
            st.rng.setstate((version, tuple(internal), gauss))
        return int(self.epoch)

    def save(self, folder: str | Path) -> Path:
        """Write `state.safetensors` + `state.json` into `folder`, each atomically (tmp file + rename)."""
        import json

        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "state.safetensors.tmp"
        save_file({k: v.contiguous() for k, v in self.tensors.items()}, str(tmp))
        tmp.replace(folder / "state.safetensors")
        tmp = folder / "state.json.tmp"
        tmp.write_text(json.dumps(self.meta, default=float))
        tmp.replace(folder / "state.json")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "TrainState":
        import json

        from safetensors.torch import load_file

        folder = Path(folder)
        meta = json.loads((folder / "state.json").read_text())
        return cls(epoch=int(meta["epoch"]), tensors=load_file(str(folder / "state.safetensors")), meta=meta)


def _end_epoch(st: _ClassState, cfg: TrainConfig, epoch: int, out: StepOutcome, seconds: float,
               on_epoch: Callable[[dict], None] | None, prompts: list[str]) -> None:
    """One class's bookkeeping after a step: history row, kept vector, stopping rules."""
    result, r = st.result, st.row
    loss_sum, accuracy = float(out.losses[r]), float(out.correct[r]) / cfg.images_per_update
    result.n_images += cfg.images_per_update
    improved = loss_sum < st.best_loss
    if improved:
        st.best_loss, st.since_best, result.best_epoch = loss_sum, 0, epoch
        kept = out.after[r] if cfg.keep == "post_update" else out.before[r]
        result.vector = kept.detach().float().cpu().clone()
    else:
        st.since_best += 1
    row = dict(class_id=result.target, epoch=epoch, loss=loss_sum / cfg.images_per_update, accuracy=accuracy,
               grad_norm=float(out.grad[r].float().norm()) if out.status != "nonfinite" else float("nan"),
               grad_status=out.status, loss_scale=out.scale, stepped=out.stepped, clip_norms=out.clip_norms[r],
               images=result.n_images, step_seconds=seconds, best=improved, prompts=prompts)
    result.history.append(row)
    if on_epoch:
        on_epoch(row)
    if out.status == "zero" and [h["grad_status"] for h in result.history[-5:]] == ["zero"] * 5:
        raise TrainingError(f"the token gradient of class {result.target} stayed exactly zero for 5 epochs even "
                            f"with loss scale {out.scale:g}: nothing reaches the token (check depth and the "
                            "classifier)")
    recent = [h["accuracy"] for h in result.history[-cfg.stop_window:]]
    if len(recent) == cfg.stop_window and sum(recent) / len(recent) > cfg.stop_accuracy:
        st.active, result.stop_reason, result.images_to_threshold = False, "threshold", result.n_images
    elif st.since_best > cfg.patience:
        st.active, result.stop_reason = False, "patience"


def _progress(total: int, desc: str, enabled: bool):
    from .progress import progress

    return progress(total, desc, enabled)
