"""The DCT cell: train one token per class with a config, then judge what it bought.

One cell = one training config (a `dct.config.TrainConfig`) applied to a set of classes, plus the
evaluation settings below. It measures, per cell: time per optimisation step (the runner's timer wraps
each step), peak memory (the runner's meter, one fresh process per cell), steps and images until the
stopping rule fired, the token's gradient norm, and then, on seeds never used in training:
accuracy by an independent judge (and any extra classifiers, e.g. the other domain's guide for the
transfer experiment) with bootstrap CIs, the plain prompt on the same seeds, and FID/KID against
held-out real images in the judge's feature space.

Settings: `preset` ("fast" by default, "paper", or a preset file) and any TrainConfig field overriding
it; the stored config is the fully expanded TrainConfig, so two spellings of one config are one cell.
Evaluation settings:
    classes           class indices or names (default: all classes of the world)
    judge             classifier spec of the judge (default: the world's judge)
    eval_classifiers  extra classifier specs scored on the same images (default: none)
    eval_seeds        images per class and prompt (default 32), seeds from `eval_seed_base` on
    eval_seed_base    first evaluation seed (default EVAL_SEED_BASE = 10,000); a range that meets the
                      training latents' seeds (TrainConfig.latent_seeds) is refused
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

import torch

from dct.config import FIELDS, from_dict
from dct.errors import ConfigError

from .columns import eval_key
from .registry import CellOutput, register_cell

EVAL_SEED_BASE = 10_000  # training draws latents from seeds < EVAL_SEED_BASE: evaluation seeds are unseen
EVAL_DEFAULTS = dict(classes=None, judge=None, eval_classifiers=(), eval_seeds=32, eval_seed_base=EVAL_SEED_BASE,
                     eval_scheduler="ddim",
                     eval_steps=20, eval_guidance=5.0, eval_precision="fp32", fid=True, fid_reference=None)
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
    base = values["eval_seed_base"]
    if not isinstance(base, int) or isinstance(base, bool) or base < 0:
        raise ConfigError(f"eval_seed_base={base!r} is not accepted: an integer >= 0")
    seen = sorted(set(train.latent_seeds()) & set(range(base, base + values["eval_seeds"])))
    if seen:
        raise ConfigError(f"eval_seed_base={base} with eval_seeds={values['eval_seeds']} would judge seeds "
                          f"{seen[:5]}{'...' if len(seen) > 5 else ''} that training drew its latents from; "
                          f"start the evaluation seeds above {max(train.latent_seeds())}")
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


def run(config: dict, ctx) -> CellOutput:
    from dct.classifiers import load_classifier, resolve_class
    from dct.jobs import load_guide, prompt_name, resolve_defaults
    from dct.pipeline import load_parts
    from dct.token import ClassTokens, save_tokens
    from dct.train import precision_dtype, train_token

    cfg = from_dict({k: v for k, v in config.items() if k in FIELDS})
    res = resolve_defaults(cfg)
    guide = load_guide(res.classifier, cfg.classifier_preprocessing, device=ctx.device)
    judge_spec = config["judge"] or res.judge
    judge = load_classifier(judge_spec, device=ctx.device)
    extra = {spec: load_classifier(spec, device=ctx.device) for spec in config["eval_classifiers"]}
    names = res.class_names or guide.labels
    classes = [resolve_class(guide, c) for c in (config["classes"] or range(len(names)))]
    parts = load_parts(res.model, device=ctx.device, dtype=precision_dtype(cfg.precision))

    curves, results, vectors = [], [], []
    for i, c in enumerate(classes):
        def on_epoch(row, c=c, i=i):
            curves.append({"class_id": c, **flat_history_row(row, cfg.clip_grad_norm)})
            ctx.progress(i, len(classes), cls=c, epoch=row["epoch"], loss=row["loss"], acc=row["accuracy"])

        with ctx.phase("train"):
            tokens = ClassTokens(parts.tokenizer, parts.text_encoder, [cfg.placeholder], cfg.init_word)
            result = train_token(parts, guide, c, prompt_name(names, c, cfg.class_name_rule), cfg, templates=res.templates,
                                 tokens=tokens, on_epoch=on_epoch, timed_step=ctx.step, progress=False)
            tokens.remove()
        save_tokens(ctx.out_dir / f"class-{c}.safetensors", {cfg.placeholder: result.vector},
                    {"class_index": c, "config": config, "result": result.summary(), "history": result.history})
        results.append(result)
        vectors.append(result.vector)

    metrics = training_metrics(results, cfg.clip_grad_norm)
    with ctx.phase("eval"):
        metrics.update(evaluate(parts, cfg, config, res, classes, names, vectors, judge, extra, ctx))
    return CellOutput(metrics=metrics, curves=curves)


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
        "n_classes": len(results),
        "unet_calls": results[0].n_calls,
        "grad_calls": results[0].n_grad_calls,
        "epochs_mean": statistics.fmean(epochs),
        "threshold_reached": len(reached) / len(results),
        "images_to_threshold_mean": statistics.fmean(reached) if reached else None,
        "images_mean": statistics.fmean(r.n_images for r in results),
        "train_seconds_per_class": statistics.fmean(r.seconds for r in results),
        "grad_norm_median": statistics.median(grad_norms) if grad_norms else None,
        # how often clipping changed the gradient: the share of clip calls that saw a norm above the cap
        "clip_calls": len(clip_norms),
        "clip_bite_fraction": (sum(n > clip_max for n in clip_norms) / len(clip_norms)
                               if clip_norms else None),
        "clip_norm_median": statistics.median(clip_norms) if clip_norms else None,
        "stop_reasons": json.dumps({k: [r.stop_reason for r in results].count(k)
                                    for k in sorted({r.stop_reason for r in results})}),
    }


def evaluate(parts, cfg, config, res, classes, names, vectors, judge, extra, ctx) -> dict:
    """Token vs plain prompt on the same unseen seeds: judge accuracy with CIs, extra classifiers, FID."""
    from dct.eval.accuracy import accuracy_report, classify, compare
    from dct.generate import evaluate_prompts
    from dct.jobs import prompt_name
    from dct.token import ClassTokens
    from dct.train import precision_dtype

    dtype = precision_dtype(config["eval_precision"])
    parts.unet.to(dtype=dtype)
    parts.vae.to(dtype=dtype)
    placeholders = [f"{cfg.placeholder}{c}" for c in classes]  # one distinct token per class at evaluation
    bank = ClassTokens(parts.tokenizer, parts.text_encoder, placeholders, init_vectors=torch.stack(vectors))
    base = config.get("eval_seed_base", EVAL_SEED_BASE)
    seeds = list(range(base, base + config["eval_seeds"]))
    sampling = dict(scheduler=config["eval_scheduler"], steps=config["eval_steps"],
                    guidance=config["eval_guidance"], progress=False)
    token_prompts = {c: res.eval_template.format(f"{ph} {prompt_name(names, c, cfg.class_name_rule)}") for c, ph in zip(classes, placeholders)}
    plain_prompts = {c: res.eval_template.format(prompt_name(names, c, cfg.class_name_rule)) for c in classes}
    token_rep, token_imgs = evaluate_prompts(parts, judge, token_prompts, seeds, return_images=True, **sampling)
    plain_rep, plain_imgs = evaluate_prompts(parts, judge, plain_prompts, seeds, return_images=True, **sampling)
    bank.remove()
    diff = compare(token_rep, plain_rep)
    out = {"eval_images_per_class": len(seeds), "eval_images": token_rep["n_images"], "judge": judge.spec,
           "eval_protocol": "ours", "eval_seed_first": seeds[0]}
    out.update(_flat("acc", token_rep))
    out.update(_flat("plain_acc", plain_rep))
    gain = diff["overall"]["top1"]  # paired bootstrap: token and plain images share their seeds
    out.update(acc_gain=gain["diff"], acc_gain_lo=gain["lo"], acc_gain_hi=gain["hi"])
    out["acc_per_class"] = json.dumps({str(p["class_id"]): p["top1"]["acc"] for p in token_rep["per_class"]})
    out["plain_acc_per_class"] = json.dumps({str(p["class_id"]): p["top1"]["acc"] for p in plain_rep["per_class"]})
    targets = [c for c in classes for _ in seeds]
    for name, clf in extra.items():
        key = eval_key(name)
        rep = accuracy_report(classify(clf, token_imgs), targets, classes, seeds=seeds * len(classes))
        out.update(_flat(f"acc[{key}]", rep, top5=False))
        rep = accuracy_report(classify(clf, plain_imgs), targets, classes, seeds=seeds * len(classes))
        out.update(_flat(f"plain_acc[{key}]", rep, top5=False))
    if config["fid"]:
        out.update(fid_metrics(token_imgs, plain_imgs, classes, config, res, judge))
    save_examples(ctx.out_dir, token_imgs, plain_imgs, classes, seeds)
    return out


def _flat(prefix: str, report: dict, top5: bool = True) -> dict:
    o = report["overall"]
    out = {prefix: o["top1"]["acc"], f"{prefix}_lo": o["top1"]["lo"], f"{prefix}_hi": o["top1"]["hi"]}
    if top5 and "top5" in o:
        out[f"{prefix}_top5"] = o["top5"]["acc"]
    return out


def fid_metrics(token_imgs, plain_imgs, classes, config, res, judge) -> dict:
    from dct.eval.fid import fid_kid

    reference = config["fid_reference"] or world_reference(classes, res)
    if reference is None:
        return {}
    out = {}
    for name, imgs in (("fid", token_imgs), ("plain_fid", plain_imgs)):
        r = fid_kid(imgs, reference, feature_extractor=judge)
        out[name] = r["fid"]
        out[f"{name.replace('fid', 'kid')}"] = r.get("kid_mean")
        out["fid_n_reference"] = r["n_reference"]
        out["fid_feature_space"] = r["feature_extractor"]
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


register_cell("dct", keys=KEYS, validate=validate, run=run, check=check)
