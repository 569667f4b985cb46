"""The DCT cell: train tokens for a set of classes with one config, several times, then judge them.

One cell = one training config (a `dct.config.TrainConfig`) applied to a set of classes, R times with
different training seeds (`replicates`; run r trains with seed + r * 1000, so a different token can come
out), plus the evaluation settings below. Per cell it measures:
- cost: the first `cost_steps` optimisation steps of the first class (run 0), each timed, in the phase
  "probe" (phase_probe_peak_bytes, the step-time median): every cell measures this the same way, so
  memory and time compare across cells whatever they go on to do;
- training (all classes in shared rollouts, a token bank, per run): epochs, images to the stopping
  threshold, gradient norms, seconds;
- on evaluation seeds never used in training, the same seeds for every run and for the plain prompt:
  judge accuracy with a hierarchical bootstrap CI (classes, runs, images; dct.eval.hierarchical), the
  paired gain over the plain prompt, extra classifiers (e.g. the other domain's guide for the transfer
  experiment), FID/KID against held-out real images in the judge's feature space (not reported below
  2 x feature-dim images). Every image's outcome is stored (metric `outcomes`), so paired contrasts
  between cells (bench.contrasts) and any other interval can be computed later.
`measure = "cost"` stops after the probe: a grid uses it for the values of a quality-neutral axis
(bench.spec), whose quality columns are joined from the cell that trained (bench.shared).

Settings: `preset` ("fast" by default, "paper", or a preset file) and any TrainConfig field overriding
it; the stored config is the fully expanded TrainConfig, so two spellings of one config are one cell.
Other settings:
    classes           class indices or names (default: all classes of the world)
    replicates        training runs per class (default 3); 1 gives no training variance in the CI
    measure           "quality" (default: probe, train, judge) or "cost" (probe only)
    cost_steps        timed probe steps (default 3; the spec's warmup_steps are left out of the median)
    judge             classifier spec of the judge (default: the world's judge)
    eval_classifiers  extra classifier specs scored on the same images (default: none)
    eval_seeds        images per class, run and prompt (default 32), seeds from `eval_seed_base` on
    eval_seed_base    first evaluation seed (default REPORT_SEED_BASE = 70,000, a range no choice was
                      tuned on); a range that meets any run's training latent seeds is refused
    eval_scheduler, eval_steps, eval_guidance   sampling for evaluation (default: the world's protocol,
                      DDIM 20 steps guidance 5; the reference code evaluates with PNDM 50 / 7.5)
    eval_precision    UNet/VAE dtype for evaluation (default fp32)
    fid               compute FID/KID (default true; needs held-out reference images)
    fid_reference     a folder of reference images (default: the world's held-out real images of
                      the evaluated classes, in the domain of the templates)
A cell on the embedded world also carries `world` (dct.world.paths.world_identity), filled in here.
"""

from __future__ import annotations

import json
import statistics
import time

import torch

from dct.config import FIELDS, from_dict
from dct.errors import ConfigError

from bench.columns import eval_key
from bench.contrasts import pack
from bench.registry import CellOutput, register_cell

# Evaluation seeds: training draws latents from seeds < SELECTION_SEED_BASE. The range from
# SELECTION_SEED_BASE was watched while the tiny world's recipe, the `fast` preset and the search were
# tuned (selection seeds); results are reported on REPORT_SEED_BASE on, which no choice has looked at.
SELECTION_SEED_BASE = 10_000
REPORT_SEED_BASE = 70_000
EVAL_SEED_BASE = REPORT_SEED_BASE
REPLICATE_STRIDE = 1_000  # training run r uses seed + r * REPLICATE_STRIDE
MEASURES = ("quality", "cost")
PROBE_PHASE = "probe"
EVAL_DEFAULTS = dict(classes=None, judge=None, eval_classifiers=(), eval_seeds=32, eval_seed_base=EVAL_SEED_BASE,
                     eval_scheduler="ddim", eval_steps=20, eval_guidance=5.0, eval_precision="fp32", fid=True,
                     fid_reference=None, replicates=3, measure="quality", cost_steps=3)
KEYS = set(FIELDS) | set(EVAL_DEFAULTS) | {"world"}


def validate(config: dict) -> dict:
    """Fill defaults and check every value cheaply (no model is loaded)."""
    from dct.classifiers import CLASSIFIER_FAMILIES
    from dct.classifiers.spec import split_ensemble, split_spec

    unknown = sorted(set(config) - KEYS)
    if unknown:
        raise ConfigError(f"unknown setting(s) {unknown} for a dct cell; accepted: {sorted(KEYS)}")
    values = {**EVAL_DEFAULTS, **config}
    stated_world = values.pop("world", None)
    # `preset` names the base ("fast", "paper" or a file); the other settings override it
    overrides = {k: v for k, v in values.items() if k in FIELDS and k != "preset"}
    from dct.jobs import check_finite, load_train_config

    check_finite(values, "")
    train = load_train_config(values.get("preset") or "fast", **overrides)
    if train.model is not None and (train.classifier is None or values["judge"] is None):
        raise ConfigError("a dct cell with a real `model` needs `classifier` (the guide) and `judge`; only the "
                          "embedded tiny world has defaults for them")
    for spec in [train.classifier, values["judge"], *values["eval_classifiers"]]:
        if spec is not None:  # parsing only (prefix, ensemble members): loading waits for the cell
            family, target = split_spec(spec, list(CLASSIFIER_FAMILIES))
            for member in split_ensemble(target) if family == "ensemble" else ():
                split_spec(member, list(CLASSIFIER_FAMILIES))
    if not isinstance(values["eval_seeds"], int) or values["eval_seeds"] < 2:
        raise ConfigError(f"eval_seeds={values['eval_seeds']!r} is not accepted: an integer >= 2")
    for key, low in (("replicates", 1), ("cost_steps", 1)):
        value = values[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"{key}={value!r} is not accepted: an integer >= {low}")
    if values["measure"] not in MEASURES:
        raise ConfigError(f"measure={values['measure']!r} is not accepted: use one of {MEASURES} (quality: train "
                          "and judge; cost: only the timed probe steps)")
    if not train.reseed_each_epoch and train.max_epochs > REPLICATE_STRIDE:
        raise ConfigError(f"max_epochs={train.max_epochs} is not accepted with replicates: at most "
                          f"{REPLICATE_STRIDE}, or the runs' latent seeds would overlap")
    base = values["eval_seed_base"]
    if not isinstance(base, int) or isinstance(base, bool) or base < 0:
        raise ConfigError(f"eval_seed_base={base!r} is not accepted: an integer >= 0")
    trained = sorted({s for seed in replicate_seeds(train, values["replicates"])
                      for s in train.replace(seed=seed).latent_seeds()})
    seen = sorted(set(trained) & set(range(base, base + values["eval_seeds"])))
    if seen:
        raise ConfigError(f"eval_seed_base={base} with eval_seeds={values['eval_seeds']} would judge seeds "
                          f"{seen[:5]}{'...' if len(seen) > 5 else ''} that training drew its latents from; "
                          f"start the evaluation seeds above {max(trained)}")
    classes = values["classes"]
    if classes is not None and (not isinstance(classes, (list, tuple)) or not classes):
        raise ConfigError(f"classes={classes!r} is not accepted: a non-empty list of class indices or names")
    if train.model is None and classes is not None:
        from dct.jobs import resolve_world_class, world_manifest

        names = world_manifest()["classes"]
        classes = [resolve_world_class(names, c) for c in classes]
    out = {**train.to_dict(), **{k: values[k] for k in EVAL_DEFAULTS}}
    out["classes"] = list(classes) if classes is not None else None
    out["eval_classifiers"] = list(values["eval_classifiers"])
    if train.model is None:  # the embedded world: its identity is part of the cell's (see world_fingerprint)
        from dct.world.paths import world_identity

        out["world"] = world_identity(stated_world)
    return out


def replicate_seeds(cfg, replicates: int) -> list[int]:
    """Training seeds of the replicates: run r trains with seed + r * REPLICATE_STRIDE, so that the runs'
    latent seeds (seed .. seed + max_epochs - 1 without re-seeding) never meet."""
    return [cfg.seed + r * REPLICATE_STRIDE for r in range(replicates)]


def run(config: dict, ctx) -> CellOutput:
    from dct.classifiers import load_classifier, resolve_class
    from dct.jobs import load_guide, prompt_name, resolve_defaults
    from dct.pipeline import load_parts
    from dct.token import ClassTokens
    from dct.train import precision_dtype, train_tokens

    cfg = from_dict({k: v for k, v in config.items() if k in FIELDS})
    res = resolve_defaults(cfg)
    guide = load_guide(res.classifier, cfg.classifier_preprocessing, device=ctx.device)
    names = res.class_names or guide.labels
    classes = [resolve_class(guide, c) for c in (config["classes"] or range(len(names)))]
    parts = load_parts(res.model, device=ctx.device, dtype=precision_dtype(cfg.precision))
    subjects = [prompt_name(names, c, cfg.class_name_rule) for c in classes]

    with ctx.phase(PROBE_PHASE):
        metrics = probe(parts, guide, classes[0], subjects[0], cfg, res.templates, config["cost_steps"], ctx)
    metrics["measure"] = config["measure"]
    if config["measure"] == "cost":  # memory and time only: the quality columns come from the quality cell
        return CellOutput(metrics=metrics)

    judge = load_classifier(config["judge"] or res.judge, device=ctx.device)
    extra = {spec: load_classifier(spec, device=ctx.device) for spec in config["eval_classifiers"]}
    curves, runs = [], []
    seeds = replicate_seeds(cfg, config["replicates"])
    started = time.perf_counter()
    with ctx.phase("train"):
        for r, seed in enumerate(seeds):
            run_cfg = cfg.replace(seed=seed)

            reporter = EpochReporter(ctx, r, len(seeds))

            def on_epoch(row, r=r, seed=seed, reporter=reporter):
                curves.append({"replicate": r, "train_seed": seed, **flat_history_row(row, cfg.clip_grad_norm)})
                reporter.add(row)

            # all classes in shared rollouts (a token bank): the same images per class as one at a time
            placeholders = [f"{cfg.placeholder}{c}" for c in classes]
            bank = ClassTokens(parts.tokenizer, parts.text_encoder, placeholders, cfg.init_word)
            results = train_tokens(parts, guide, classes, subjects, run_cfg, templates=res.templates, tokens=bank,
                                   placeholders=placeholders, on_epoch=on_epoch, progress=False)
            bank.remove()
            reporter.flush()
            save_run(ctx.out_dir / f"run-{r}.safetensors", results, run_cfg, config)
            runs.append(results)
    metrics.update(training_metrics([x for results in runs for x in results], cfg.clip_grad_norm))
    metrics.update(n_classes=len(classes), n_runs=len(seeds), train_seeds=json.dumps(seeds))
    metrics["train_seconds_per_token"] = (time.perf_counter() - started) / (len(classes) * len(seeds))
    with ctx.phase("eval"):
        metrics.update(evaluate(parts, cfg, config, res, classes, subjects, runs, seeds, judge, extra, ctx))
    return CellOutput(metrics=metrics, curves=curves)


class EpochReporter:
    """One progress message per epoch of a bank (the classes report one by one): run r, the epoch, and the
    mean guide accuracy over every class, a stopped class counting with its last epoch's accuracy (its
    token is kept). bench.search.study reports these to Optuna and prunes on them."""

    def __init__(self, ctx, run: int, runs: int):
        self.ctx, self.run, self.runs = ctx, run, runs
        self.last: dict[int, float] = {}
        self.epoch: int | None = None

    def add(self, row: dict) -> None:
        if self.epoch is not None and row["epoch"] != self.epoch:
            self.flush()
        self.last[row["class_id"]] = row["accuracy"]
        self.epoch = row["epoch"]

    def flush(self) -> None:
        if self.last:
            self.ctx.progress(self.run, self.runs, run=self.run, epoch=self.epoch,
                              acc=statistics.fmean(self.last.values()))


def probe(parts, guide, target: int, subject: str, cfg, templates, steps: int, ctx) -> dict:
    """The first `steps` optimisation steps of one class's training (replicate 0), each timed: the cost
    every cell measures the same way, and the trajectory that shows a quality-neutral setting is neutral
    (two cells whose probes differ did not train the same token)."""
    from dct.token import ClassTokens
    from dct.train import train_token

    tokens = ClassTokens(parts.tokenizer, parts.text_encoder, [cfg.placeholder], cfg.init_word)
    start = tokens.vectors.detach().float().clone()
    result = train_token(parts, guide, target, subject, cfg.replace(max_epochs=steps), templates=templates,
                         tokens=tokens, timed_step=ctx.step, progress=False)
    delta = (tokens.vectors.detach().float() - start)[0]
    tokens.remove()
    return {"probe_class": target, "probe_steps": len(result.history),
            "probe_losses": json.dumps([h["loss"] for h in result.history]),
            "probe_delta": json.dumps([float(v) for v in delta])}


def save_run(path, results, run_cfg, config) -> None:
    """One training run's token bank, with the seeds its latents came from (evaluation must avoid them)."""
    from dct.token import save_tokens

    save_tokens(path, {r.placeholder: r.vector for r in results},
                {"config": {**config, "seed": run_cfg.seed}, "train_seed": run_cfg.seed,
                 "latent_seeds": run_cfg.latent_seeds(),
                 "tokens": {r.placeholder: {"class_index": r.target, "result": r.summary(), "history": r.history}
                            for r in results}})


def flat_history_row(row: dict, clip_max: float) -> dict:
    """A training history row as flat scalars for the store: lists become JSON, and the clip norms are
    summarised (how many of this epoch's clips bit, i.e. saw a norm above `clip_grad_norm`)."""
    norms = row.get("clip_norms") or []
    flat = {k: json.dumps(v) if isinstance(v, (list, tuple)) else v for k, v in row.items()}
    flat.update(clip_calls=len(norms), clip_bites=sum(n > clip_max for n in norms),
                clip_norm_max=max(norms) if norms else None)
    return flat


def training_metrics(results, clip_max: float) -> dict:
    epochs = [len(r.history) for r in results]
    reached = [r.images_to_threshold for r in results if r.images_to_threshold is not None]
    grad_norms = [h["grad_norm"] for r in results for h in r.history if h["grad_status"] == "ok"]
    clip_norms = [n for r in results for h in r.history for n in h.get("clip_norms") or []]
    return {
        "n_tokens": len(results),
        "unet_calls": results[0].n_calls,
        "grad_calls": results[0].n_grad_calls,
        "epochs_mean": statistics.fmean(epochs),
        "threshold_reached": len(reached) / len(results),
        "images_to_threshold_mean": statistics.fmean(reached) if reached else None,
        "images_mean": statistics.fmean(r.n_images for r in results),
        "grad_norm_median": statistics.median(grad_norms) if grad_norms else None,
        # how often clipping changed the gradient: the share of clip calls that saw a norm above the cap
        "clip_calls": len(clip_norms),
        "clip_bite_fraction": (sum(n > clip_max for n in clip_norms) / len(clip_norms)
                               if clip_norms else None),
        "clip_norm_median": statistics.median(clip_norms) if clip_norms else None,
        "stop_reasons": json.dumps({k: [r.stop_reason for r in results].count(k)
                                    for k in sorted({r.stop_reason for r in results})}),
    }


def evaluate(parts, cfg, config, res, classes, subjects, runs, train_seeds, judge, extra, ctx) -> dict:
    """Every run's tokens and the plain prompt on the same unseen seeds, judged image by image: accuracy
    with a hierarchical CI (classes, runs, images), the paired gain over the plain prompt, extra
    classifiers on the same images, FID/KID. The per-image outcomes are stored (metric `outcomes`), so
    any other interval, and paired contrasts between cells, can be computed from the store."""
    from dct.eval.accuracy import classify, topk_correct
    from dct.eval.hierarchical import hierarchical_ci
    from dct.generate import generate_images
    from dct.token import ClassTokens
    from dct.train import precision_dtype

    dtype = precision_dtype(config["eval_precision"])
    parts.unet.to(dtype=dtype)
    parts.vae.to(dtype=dtype)
    base = config["eval_seed_base"]
    seeds = list(range(base, base + config["eval_seeds"]))
    sampling = dict(scheduler=config["eval_scheduler"], steps=config["eval_steps"],
                    guidance=config["eval_guidance"], progress=False)
    n_c, n_r, n_s = len(classes), len(runs), len(seeds)
    token_imgs = []  # run by run, class by class, seed by seed
    for r, results in enumerate(runs):
        bank = ClassTokens(parts.tokenizer, parts.text_encoder, [x.placeholder for x in results],
                           init_vectors=torch.stack([x.vector for x in results]))
        prompts = [res.eval_template.format(f"{x.placeholder} {s}") for x, s in zip(results, subjects) for _ in seeds]
        token_imgs.append(generate_images(parts, prompts, seeds * n_c, **sampling))
        bank.remove()
        ctx.progress(r + 1, n_r + 1, evaluating=f"run {r}")
    token_imgs = torch.cat(token_imgs)
    plain_prompts = [res.eval_template.format(s) for s in subjects for _ in seeds]
    plain_imgs = plain_images(parts, plain_prompts, seeds * n_c, sampling, config, ctx)
    token_targets = torch.tensor(classes).repeat_interleave(n_s).repeat(n_r)
    plain_targets = torch.tensor(classes).repeat_interleave(n_s)

    def outcomes(clf, ks=(1,)):
        """(token (C, R, S), plain (C, 1, S)) 0/1 outcomes for each k, the images classified once."""
        tok_logits, plain_logits = classify(clf, token_imgs), classify(clf, plain_imgs)
        return [(topk_correct(tok_logits, token_targets, k).reshape(n_r, n_c, n_s).transpose(1, 0, 2),
                 topk_correct(plain_logits, plain_targets, k).reshape(n_c, 1, n_s)) for k in ks]

    k5 = min(5, len(getattr(judge, "labels", None) or range(5)))
    (tok, plain), (tok5, _) = outcomes(judge, (1, k5))
    out = {"eval_images_per_class": n_s, "eval_images": n_c * n_r * n_s, "eval_runs": n_r, "judge": judge.spec,
           "eval_protocol": "ours", "eval_seed_first": seeds[0], "acc_top5": float(tok5.mean()),
           **accuracy_metrics(tok, plain, classes)}
    stored = {"classes": classes, "eval_seeds": seeds, "train_seeds": train_seeds,
              "token": pack(tok), "plain": pack(plain), "extra": {}}
    for name, clf in extra.items():
        key = eval_key(name)
        (t, p), = outcomes(clf)
        for prefix, x in ((f"acc[{key}]", t), (f"plain_acc[{key}]", p)):
            ci = hierarchical_ci(x)
            out.update({prefix: ci["acc"], f"{prefix}_lo": ci["lo"], f"{prefix}_hi": ci["hi"]})
        stored["extra"][key] = {"token": pack(t), "plain": pack(p)}
    out["outcomes"] = json.dumps(stored, separators=(",", ":"))
    if config["fid"]:
        out.update(fid_metrics(token_imgs, plain_imgs, classes, config, res, judge))
    save_examples(ctx.out_dir, token_imgs[:n_c * n_s], plain_imgs, classes, seeds)
    return out


def accuracy_metrics(tok, plain, classes) -> dict:
    """Judge accuracy columns from 0/1 outcomes, token (C, R, S) and plain (C, 1, S): accuracy with its
    hierarchical CI, the plain prompt's, the paired gain, per run and per class (every cell kind that
    judges images stores these same columns)."""
    from dct.eval.hierarchical import hierarchical_ci, paired_difference

    acc, plain_acc, gain = hierarchical_ci(tok), hierarchical_ci(plain), paired_difference(tok, plain)
    return {"acc": acc["acc"], "acc_lo": acc["lo"], "acc_hi": acc["hi"], "acc_ci": acc["covers"],
            "plain_acc": plain_acc["acc"], "plain_acc_lo": plain_acc["lo"], "plain_acc_hi": plain_acc["hi"],
            "acc_gain": gain["diff"], "acc_gain_lo": gain["lo"], "acc_gain_hi": gain["hi"],
            "acc_per_run": json.dumps([float(tok[:, r].mean()) for r in range(tok.shape[1])]),
            "acc_per_class": json.dumps({str(c): float(tok[i].mean()) for i, c in enumerate(classes)}),
            "plain_acc_per_class": json.dumps({str(c): float(plain[i].mean()) for i, c in enumerate(classes)})}


def plain_images(parts, prompts, seeds, sampling, config, ctx):
    """The plain prompt's images, shared by every cell that would draw them alike (same model, prompts,
    seeds, sampling and precision): a grid's cells differ in training, never in the plain prompt. Kept
    as safetensors in $DCT_EVAL_CACHE, else <store>/_cache/plain; written atomically, so two cells
    running at once at worst both generate."""
    import os
    from pathlib import Path

    from safetensors.torch import load_file, save_file

    from dct.config import config_hash
    from dct.generate import generate_images

    key = config_hash({"model": config.get("model"), "world": config.get("world"), "prompts": prompts,
                       "seeds": seeds, "sampling": sampling, "precision": config["eval_precision"]})
    folder = Path(os.environ["DCT_EVAL_CACHE"]) if os.environ.get("DCT_EVAL_CACHE") else \
        Path(ctx.out_dir).parents[2] / "_cache" / "plain"  # <store>/artifacts/<hash>/<attempt>
    path = folder / f"{key}.safetensors"
    if path.is_file():
        try:
            return load_file(str(path))["images"]
        except Exception:  # a damaged cache entry is regenerated, never trusted
            pass
    images = generate_images(parts, prompts, seeds, **sampling)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        save_file({"images": images.contiguous()}, str(tmp))
        tmp.replace(path)
    except OSError:  # a cache that cannot be written costs time next run, never this result
        pass
    return images


FULL_RANK_FACTOR = 2  # FID needs a full-rank covariance: at least this many images per feature dimension


def fid_metrics(token_imgs, plain_imgs, classes, config, res, judge) -> dict:
    """FID and KID (mean, std over subsets of 2 x feature-dim images) of the token's and the plain
    prompt's images against real held-out images, in the judge's feature space. With fewer than
    2 x feature-dim images on either side the covariance is (nearly) rank-deficient and FID says more
    about the count than the images: the row then says so (fid_note) instead of giving a number."""
    from dct.eval.fid import fid_kid

    reference = config["fid_reference"] or world_reference(classes, res)
    if reference is None:
        return {}
    with torch.no_grad():
        dim = int(judge.features(token_imgs[:1].float()).reshape(1, -1).shape[1])
    need = FULL_RANK_FACTOR * dim
    if isinstance(reference, torch.Tensor):
        n_ref = len(reference)
    else:
        from pathlib import Path

        from dct.eval.fid import _image_files

        n_ref = len(_image_files(Path(reference)))
    out = {"fid_n_reference": n_ref, "fid_feature_dim": dim, "fid_feature_space": judge.spec}
    for name, imgs in (("fid", token_imgs), ("plain_fid", plain_imgs)):
        out[f"{name}_n_generated"] = len(imgs)
        if min(len(imgs), n_ref) < need:
            out[name] = None
            out[f"{name}_note"] = (f"unreliable, not reported: {len(imgs)} generated and {n_ref} reference images; "
                                   f"FID needs >= {need} of each ({FULL_RANK_FACTOR} x {dim} feature dims)")
            continue
        r = fid_kid(imgs, reference, feature_extractor=judge, kid_subset_size=need)
        out[name] = r["fid"]
        out[name.replace("fid", "kid")] = r["kid_mean"]
        out[name.replace("fid", "kid") + "_std"] = r["kid_std"]
        out["fid_n_reference"] = r["n_reference"]
    out["kid_subset_size"] = need
    return out


def world_reference(classes, res):
    """Held-out real images of the evaluated classes, in the domain the templates name."""
    if not res.world:
        return None
    from dct.world.data import load_domain

    domain = res.domain
    images, labels = load_domain(domain, "heldout", as_float=True)
    keep = torch.isin(torch.as_tensor(labels), torch.tensor(classes))
    return images[keep]


def save_examples(folder, token_imgs, plain_imgs, classes, seeds: list[int], n: int = 8) -> None:
    """A few token and plain images per class (same seeds) for the figures' image grids."""
    from dct.generate import save_images

    per_class = len(seeds)
    pairs = [(i, j) for i in range(len(classes)) for j in range(min(n, per_class))]
    idx = [i * per_class + j for i, j in pairs]
    names = [f"class{classes[i]}-seed{seeds[j]}" for i, j in pairs]
    save_images(token_imgs[idx], folder / "examples" / "token", names)
    save_images(plain_imgs[idx], folder / "examples" / "plain", names)


def check(config: dict) -> None:
    """Every classifier of the cell resolves (name, folder or file exists) and the FID reference exists."""
    from pathlib import Path

    from dct.classifiers.check import check_resolvable

    for spec in [config["classifier"], config["judge"], *config["eval_classifiers"]]:
        if spec is not None:
            check_resolvable(spec)
    if config["fid_reference"] is not None and not Path(config["fid_reference"]).exists():
        raise ConfigError(f"fid_reference {config['fid_reference']!r} does not exist")


def weight(config: dict) -> float:
    """Relative run time: UNet calls with gradient (the backward) plus the forward, per class and run."""
    calls = config["steps"] + (1 if config["scheduler"] == "pndm" else 0)
    grad = calls if config["depth"] in ("full", "all") else min(int(config["depth"]), calls)
    if config.get("measure") == "cost":
        return float(calls + 2 * grad)
    return float((calls + 2 * grad) * config["max_epochs"] * config["replicates"] * len(config["classes"] or [0] * 10))


register_cell("dct", keys=KEYS, validate=validate, run=run, check=check, weight=weight)
