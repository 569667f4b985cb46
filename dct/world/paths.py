"""Where the tiny world lives, and its manifest.

The committed world is `dct/world/assets/tiny/`; the environment variable DCT_WORLD points every
loader at another world folder (for example a fresh build) without code changes.

world.json (written by `dct world build`, its "check" section by `dct world check --record`):
    format, name, description, image_size
    classes            index -> class name ("zero" .. "nine")
    domains            ["handwritten", "printed"]
    pipeline           the diffusers folder, relative to the world ("sd")
    confusers          {class: class whose name its noisy plain captions use}; confuser_cycles
    ambiguous_pair     {classes: [a, b], names, word, note}: the word names[a] is said of both
    templates          dct[domain] ("a handwritten {}", {} -> "<token> seven" or "seven"), plain, clean,
                       generic[domain], negative
    caption_mix        shares of empty / generic / plain / clean captions and the confuser noise
    default_guide      {domain: classifier name}; default_judge: classifier name
    classifiers        {name: path, library, architecture, role, domains, params, seed, heldout_accuracy, ...}
    heldout            seed, fraction, handwritten_indices (into sklearn load_digits), printed stream
    vae, diffusion, fp16_roundtrip   build-time measurements
    recipe, seeds, build (seconds per stage, date, versions), size_bytes
    check              measured numbers (see dct.world.check), null until checked
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

from ..errors import ConfigError, ModelNotFoundError

ENV_VAR = "DCT_WORLD"
CLASSIFIER_NAMES = ("guide-handwritten", "guide-printed", "judge")


def committed_world_dir() -> Path:
    return Path(__file__).resolve().parent / "assets" / "tiny"


def default_world_dir() -> Path:
    """The world folder: $DCT_WORLD if set, else the committed `dct/world/assets/tiny/`."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else committed_world_dir()


def default_pipeline_dir(world: str | Path | None = None) -> Path:
    return Path(world or default_world_dir()) / "sd"


def classifier_dir(name: str, world: str | Path | None = None) -> Path:
    """The folder of one of the world's classifiers: 'guide-handwritten', 'guide-printed' or 'judge'."""
    if name not in CLASSIFIER_NAMES:
        raise ConfigError(f"world classifier {name!r} does not exist: use one of {CLASSIFIER_NAMES}")
    return Path(world or default_world_dir()) / "classifiers" / name


def manifest_path(world: str | Path | None = None) -> Path:
    return Path(world or default_world_dir()) / "world.json"


def load_manifest(world: str | Path | None = None) -> dict:
    path = manifest_path(world)
    if not path.is_file():
        hint = f" (is ${ENV_VAR} set to a world folder?)" if os.environ.get(ENV_VAR) else \
            " (build one with `dct world build`)"
        raise ModelNotFoundError(f"no world manifest at {path}{hint}")
    return json.loads(path.read_text())


@lru_cache(maxsize=8)
def _fingerprint(root: Path, stamp: tuple) -> str:
    """Hash of the files named in `stamp` ((path, size, mtime) sorted by path); cached while none changes."""
    digest = hashlib.sha256()
    for path, _, _ in stamp:
        digest.update(str(Path(path).relative_to(root)).encode() + b"\0")
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:12]


def world_fingerprint(world: str | Path | None = None) -> str:
    """'<name>@<12 hex>': a hash of every model and tokenizer file of the world (not world.json, whose
    check section changes without the models changing). Bench cells on the default world carry it in
    their config, so a rebuilt world never resumes a grid from cells measured on the old one."""
    root = Path(world or default_world_dir()).resolve()
    name = load_manifest(root).get("name", "world")
    files = [p for p in root.rglob("*") if p.is_file() and p.name != "world.json"]
    stamp = tuple(sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))
    return f"{name}@{_fingerprint(root, stamp)}"


def world_identity(stated: str | None = None) -> str:
    """The default world's fingerprint, for a cell's config; `stated` (from a stored config) must match it."""
    current = world_fingerprint()
    if stated is not None and stated != current:
        raise ConfigError(f"world={stated!r}: this cell was set up for another tiny world; the default world is "
                          f"now {current!r} (DCT_WORLD or the committed one)")
    return current
