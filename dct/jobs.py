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
    classifier: str
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
        return Resolved(model=resolve_model_source(cfg.model), classifier=_need_classifier(cfg.classifier),
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


def _need_classifier(spec: str | None) -> str:
    if spec is None:
        raise ConfigError("a real model needs --classifier (e.g. 'hf:google/vit-large-patch16-224' or a local "
                          "folder); only the embedded tiny world has a default classifier")
    return spec


def prompt_name(labels: list[str], index: int) -> str:
    """The class name used in prompts: the first synonym of an ImageNet-style 'a, b, c' label."""
    return labels[index].split(",")[0].strip()


def environment() -> dict:
    import diffusers
    import transformers

    return {"torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"}


def train_to_file(cfg: TrainConfig, cls: int | str, out: str | Path, *, device: str = "cpu",
                  progress: bool = True, overwrite: bool = False) -> tuple[Path, dict]:
    """Train the token of class `cls` and save it (textual-inversion safetensors + JSON sidecar)."""
    from .classifiers import load_classifier, resolve_class
    from .pipeline import load_parts
    from .token import save_tokens
    from .train import precision_dtype, train_token

    out = Path(out)
    if out.suffix != ".safetensors":
        raise ConfigError(f"output {str(out)!r} must end in .safetensors (diffusers textual-inversion format)")
    if out.exists() and not overwrite:
        raise ConfigError(f"output {str(out)!r} exists; pass --overwrite or choose another path")
    res = resolve_defaults(cfg)
    classifier = load_classifier(res.classifier, device=device)
    target = resolve_class(classifier, cls)
    names = res.class_names or classifier.labels
    if target >= len(names):
        raise ConfigError(f"class {target} has no name in this world ({len(names)} classes)")
    class_name = prompt_name(names, target)
    parts = load_parts(res.model, device=device, dtype=precision_dtype(cfg.precision))
    history: list[dict] = []
    result = train_token(parts, classifier, target, class_name, cfg, templates=res.templates,
                         on_epoch=history.append, progress=progress)
    sidecar = {
        "format": "dct-token/1",
        "token": cfg.placeholder,
        "class_index": target,
        "class_name": class_name,
        "model": res.model,
        "world": res.world,
        "classifier": res.classifier,
        "templates": list(res.templates),
        "eval_template": res.eval_template,
        "config": cfg.to_dict(),
        "config_hash": cfg.hash(),
        "result": result.summary(),
        "history": history,
        "environment": environment(),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path = save_tokens(out, {cfg.placeholder: result.vector}, sidecar)
    return path, sidecar


def sidecar_json(sidecar: dict) -> str:
    return json.dumps(sidecar, indent=2, default=str)


def run_generate(*, out: Path, token: Path | None, cls: int | str | None, prompt: str | None, plain: bool,
                 model: str | None, seeds: list[int], scheduler: str, steps: int, guidance: float,
                 device: str = "cpu") -> list[Path]:
    """Render the token prompt (and optionally the plain prompt) for fixed seeds into `out`."""
    from .generate import generate_images, save_images
    from .pipeline import load_parts
    from .token import ClassTokens, load_tokens

    meta: dict = {}
    vectors = None
    if token is not None:
        vectors, meta = load_tokens(token)
    if token is None and prompt is None and cls is None:
        raise ConfigError("give --token, --class or --prompt")
    cfg = TrainConfig(model=model or token_model(meta))
    res = resolve_defaults(cfg)
    names = res.class_names
    if cls is None and meta:
        cls = meta["class_index"]
    if cls is not None:
        if names is None:
            from .classifiers import load_classifier, resolve_class

            classifier = load_classifier(meta.get("classifier") or res.classifier)
            index, names = resolve_class(classifier, cls), classifier.labels
        else:
            index = resolve_world_class(names, cls)
        class_name = prompt_name(names, index)
    template = meta.get("eval_template") or res.eval_template
    parts = load_parts(res.model, device=device)
    jobs: dict[str, str] = {}
    if vectors is not None:
        placeholders = list(vectors)
        ClassTokens(parts.tokenizer, parts.text_encoder, placeholders,
                    init_vectors=torch.stack([vectors[p] for p in placeholders]))
        jobs["token"] = prompt or template.format(f"{placeholders[0]} {class_name}")
    elif prompt is not None:
        jobs["prompt"] = prompt
    if plain or (vectors is None and prompt is None):
        jobs["plain"] = template.format(class_name)
    out = Path(out)
    files: list[Path] = []
    for kind, text in jobs.items():
        images = generate_images(parts, [text] * len(seeds), seeds, scheduler=scheduler, steps=steps,
                                 guidance=guidance)
        names_out = [f"{kind}-seed{s:04d}" for s in seeds]
        files += save_images(images, out, names_out)
    (out / "prompts.json").write_text(json.dumps({"prompts": jobs, "seeds": seeds, "model": res.model,
                                                  "scheduler": scheduler, "steps": steps, "guidance": guidance},
                                                 indent=2))
    return files


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
