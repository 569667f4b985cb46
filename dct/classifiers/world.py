"""`world:<name>`: a classifier of the embedded tiny world, by name (e.g. world:guide, world:judge)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from dct.errors import DCTError, ModelNotFoundError

from .base import Classifier


def load_world(target: str, *, trust_pickle: bool = False) -> Classifier:
    try:
        # imported here: the registry must work without the world package, and tests substitute it
        paths = importlib.import_module("dct.world.paths")
    except ImportError as e:
        raise ModelNotFoundError(f"world:{target}: the tiny world is not available ({e})") from None
    try:
        folder = Path(paths.classifier_dir(target))
    except DCTError:
        raise  # the world's own message already lists its classifier names
    except (KeyError, ValueError) as e:
        raise ModelNotFoundError(f"world:{target}: no such world classifier ({e})") from None
    if not folder.is_dir():
        raise ModelNotFoundError(f"world:{target}: classifier folder {folder} does not exist (build the world first)")

    config = folder / "config.json"
    if config.is_file() and "architecture" in json.loads(config.read_text()):
        from .timm_models import from_folder

        classifier = from_folder(folder, spec=f"world:{target}")
    elif (folder / "preprocessor_config.json").is_file():
        from .hf_models import load_hf

        classifier = load_hf(str(folder), trust_pickle=trust_pickle)
        classifier.spec = f"world:{target}"
    else:
        raise ModelNotFoundError(f"world:{target}: {folder} holds neither a timm model (config.json with "
                                 "'architecture') nor a transformers one (preprocessor_config.json)")
    classifier.source = f"tiny world {target!r}: {classifier.source}"
    classifier.info["world_name"] = target
    return classifier
