"""End-to-end jobs behind `dct train` and `dct generate`, and the defaults of the embedded tiny world.

Everything that can be checked cheaply (options, classifier spec, class index or name, model folder,
output path) is checked before the pipeline is loaded or any image is rendered.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import PAPER_EVAL_TEMPLATE, PAPER_TEMPLATES, TrainConfig
from .errors import ConfigError


@dataclass
class Resolved:
    """A config with every None default filled in (model, classifier, templates, class names)."""

    model: str
    classifier: str | None  # None only for a real model without --classifier (generation needs none)
    templates: tuple[str, ...]
    eval_template: str
    class_names: list[str] | None  # prompt names by class index; None = the classifier's labels
    world: bool
    judge: str | None = None  # the world's independent judge (None for a real model: give one)
    domain: str | None = None  # the tiny world's image domain that the templates name


def world_manifest() -> dict | None:
    try:
        from .world.paths import load_manifest

        return load_manifest()
    except (ImportError, FileNotFoundError):
        return None


def resolve_defaults(cfg: TrainConfig) -> Resolved:
    """Fill the None defaults. In the tiny world, prompts use the domain word of the guiding classifier
    ("a handwritten {}" for world:guide-handwritten) unless templates are given."""
    from .pipeline import resolve_model_source

    if cfg.model is not None:
        return Resolved(model=resolve_model_source(cfg.model), classifier=cfg.classifier,
                        templates=cfg.templates or PAPER_TEMPLATES,
                        eval_template=cfg.eval_template or PAPER_EVAL_TEMPLATE, class_names=None, world=False)
    manifest = world_manifest()
    if manifest is None:
        raise ConfigError("no --model given and the embedded tiny world is missing; build it with "
                          "`dct world build` or give a Stable Diffusion folder or hub id")
    from .world.paths import default_pipeline_dir

    guides = manifest["default_guide"]
    domain = next((d for d, name in guides.items() if cfg.classifier == f"world:{name}"), manifest["domains"][0])
    dct_template = manifest["templates"]["dct"][domain]
    return Resolved(model=str(default_pipeline_dir()), classifier=cfg.classifier or f"world:{guides[domain]}",
                    templates=cfg.templates or (dct_template,), eval_template=cfg.eval_template or dct_template,
                    class_names=list(manifest["classes"]), world=True,
                    judge=f"world:{manifest['default_judge']}", domain=domain)


_TYPE_WORDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
               "None": "none (leave it out)", "tuple": "a list"}


def _type_ok(value, annotation: str) -> bool:
    for part in (p.strip() for p in annotation.split("|")):
        head = part.split("[", 1)[0]
        if head not in _TYPE_WORDS:  # a type this check does not know (a Literal, a new class): TrainConfig decides
            return True
        if head == "None" and value is None:
            return True
        if head == "bool" and isinstance(value, bool):
            return True
        if head == "int" and isinstance(value, int) and not isinstance(value, bool):
            return True
        if head == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if head == "str" and isinstance(value, str):
            return True
        if head == "tuple" and isinstance(value, (list, tuple)):
            return True
    return False


def check_finite(values: dict, where: str) -> None:
    """NaN or infinite numbers (TOML and --guidance accept 'nan' and 'inf') would train or render garbage."""
    import math

    for key, value in values.items():
        items = value if isinstance(value, (list, tuple)) else [value]
        for v in items:
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{where}{key}={value!r} is not accepted: a finite number")


def check_train_values(values: dict, where: str = "") -> None:
    """Types of TrainConfig values, checked before TrainConfig compares them (`lr = "fast"` would
    otherwise fail with a TypeError deep inside its validation)."""
    import dataclasses

    types = {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}
    for key, value in values.items():
        if key in types and not _type_ok(value, types[key]):
            accepted = " or ".join(dict.fromkeys(_TYPE_WORDS.get(p.strip().split("[", 1)[0], p.strip())
                                                 for p in types[key].split("|")))
            raise ConfigError(f"{where}{key}={value!r} is not accepted: {accepted}")
    check_finite(values, where)


def read_preset_file(path: Path) -> dict:
    """The values of a preset TOML/JSON file, with a malformed file reported by name and line."""
    import tomllib

    try:
        text = path.read_text()
        values = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"preset file {str(path)!r} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: "
                          f"{e}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"preset file {str(path)!r} holds a {type(values).__name__}, not a table of settings")
    values = values.get("train", values)
    if not isinstance(values, dict):
        raise ConfigError(f"preset file {str(path)!r}: [train] must be a table of settings")
    return values


def load_train_config(preset: str, **overrides) -> TrainConfig:
    """dct.config.load_preset, with every value's type and finiteness checked first, so a bad preset file
    or option is one clear error naming the file, the key and what is accepted."""
    from .config import PRESETS, load_preset

    given = {k: v for k, v in overrides.items() if v is not None}
    if preset not in PRESETS and Path(preset).is_file():
        check_train_values(read_preset_file(Path(preset)), f"preset file {preset!r}: ")
    check_train_values(given)
    try:
        cfg = load_preset(preset, **overrides)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"preset {preset!r}: {e}") from None
    check_finite(cfg.to_dict(), "")
    return cfg


def _need_classifier(spec: str | None) -> str:
    if spec is None:
        raise ConfigError("a real model needs --classifier (e.g. 'hf:google/vit-large-patch16-224' or a local "
                          "folder); only the embedded tiny world has a default classifier")
    return spec


def prompt_name(labels: list[str], index: int, rule: str = "reference") -> str:
    """The class name used in prompts, from an ImageNet-style 'a, b, c' label.

    "reference" (the reference's run.py): the first comma-separated synonym, lower-cased, "_" -> " "
    ("Black_footed_Albatross" -> "black footed albatross"); "first_synonym": the first synonym as written.
    """
    first = labels[index].split(",")[0]
    if rule == "reference":
        return " ".join(first.lower().split("_"))
    if rule == "first_synonym":
        return first.strip()
    raise ConfigError(f"class name rule {rule!r} is not accepted: use 'reference' or 'first_synonym'")


def load_guide(spec: str, preprocessing: str = "model", device="cpu"):
    """The classifier that guides training, with the preprocessing a config's `classifier_preprocessing`
    names (the reference protocol judges with the guide exactly as it trained)."""
    from .classifiers import load_classifier
    from .classifiers.preprocess import apply_preprocessing

    return apply_preprocessing(load_classifier(spec, device=device), preprocessing)


def check_unseen_seeds(cfg: TrainConfig, seeds: list[int], what: str = "evaluation",
                       latent_seeds: list[int] | None = None) -> None:
    """Refuse `seeds` that the training latents of `cfg` were drawn from (they would re-judge training
    images: the generator of seed s draws the same first latent in training and in evaluation).
    `latent_seeds`: the seeds a sidecar recorded, which take precedence over the config's."""
    trained = list(latent_seeds) if latent_seeds is not None else cfg.latent_seeds()
    seen = sorted(set(trained) & set(seeds))
    if seen:
        raise ConfigError(f"{what} seeds {seen[:6]}{'...' if len(seen) > 6 else ''} are seeds the token's "
                          f"training latents were drawn from (seed {cfg.seed}, "
                          f"{'re-seeded every epoch' if cfg.reseed_each_epoch else f'{cfg.max_epochs} epochs'}); "
                          f"choose seeds above {max(trained)}, e.g. --seeds 70000-70031")


def environment() -> dict:
    import diffusers
    import transformers

    return {"torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"}


def parse_classes(text: str) -> list[int | str] | str:
    """'7', 'seven', '0-4', '1,3,seven' or 'all' -> a list of indices/names, or 'all'."""
    text = text.strip()
    if text == "all":
        return "all"
    out: list[int | str] = []
    for part in (p.strip() for p in text.split(",")):
        a, sep, b = part.partition("-")
        if sep and a.isdigit() and b.isdigit():
            if int(b) < int(a):
                raise ConfigError(f"class range {part!r} is reversed: write e.g. '0-4'")
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part) if part.isdigit() else part)
    if not out:
        raise ConfigError(f"classes {text!r} name no class: give an index, a name, a range '0-4', a list or 'all'")
    return out


def train_to_file(cfg: TrainConfig, classes: list[int | str] | str, out: str | Path, *, device: str = "cpu",
                  progress: bool = True, overwrite: bool = False, resume: bool = False) -> tuple[Path, dict]:
    """Train the tokens of `classes` and save them (textual-inversion safetensors + JSON sidecar).

    One class gives a single-token file. Several classes train together in shared rollouts and give a
    token bank (`{<placeholder><class>: vector}`); each class is also saved the moment it stops, under
    `<out>.classes/`, so an interrupted run resumes with only the unfinished classes (same config hash and,
    on the tiny world, the same build of it).

    The whole training state is written to `<out>.resume/` after every epoch. Ctrl-C saves the best
    token(s) so far to `<out stem>.best-so-far.safetensors` and raises TrainingInterrupted; `resume=True`
    continues from the state exactly where it stopped. The state is removed once the token is saved.
    """
    from .classifiers import resolve_class
    from .device import resolve_device
    from .outputs import ensure_writable_dir
    from .pipeline import load_parts
    from .token import load_tokens
    from .train import precision_dtype, train_tokens

    out = Path(out)
    if out.suffix != ".safetensors":
        raise ConfigError(f"output {str(out)!r} must end in .safetensors (diffusers textual-inversion format)")
    if out.exists() and not overwrite:
        raise ConfigError(f"output {str(out)!r} exists; pass --overwrite or choose another path")
    state_dir = out.with_suffix(".resume")
    if resume and not (state_dir / "state.json").is_file():
        raise ConfigError(f"nothing to resume: {str(state_dir)!r} holds no training state; run without --resume")
    if not resume and state_dir.exists() and not overwrite:
        raise ConfigError(f"{str(state_dir)!r} holds an interrupted training of {str(out)!r}: continue it with "
                          "--resume, or start again with --overwrite")
    device = resolve_device(device)
    check_finite(cfg.to_dict(), "")
    ensure_writable_dir(out.parent, "output folder of --out")
    res = resolve_defaults(cfg)
    classifier = load_guide(_need_classifier(res.classifier), cfg.classifier_preprocessing, device=device)
    names = res.class_names or classifier.labels
    wanted = range(len(names)) if classes == "all" else classes
    targets = list(dict.fromkeys(resolve_class(classifier, c) for c in wanted))
    for t in targets:
        if t >= len(names):
            raise ConfigError(f"class {t} has no name in this world ({len(names)} classes)")
    bank = len(targets) > 1
    if bank:
        ensure_writable_dir(out.with_suffix(".classes"), "the bank's per-class folder")
    placeholders = {t: f"{cfg.placeholder}{t}" if bank else cfg.placeholder for t in targets}
    parts_dir = out.with_suffix(".classes")
    world_id = None
    if res.world:
        from .world.paths import world_fingerprint

        world_id = world_fingerprint()  # a token trained on another build of the world is not resumed
    done: dict[int, dict] = {}
    if bank and parts_dir.is_dir():  # also with overwrite: finished classes of this config are still good
        for f in sorted(parts_dir.glob("class-*.safetensors")):
            vec, meta = load_tokens(f)
            if (meta.get("config_hash") == cfg.hash() and meta.get("class_index") in targets
                    and meta.get("world_fingerprint") == world_id):
                done[meta["class_index"]] = {"vector": vec[placeholders[meta["class_index"]]], "meta": meta}
    todo = [t for t in targets if t not in done]
    common = {"format": "dct-token/1", "model": res.model, "world": res.world, "world_fingerprint": world_id,
              "classifier": res.classifier,
              "templates": list(res.templates), "eval_template": res.eval_template, "config": cfg.to_dict(),
              "config_hash": cfg.hash(), "latent_seeds": cfg.latent_seeds(), "environment": environment()}
    def class_meta(result) -> dict:
        return {**common, "token": result.placeholder, "class_index": result.target,
                "class_name": result.class_name, "result": result.summary(), "history": result.history,
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    def save_class(result) -> None:
        if bank:
            meta = class_meta(result)
            # the other classes go on training: a part that cannot be saved is rescued with a warning
            _save_or_rescue(parts_dir / f"class-{result.target}.safetensors", {result.placeholder: result.vector}, meta,
                            fatal=False)
            done[result.target] = {"vector": result.vector, "meta": meta}

    from .train import TrainState

    identity = {"config_hash": cfg.hash(), "world_fingerprint": world_id, "out": str(out)}
    state = None
    if resume:
        state = TrainState.load(state_dir)
        got = {k: state.meta.get(k) for k in identity}
        if got != identity:
            raise ConfigError(f"the training state in {str(state_dir)!r} is of another run ({got}); this one is "
                              f"{identity}: give the same options as the interrupted run, or --overwrite")
        todo = [c["target"] for c in state.meta["classes"]]
    last: list[TrainState] = []

    def checkpoint(st: TrainState) -> None:
        st.meta.update(identity)
        with _sigint_deferred():  # a Ctrl-C while writing must not leave half a state
            st.save(state_dir)
            last[:] = [st]

    results = []
    if todo:
        parts = load_parts(res.model, device=device, dtype=precision_dtype(cfg.precision))
        try:
            results = train_tokens(parts, classifier, todo, [prompt_name(names, t, cfg.class_name_rule) for t in todo],
                                   cfg, templates=res.templates, placeholders=[placeholders[t] for t in todo],
                                   on_class_done=save_class, progress=progress, on_checkpoint=checkpoint,
                                   resume=state)
        except KeyboardInterrupt:
            raise _interrupted(out, state_dir, last[0] if last else state, todo, placeholders, common) from None
    if state_dir.exists():
        import shutil

        shutil.rmtree(state_dir, ignore_errors=True)  # finished: the saved token replaces the state
    if not bank:
        sidecar = class_meta(results[0])
        return _save_or_rescue(out, {results[0].placeholder: results[0].vector}, sidecar), sidecar
    sidecar = {**common, "tokens": {placeholders[t]: {k: done[t]["meta"][k] for k in
                                                      ("class_index", "class_name", "result", "history")}
                                    for t in targets},
               "resumed_classes": sorted(set(targets) - set(todo)),
               "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return _save_or_rescue(out, {placeholders[t]: done[t]["vector"] for t in targets}, sidecar), sidecar


def _interrupted(out: Path, state_dir: Path, state, todo: list[int], placeholders: dict, common: dict):
    """The error for Ctrl-C during training, after saving the best token(s) so far next to `out`."""
    from .errors import TrainingInterrupted

    if state is None:
        return TrainingInterrupted("training interrupted before its first epoch ended: nothing to keep")
    best = out.with_name(out.stem + ".best-so-far.safetensors")
    vectors = {placeholders[t]: state.tensors[f"kept.{c['row']}"] for t, c in zip(todo, state.meta["classes"])}
    side = {**common, "interrupted_after_epoch": state.epoch - 1,
            "classes": {str(c["target"]): {k: c[k] for k in ("best_epoch", "n_images", "history")}
                        for c in state.meta["classes"]}}
    with _sigint_deferred():
        saved = _save_or_rescue(best, vectors, side)
    return TrainingInterrupted(
        f"training interrupted (Ctrl-C) after {state.epoch} epoch(s): the best token so far is saved in "
        f"{str(saved)!r}; continue with the same command and --resume (state in {str(state_dir)!r})")


class _sigint_deferred:
    """Hold Ctrl-C while a file is written, then deliver it (main thread only; elsewhere a no-op)."""

    def __enter__(self):
        import signal
        import threading

        self._old, self._hit = None, False
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, lambda *a: setattr(self, "_hit", True))
        return self

    def __exit__(self, *exc):
        import signal

        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            if self._hit:
                raise KeyboardInterrupt
        return False


def _save_or_rescue(path: Path, tokens: dict, sidecar: dict, *, fatal: bool = True) -> Path:
    """Save a trained result; if that fails after all (disk full, folder removed), save it to the rescue
    folder and say where, so minutes or hours of training are never lost to a traceback."""
    from .errors import DCTError
    from .outputs import rescue_path
    from .token import save_tokens

    try:
        return save_tokens(path, tokens, sidecar)
    except OSError as e:
        rescued = save_tokens(rescue_path(path), tokens, sidecar)
        message = (f"could not save {str(path)!r} ({e.strerror or e}); the trained token is saved in "
                   f"{str(rescued)!r} (and its sidecar next to it)")
        if fatal:
            raise DCTError(message) from None
        from .clikit import warn

        warn(message)
        return rescued


def sidecar_json(sidecar: dict) -> str:
    return json.dumps(sidecar, indent=2, default=str)


def run_generate(*, out: Path, token: Path | None, cls: int | str | None, prompt: str | None, plain: bool,
                 model: str | None, seeds: list[int], scheduler: str, steps: int, guidance: float,
                 device: str = "cpu") -> list[Path]:
    """Render token prompts (and optionally the plain prompts) for fixed seeds into `out`.

    A token bank renders every class it holds unless `cls` picks one.
    """
    from .device import resolve_device
    from .generate import generate_images, save_images
    from .outputs import ensure_writable_dir
    from .pipeline import load_parts
    from .token import ClassTokens, check_vectors, load_tokens

    if token is None and prompt is None and cls is None:
        raise ConfigError("give --token, --class or --prompt")
    device = resolve_device(device)
    check_finite({"--guidance": guidance}, "")
    vectors, meta = load_tokens(token) if token is not None else (None, {})
    res = resolve_defaults(TrainConfig(model=model or token_model(meta), classifier=meta.get("classifier")))
    template = meta.get("eval_template") or res.eval_template
    # {class index: (placeholder or None, prompt name or None)}
    by_class: dict[int | str, tuple[str | None, str | None]] = {}
    if vectors is not None and "tokens" in meta:
        by_class = {m["class_index"]: (ph, m.get("class_name")) for ph, m in meta["tokens"].items()}
    elif vectors is not None and "class_index" in meta:
        by_class = {meta["class_index"]: (next(iter(vectors)), meta.get("class_name"))}
    elif vectors is not None and prompt is None:
        # a textual-inversion file dct did not write: the user names the class
        if len(vectors) > 1:
            raise ConfigError(f"token file {str(token)!r} holds {len(vectors)} tokens {sorted(vectors)} and no sidecar "
                              f"naming their classes; use --prompt with one of these token strings")
        if cls is None:
            raise ConfigError(f"token file {str(token)!r} has no sidecar ({sidecar_name(token)}) naming its class: "
                              "give --class (an index or name) or --prompt")
    if cls is not None:
        index, name = _generate_class(res, cls)
        if by_class and index not in by_class:
            raise ConfigError(f"class {index} is not in token file {str(token)!r}; it holds classes {sorted(by_class)}")
        ph = by_class[index][0] if by_class else (next(iter(vectors)) if vectors is not None else None)
        by_class = {index: (ph, name)}
    ensure_writable_dir(out, "--out folder")
    parts = load_parts(res.model, device=device)
    if vectors is not None:
        check_vectors(vectors, str(token), parts.text_encoder.get_input_embeddings().embedding_dim)
        ClassTokens(parts.tokenizer, parts.text_encoder, list(vectors), init_vectors=torch.stack(list(vectors.values())))
    jobs: dict[str, str] = {}
    if prompt is not None:
        jobs["prompt"] = prompt
    for index, (ph, name) in by_class.items():
        name = name or prompt_name(res.class_names, index)
        if ph is not None and prompt is None:
            jobs[f"token-class{index}"] = template.format(f"{ph} {name}")
        if plain or ph is None:
            jobs[f"plain-class{index}"] = template.format(name)
    out = Path(out)
    files: list[Path] = []
    for kind, text in jobs.items():
        images = generate_images(parts, [text] * len(seeds), seeds, scheduler=scheduler, steps=steps,
                                 guidance=guidance)
        files += save_images(images, out, [f"{kind}-seed{s:04d}" for s in seeds])
    (out / "prompts.json").write_text(json.dumps({"prompts": jobs, "seeds": seeds, "model": res.model,
                                                  "scheduler": scheduler, "steps": steps, "guidance": guidance},
                                                 indent=2))
    return files


def sidecar_name(token: Path) -> str:
    from .token import sidecar_path

    return str(sidecar_path(token))


def _generate_class(res: Resolved, cls: int | str) -> tuple[int | str, str]:
    """(key, prompt name) of --class: an index or name of the world's classes; with a real model (no
    class list without a classifier) the class as words, put in the prompt as they are."""
    if res.class_names is not None:
        index = resolve_world_class(res.class_names, cls)
        return index, prompt_name(res.class_names, index)
    if str(cls).isdigit():
        raise ConfigError(f"--class {cls!r}: with --model {res.model!r} a class index has no name to put in the "
                          "prompt; give the class as words (e.g. --class goldfinch) or a --token whose sidecar "
                          "names it")
    return str(cls), str(cls)


def token_model(meta: dict) -> str | None:
    """The model a token was trained on, unless that was the embedded world (whose path may move)."""
    if not meta or meta.get("world") or not meta.get("model"):
        return None
    return meta["model"]


def resolve_world_class(names: list[str], cls: int | str) -> int:
    from .errors import ClassNotFoundError

    if isinstance(cls, int) or str(cls).isdigit():
        index = int(cls)
        if not 0 <= index < len(names):
            raise ClassNotFoundError(f"class {index} is out of range: this world has classes 0..{len(names) - 1}")
        return index
    lowered = [n.lower() for n in names]
    if str(cls).lower() in lowered:
        return lowered.index(str(cls).lower())
    raise ClassNotFoundError(f"class {cls!r} is unknown: accepted names are {names}")
