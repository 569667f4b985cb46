"""The methods cell: DCT against its alternatives, each producing images of a class on the SAME evaluation
seeds, judged by the SAME independent judge, with the same hierarchical CIs as the dct cell.

One cell = one `method` on one `domain` for a set of classes:
    plain                    the plain class prompt (the world's "a handwritten {name}")
    prompt-search            no training: per class, the best of a few templates by the GUIDE's accuracy on
                             selection seeds (dct.methods.prompt_search)
    textual-inversion-k<k>   a token from k real labelled training images per class, denoising loss
                             (dct.methods.textual_inversion); k = 1, 5, 10 in the spec
    classifier-guidance      no training: the guide steers every sampling step; its one scale is chosen on
                             the selection seeds (dct.methods.guidance)
    dct-fast, dct-paper      DCT with the `fast` / `paper` preset (dct-paper capped, METHODS below)
    dct+prompt               the DCT token (fast) trained and sampled inside prompt-search's chosen prompt
Trained methods run `replicates` training runs (seeds seed + 1000 r); a method without training is
deterministic given the seeds: its one set of images is stored as every run (identical runs: zero training
variance, which is the truth), so paired contrasts with a trained baseline line up run by run.

Per cell: the one-time phase ("train": selection, tuning or training, timed), then the evaluation images
(timed per image), judge accuracy with a hierarchical CI (classes, runs, images), the paired gain over the
plain prompt on the same seeds, the same for the world's ambiguous pair of classes, and the cost columns
of dct.methods.cost (per class: images consumed, labelled images, one-time seconds, s/image, cost of N).
Every image's outcome is stored (metric `outcomes`, as the dct cell), so bench.contrasts gives each method
minus the spec's baseline method.

Selection seeds (SELECTION_SEED_BASE = 10,000+) serve every choice (prompt, guidance scale); the
evaluation seeds (REPORT_SEED_BASE = 70,000+) are only ever judged; overlapping ranges are refused.
"""

from __future__ import annotations

import json
import re
import time

import torch

from dct.errors import ConfigError

from bench.cells.dct import (REPLICATE_STRIDE, REPORT_SEED_BASE, SELECTION_SEED_BASE, accuracy_metrics,
                             plain_images, save_examples)
from bench.contrasts import pack
from bench.registry import CellOutput, register_cell

# name -> what it runs. dct-paper is capped at 10 epochs (50 images per token, the preset allows 50 epochs)
# to fit the 30-minute budget of `dct bench methods`; at the reference lr it does not learn on this world
# in 50 epochs either (README, paper-fidelity).
METHODS = {
    "plain": dict(kind="plain"),
    "prompt-search": dict(kind="prompt-search"),
    "textual-inversion-k1": dict(kind="ti", k=1),
    "textual-inversion-k5": dict(kind="ti", k=5),
    "textual-inversion-k10": dict(kind="ti", k=10),
    "classifier-guidance": dict(kind="guidance"),
    "dct-fast": dict(kind="dct", preset="fast"),
    "dct-paper": dict(kind="dct", preset="paper", max_epochs=10),
    "dct+prompt": dict(kind="dct+prompt", preset="fast"),
}
TI_PATTERN = re.compile(r"^textual-inversion-k(\d+)$")
DEFAULTS = dict(method=None, domain=None, model=None, classifier=None, judge=None, classes=None, replicates=2,
                seed=None, eval_seeds=32, eval_seed_base=REPORT_SEED_BASE, selection_seeds=8,
                selection_seed_base=SELECTION_SEED_BASE, eval_scheduler="ddim", eval_steps=20, eval_guidance=5.0,
                dct={}, ti_steps=150, ti_batch=4, ti_lr=5e-2, guidance_scales=[0.25, 0.5, 1.0, 2.0],
                templates=None)
KEYS = set(DEFAULTS) | {"world"}
EVAL_PRECISION = "fp32"


def method_spec(name: str) -> dict:
    if name in METHODS:
        return dict(METHODS[name])
    match = TI_PATTERN.match(str(name))
    if match and int(match.group(1)) >= 1:
        return dict(kind="ti", k=int(match.group(1)))
    raise ConfigError(f"method={name!r} is not accepted: use one of {sorted(METHODS)} (or "
                      "textual-inversion-k<k> for any k >= 1)")


def _int(values: dict, key: str, low: int) -> None:
    v = values[key]
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        raise ConfigError(f"{key}={v!r} is not accepted: an integer >= {low}")


def validate(config: dict) -> dict:
    unknown = sorted(set(config) - KEYS)
    if unknown:
        raise ConfigError(f"unknown setting(s) {unknown} for a methods cell; accepted: {sorted(KEYS)}")
    values = {**DEFAULTS, **config}
    stated_world = values.pop("world", None)
    spec = method_spec(values["method"])
    for key, low in (("replicates", 1), ("eval_seeds", 2), ("selection_seeds", 1), ("eval_seed_base", 0),
                     ("selection_seed_base", 0), ("ti_steps", 1), ("ti_batch", 1), ("eval_steps", 1)):
        _int(values, key, low)
    if not isinstance(values["dct"], dict):
        raise ConfigError(f"dct={values['dct']!r} is not accepted: a table of training settings (dct.config)")
    scales = values["guidance_scales"]
    if not isinstance(scales, list) or not scales or not all(isinstance(s, (int, float)) and s >= 0 for s in scales):
        raise ConfigError(f"guidance_scales={scales!r} is not accepted: a non-empty list of numbers >= 0")
    ev = set(range(values["eval_seed_base"], values["eval_seed_base"] + values["eval_seeds"]))
    sel = set(range(values["selection_seed_base"], values["selection_seed_base"] + values["selection_seeds"]))
    if ev & sel:
        raise ConfigError("the selection seeds (selection_seed_base, selection_seeds) overlap the evaluation seeds: "
                          "choices would look at the images they are judged on")
    from dct.config import FIELDS

    bad = sorted(set(values["dct"]) - FIELDS)
    if bad:
        raise ConfigError(f"dct settings {bad} are not training options; accepted: {sorted(FIELDS)}")
    if spec["kind"] in ("dct", "dct+prompt"):  # the trained configs exist and never draw evaluation latents
        for r_seed in range(values["replicates"]):
            cfg = dct_config(values, spec, run=r_seed)
            seen = set(cfg.latent_seeds()) & (ev | sel)
            if seen:
                raise ConfigError(f"training run {r_seed} of {values['method']} draws latents from evaluation or "
                                  f"selection seeds {sorted(seen)[:5]}")
    world = values["model"] is None
    if world:
        from dct.jobs import resolve_world_class, world_manifest
        from dct.world.paths import world_identity

        manifest = world_manifest()
        if values["domain"] is None:
            values["domain"] = manifest["domains"][0]
        if values["domain"] not in manifest["domains"]:
            raise ConfigError(f"domain={values['domain']!r} is not accepted: use one of {manifest['domains']}")
        if values["classes"] is not None:
            values["classes"] = [resolve_world_class(manifest["classes"], c) for c in values["classes"]]
        values["world"] = world_identity(stated_world)
    elif values["classifier"] is None or values["judge"] is None:
        raise ConfigError("a methods cell with a real `model` needs `classifier` (the guide) and `judge`")
    if values["classes"] is not None and (not isinstance(values["classes"], list) or not values["classes"]):
        raise ConfigError(f"classes={values['classes']!r} is not accepted: a non-empty list")
    return values


def dct_config(config: dict, spec: dict, run: int = 0):
    """The TrainConfig of training run `run` of a dct method: its preset, the method's cap, the cell's `dct`
    overrides, the world guide of the cell's domain."""
    from dct.jobs import load_train_config

    caps = {k: v for k, v in spec.items() if k not in ("kind", "preset", "k")}
    cfg = load_train_config(spec.get("preset", "fast"), model=config["model"],
                            classifier=config["classifier"] or _world_guide(config), **{**caps, **config["dct"]})
    base = cfg.seed if config["seed"] is None else config["seed"]
    return cfg.replace(seed=base + run * REPLICATE_STRIDE)


def _world_guide(config: dict) -> str | None:
    if config["model"] is not None or config["domain"] is None:
        return None
    from dct.jobs import world_manifest

    return f"world:{world_manifest()['default_guide'][config['domain']]}"


class Setup:
    """What every method of a cell shares: parts, guide, judge, classes, prompts, seeds, sampling."""

    def __init__(self, config: dict, ctx):
        from dct.classifiers import load_classifier, resolve_class
        from dct.jobs import load_guide, load_train_config, prompt_name, resolve_defaults
        from dct.pipeline import load_parts

        self.config, self.ctx = config, ctx
        base = load_train_config("fast", model=config["model"], classifier=config["classifier"] or _world_guide(config))
        self.res = res = resolve_defaults(base)
        self.guide = load_guide(res.classifier, "model", device=ctx.device)
        names = res.class_names or self.guide.labels
        self.classes = [resolve_class(self.guide, c) for c in (config["classes"] or range(len(names)))]
        self.subjects = [prompt_name(names, c, base.class_name_rule) for c in self.classes]
        self.parts = load_parts(res.model, device=ctx.device)
        self.judge = load_classifier(config["judge"] or res.judge, device=ctx.device)
        self.domain = config["domain"] or res.domain
        self.eval_seeds = list(range(config["eval_seed_base"], config["eval_seed_base"] + config["eval_seeds"]))
        self.selection_seeds = list(range(config["selection_seed_base"],
                                          config["selection_seed_base"] + config["selection_seeds"]))
        self.sampling = dict(scheduler=config["eval_scheduler"], steps=config["eval_steps"],
                             guidance=config["eval_guidance"], progress=False)
        self.plain_template = res.eval_template
        self.selection_s = 0.0  # one-time seconds shared by every run (prompt search before dct+prompt)

    def to_eval_precision(self) -> None:
        from dct.train import precision_dtype

        dtype = precision_dtype(EVAL_PRECISION)
        self.parts.unet.to(dtype=dtype)
        self.parts.vae.to(dtype=dtype)

    def select_prompts(self) -> dict:
        from dct.methods.prompt_search import candidate_templates, select_prompts

        templates = self.config["templates"] or candidate_templates(self.domain)
        return select_prompts(self.parts, self.guide, self.classes, self.subjects, templates, self.selection_seeds,
                              forbidden=self.eval_seeds, **self.sampling)


# --- the one-time phase of each kind: returns (runs, info, curves); a run is {class: (prompt, scale)} plus
# the token vectors its prompts use ------------------------------------------------------------------------


def prepare_plain(s: Setup, spec: dict):
    runs = [{"prompts": {c: s.plain_template.format(x) for c, x in zip(s.classes, s.subjects)}}]
    return runs, {"images_consumed": 0, "labelled": 0}, []


def prepare_prompt_search(s: Setup, spec: dict):
    t0 = time.perf_counter()
    sel = s.select_prompts()
    s.selection_s = time.perf_counter() - t0
    runs = [{"prompts": {c: sel["chosen"][c].format(x) for c, x in zip(s.classes, s.subjects)}}]
    info = {"images_consumed": sel["images"] / len(s.classes), "labelled": 0,
            "chosen_templates": json.dumps({str(c): t for c, t in sel["chosen"].items()}),
            "selection_scores": json.dumps({str(c): v for c, v in sel["scores"].items()})}
    return runs, info, []


def prepare_guidance(s: Setup, spec: dict):
    from dct.eval.accuracy import classify
    from dct.methods.guidance import guided_images

    scores = {}
    for scale in s.config["guidance_scales"]:
        correct = []
        for c, x in zip(s.classes, s.subjects):
            imgs = guided_images(s.parts, s.guide, c, [s.plain_template.format(x)] * len(s.selection_seeds),
                                 s.selection_seeds, scale=scale, **s.sampling)
            correct.append(float((classify(s.guide, imgs).argmax(-1) == c).float().mean()))
        scores[scale] = sum(correct) / len(correct)
        s.ctx.progress(len(scores), len(s.config["guidance_scales"]) + 1, scale=scale, guide_acc=scores[scale])
    best = max(scores, key=lambda k: (scores[k], -k))  # ties: the smaller scale
    runs = [{"prompts": {c: s.plain_template.format(x) for c, x in zip(s.classes, s.subjects)}, "scale": best}]
    info = {"images_consumed": len(scores) * len(s.selection_seeds), "labelled": 0, "guidance_scale": best,
            "guidance_scale_scores": json.dumps({str(k): v for k, v in scores.items()})}
    return runs, info, []


def prepare_ti(s: Setup, spec: dict):
    from dct.methods.textual_inversion import TIConfig, encode_latents, train_textual_inversion, world_images
    from dct.token import ClassTokens

    k, cfg = spec["k"], s.config
    runs, curves = [], []
    for r in range(cfg["replicates"]):
        seed = (cfg["seed"] or 0) + r * REPLICATE_STRIDE
        images, labels = world_images(s.domain or "handwritten", s.classes, k, seed)
        placeholders = [f"newclas{c}" for c in s.classes]
        bank = ClassTokens(s.parts.tokenizer, s.parts.text_encoder, placeholders, "a")
        row_of = {c: i for i, c in enumerate(s.classes)}
        rows = [row_of[int(y)] for y in labels]
        prompts = [s.plain_template.format(f"{placeholders[i]} {s.subjects[i]}") for i in rows]
        losses = train_textual_inversion(s.parts, bank, encode_latents(s.parts.vae, images), rows, prompts,
                                         TIConfig(steps=cfg["ti_steps"], batch=cfg["ti_batch"], lr=cfg["ti_lr"],
                                                  seed=seed))
        curves += [{"replicate": r, "train_seed": seed, "epoch": i, "loss": v} for i, v in enumerate(losses)]
        runs.append({"prompts": {c: s.plain_template.format(f"{ph} {x}")
                                 for c, ph, x in zip(s.classes, placeholders, s.subjects)},
                     "tokens": bank.state_dict_ti(), "seed": seed})
        bank.remove()
        s.ctx.progress(r + 1, cfg["replicates"], trained=f"run {r}", loss=sum(losses[-10:]) / len(losses[-10:]))
    info = {"images_consumed": 0, "labelled": k, "ti_loss_first10": json.dumps([c["loss"] for c in curves[:10]])}
    return runs, info, curves


def prepare_dct(s: Setup, spec: dict):
    from dct.jobs import load_guide
    from dct.methods.dct_token import train_dct_tokens

    info = {"images_consumed": 0.0, "labelled": 0}
    if spec["kind"] == "dct+prompt":
        t0 = time.perf_counter()
        sel = s.select_prompts()
        s.selection_s = time.perf_counter() - t0
        chosen = sel["chosen"]
        info.update(images_consumed=sel["images"] / len(s.classes),
                    chosen_templates=json.dumps({str(c): t for c, t in chosen.items()}))
    runs, curves, n_images = [], [], []
    for r in range(s.config["replicates"]):
        cfg = dct_config(s.config, spec, run=r)
        res_templates = s.res.templates if cfg.templates is None else cfg.templates
        templates = {c: (chosen[c],) if spec["kind"] == "dct+prompt" else tuple(res_templates) for c in s.classes}
        guide = load_guide(s.res.classifier, cfg.classifier_preprocessing, device=s.ctx.device)
        results = train_dct_tokens(s.parts, guide, s.classes, s.subjects, cfg, templates=templates)
        n_images += [x.n_images for x in results]
        curves += [{"replicate": r, "train_seed": cfg.seed, "class_id": h["class_id"], "epoch": h["epoch"],
                    "loss": h["loss"], "accuracy": h["accuracy"]} for x in results for h in x.history]
        eval_t = {c: (chosen[c] if spec["kind"] == "dct+prompt" else s.res.eval_template) for c in s.classes}
        runs.append({"prompts": {c: eval_t[c].format(f"{x.placeholder} {subj}")
                                 for c, x, subj in zip(s.classes, results, s.subjects)},
                     "tokens": {x.placeholder: x.vector for x in results}, "seed": cfg.seed})
        s.ctx.progress(r + 1, s.config["replicates"], trained=f"run {r}")
    s.to_eval_precision()
    info["images_consumed"] += sum(n_images) / len(n_images)
    info["train_epochs_mean"] = sum(len([c for c in curves if c["replicate"] == r]) for r in range(len(runs))) \
        / (len(runs) * len(s.classes))
    return runs, info, curves


PREPARE = {"plain": prepare_plain, "prompt-search": prepare_prompt_search, "guidance": prepare_guidance,
           "ti": prepare_ti, "dct": prepare_dct, "dct+prompt": prepare_dct}


def generate_run(s: Setup, run: dict) -> torch.Tensor:
    """One run's evaluation images, class by class, seed by seed (each class alone, so a guidance hook
    knows its class)."""
    from dct.generate import generate_images
    from dct.methods.guidance import guided_images
    from dct.token import ClassTokens

    bank = None
    if run.get("tokens"):
        names = list(run["tokens"])
        bank = ClassTokens(s.parts.tokenizer, s.parts.text_encoder, names,
                           init_vectors=torch.stack([run["tokens"][n] for n in names]))
    try:
        out = []
        for c in s.classes:
            prompts = [run["prompts"][c]] * len(s.eval_seeds)
            if run.get("scale"):
                out.append(guided_images(s.parts, s.guide, c, prompts, s.eval_seeds, scale=run["scale"], **s.sampling))
            else:
                out.append(generate_images(s.parts, prompts, s.eval_seeds, **s.sampling))
        return torch.cat(out)
    finally:
        if bank is not None:
            bank.remove()


def run(config: dict, ctx) -> CellOutput:
    from dct.eval.accuracy import classify, topk_correct
    from dct.methods.cost import cost_columns

    spec = method_spec(config["method"])
    s = Setup(config, ctx)
    started = time.perf_counter()
    with ctx.phase("train"):
        runs, info, curves = PREPARE[spec["kind"]](s, spec)
    one_time = time.perf_counter() - started
    n_c, n_s, n_r = len(s.classes), len(s.eval_seeds), config["replicates"]
    with ctx.phase("eval"):
        s.to_eval_precision()
        t0 = time.perf_counter()
        images = []
        for r, one in enumerate(runs):
            images.append(generate_run(s, one))
            ctx.progress(r + 1, len(runs) + 1, evaluating=f"run {r}")
        gen_s = time.perf_counter() - t0
        n_generated = sum(len(x) for x in images)
        plain_prompts = [s.plain_template.format(x) for x in s.subjects for _ in s.eval_seeds]
        plain = plain_images(s.parts, plain_prompts, s.eval_seeds * n_c, s.sampling,
                             {"model": config["model"], "world": config.get("world"), "eval_precision": EVAL_PRECISION},
                             ctx)
        targets = torch.tensor(s.classes).repeat_interleave(n_s)
        tok = torch.stack([torch.as_tensor(topk_correct(classify(s.judge, x), targets, 1)).reshape(n_c, n_s)
                           for x in images], 1).numpy()  # (C, R', S)
        if tok.shape[1] == 1 and n_r > 1:  # a deterministic method: its one run is every run
            tok = tok.repeat(n_r, axis=1)
        pl = topk_correct(classify(s.judge, plain), targets, 1).reshape(n_c, 1, n_s)
    metrics = {"method": config["method"], "method_kind": spec["kind"], "domain": s.domain,
               "n_classes": n_c, "n_runs": n_r, "runs_trained": len(runs), "eval_images_per_class": n_s,
               "eval_images": n_generated, "eval_seed_first": s.eval_seeds[0], "judge": s.judge.spec,
               **accuracy_metrics(tok, pl, s.classes),
               "prompts": json.dumps([{str(c): p for c, p in one["prompts"].items()} for one in runs]),
               "train_seeds_actual": json.dumps([one.get("seed") for one in runs]),
               **{k: v for k, v in info.items() if k not in ("images_consumed", "labelled")}}
    metrics.update(pair_metrics(s, tok, pl))
    # per class and token: what is shared by the runs (a prompt search) once, plus one run's training
    one_time_per_class = (s.selection_s + (one_time - s.selection_s) / len(runs)) / n_c
    metrics.update(cost_columns(one_time_s=one_time_per_class, s_per_image=gen_s / n_generated,
                                images_consumed=info["images_consumed"], labelled_images=info["labelled"]))
    metrics.update(one_time_s=one_time, selection_s=s.selection_s)
    # run r of every method pairs with run r of the baseline (bench.contrasts matches on these)
    stored = {"classes": s.classes, "eval_seeds": s.eval_seeds, "train_seeds": [r * REPLICATE_STRIDE for r in range(n_r)],
              "token": pack(tok), "plain": pack(pl), "extra": {}}
    metrics["outcomes"] = json.dumps(stored, separators=(",", ":"))
    save_examples(ctx.out_dir, images[0], plain, s.classes, s.eval_seeds)
    return CellOutput(metrics=metrics, curves=curves)


def pair_metrics(s: Setup, tok, pl) -> dict:
    """Accuracy on the world's ambiguous pair (two classes whose names share a word), method and plain."""
    from dct.eval.hierarchical import hierarchical_ci, paired_difference
    from dct.jobs import world_manifest

    manifest = world_manifest() if s.config["model"] is None else None
    pair = (manifest or {}).get("ambiguous_pair", {}).get("classes", [])
    idx = [s.classes.index(c) for c in pair if c in s.classes]
    if len(idx) < 2:
        return {}
    a, p, g = hierarchical_ci(tok[idx]), hierarchical_ci(pl[idx]), paired_difference(tok[idx], pl[idx])
    return {"pair_classes": json.dumps(pair), "pair_acc": a["acc"], "pair_acc_lo": a["lo"], "pair_acc_hi": a["hi"],
            "pair_plain_acc": p["acc"], "pair_gain": g["diff"], "pair_gain_lo": g["lo"], "pair_gain_hi": g["hi"]}


def check(config: dict) -> None:
    from dct.classifiers.check import check_resolvable

    for spec in (config["classifier"], config["judge"]):
        if spec is not None:
            check_resolvable(spec)


WEIGHTS = {"plain": 1, "prompt-search": 4, "guidance": 12, "ti": 3, "dct": 10, "dct+prompt": 12}


def weight(config: dict) -> float:
    spec = method_spec(config["method"])
    w = WEIGHTS[spec["kind"]] * (2 if spec.get("preset") == "paper" else 1)
    trained = spec["kind"] in ("ti", "dct", "dct+prompt")
    return float(w * (config["replicates"] if trained else 1))


register_cell("methods", keys=KEYS, validate=validate, run=run, check=check, weight=weight)
