"""timm classifiers: registry names (weights from the local hub cache, or a download when online), a
registry architecture with a local weights file, or a timm local-dir folder (config.json + weights)."""

from __future__ import annotations

import difflib
import json
import pickle
from pathlib import Path

from dct.errors import ClassifierSpecError, ModelNotFoundError, UnsafeWeightsError

from .base import Classifier, TimmNet
from .labels import generic_labels, imagenet_labels
from .preprocess import from_timm
from .spec import existing_dir, existing_file, local_path, looks_like_path, split_weights
from .weights import hf_hub_online, host_reachable, load_state_dict

_LOCAL_DIR = "local-dir:"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def load_timm(target: str, *, trust_pickle: bool = False) -> Classifier:
    if target.startswith(_LOCAL_DIR):
        return from_folder(existing_dir(target[len(_LOCAL_DIR):], "timm local-dir folder"))
    if target.startswith("hf-hub:"):
        raise ClassifierSpecError(f"timm:{target}: timm's hf-hub: source is not supported here (it needs the "
                                  "network); download the repo and pass its folder as timm:/path/to/folder")
    name, weights = split_weights(target)
    if weights is not None:
        return _from_file(name, existing_file(weights, "timm weights file"), trust_pickle)
    if local_path(target).is_dir() or looks_like_path(target):
        return from_folder(existing_dir(target, "timm local-dir folder"))
    return _from_registry(name)


def _check_name(name: str) -> None:
    import timm
    from timm.models import split_model_name_tag

    arch, _ = split_model_name_tag(name)
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=5)
        hint = f"; close names: {', '.join(close)}" if close else ""
        raise ModelNotFoundError(f"timm has no model named {arch!r}{hint}")


def _pretrained_cfg(name: str):
    from timm.models import get_pretrained_cfg

    try:
        return get_pretrained_cfg(name)
    except RuntimeError as e:  # an unknown pretrained tag
        raise ModelNotFoundError(f"timm:{name}: {e}") from None


def _cached_weights(cfg) -> Path | None:
    """A copy of the registry weights already on disk (hub cache or torch hub cache), if any."""
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo = cfg.hf_hub_id.split("@")[0]
        for filename in ([cfg.hf_hub_filename] if cfg.hf_hub_filename else []) + list(_WEIGHT_FILES):
            found = try_to_load_from_cache(repo, filename)
            if isinstance(found, str):
                return Path(found)
    if cfg.url:
        import torch

        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(cfg.url).name
        if path.is_file():
            return path
    return None


def _from_registry(name: str) -> Classifier:
    import timm

    _check_name(name)
    cfg = _pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise ModelNotFoundError(f"timm:{name} has no pretrained weights in timm; pass timm:{name}@<weights file>")
    cached = _cached_weights(cfg)
    if cached is not None:
        # Loading the cached file directly skips the hub client, which retries an unreachable hub for ~45 s.
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(cached)))
    elif (hf_hub_online() if cfg.hf_hub_id else host_reachable(cfg.url)):
        model = timm.create_model(name, pretrained=True)
    else:
        where = cfg.hf_hub_id or cfg.url
        raise ModelNotFoundError(
            f"timm:{name}: pretrained weights ({where}) are not in the local cache and cannot be downloaded "
            f"(offline). Copy them here and use timm:{name}@/path/to/model.safetensors, or a timm folder "
            "(config.json + model.safetensors) as timm:/path/to/folder")
    return _wrap(model, f"timm:{name}", f"timm registry {name}" + (f" (cached {cached})" if cached else ""),
                 weights_file=cached)


def _from_file(name: str, path: Path, trust_pickle: bool) -> Classifier:
    import timm

    _check_name(name)
    state_dict = load_state_dict(path, trust_pickle=trust_pickle)  # before building: refuse unsafe files first
    cfg = _pretrained_cfg(name)
    overlay = dict(state_dict=state_dict, label_offset=0)
    kwargs = {}
    head = (cfg.classifier if cfg else None) or "head"
    head = head[0] if isinstance(head, (tuple, list)) else head
    if f"{head}.weight" in state_dict:  # the file decides the number of classes, not the registry default
        kwargs["num_classes"] = overlay["num_classes"] = int(state_dict[f"{head}.weight"].shape[0])
    try:
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except RuntimeError as e:
        raise ModelNotFoundError(f"timm:{name}@{path}: the weights do not fit {name}: {str(e)[:600]}") from None
    model.pretrained_cfg.pop("state_dict", None)  # do not keep a second reference to every tensor
    return _wrap(model, f"timm:{name}@{path}", f"timm architecture {name} with weights {path}", weights_file=path)


def from_folder(folder: Path, *, spec: str | None = None) -> Classifier:
    """A timm local-dir folder: config.json with 'architecture' plus a weights file."""
    import timm

    config_file = folder / "config.json"
    if not config_file.is_file() or "architecture" not in json.loads(config_file.read_text()):
        raise ModelNotFoundError(f"{folder} is not a timm model folder: it needs a config.json with an "
                                 "'architecture' key (as written by timm.models.save_for_hf)")
    weights = next((folder / f for f in _WEIGHT_FILES if (folder / f).is_file()), None)
    weights = weights or next(iter(sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.pth"))
                                   + sorted(folder.glob("*.bin"))), None)
    if weights is None:
        raise ModelNotFoundError(f"timm folder {folder} holds no weights (model.safetensors or pytorch_model.bin)")
    try:
        model = timm.create_model(_LOCAL_DIR + str(folder), pretrained=True)
    except (pickle.UnpicklingError, RuntimeError) as e:
        # timm reads .bin files with weights_only=True; a file that needs more would run code. Recent timm
        # re-raises the refusal as a RuntimeError from the UnpicklingError.
        if not isinstance(e, pickle.UnpicklingError) and not isinstance(e.__cause__, pickle.UnpicklingError):
            raise
        raise UnsafeWeightsError(f"{weights} is not plain weights (it would run code when unpickled); "
                                 "convert it to model.safetensors") from None
    return _wrap(model, spec or f"timm:{folder}", f"timm local-dir {folder}", weights_file=weights)


def _wrap(model, spec: str, source: str, weights_file=None) -> Classifier:
    from timm.data import resolve_model_data_config

    labels, labels_source = timm_labels(model)
    preprocessing = from_timm(resolve_model_data_config(model), "timm pretrained_cfg")
    return Classifier(TimmNet(model), preprocessing, labels, spec=spec, family="timm", source=source,
                      labels_source=labels_source, weights_file=weights_file,
                      info={"architecture": model.pretrained_cfg.get("architecture")})


def timm_labels(model) -> tuple[list[str], str]:
    from timm.data import infer_imagenet_subset

    n = model.num_classes
    cfg = model.pretrained_cfg
    names, descriptions = cfg.get("label_names"), cfg.get("label_descriptions") or {}
    if isinstance(names, dict):
        names = [names.get(i, names.get(str(i))) for i in range(n)]
    if names and len(names) == n and all(names):
        return [str(descriptions.get(name, name)) for name in names], "pretrained_cfg.label_names"
    if n == 1000 and infer_imagenet_subset(model) == "imagenet-1k" and imagenet_labels():
        return list(imagenet_labels()), "ImageNet-1k (inferred by timm from 1000 classes)"
    return generic_labels(n), "generic (no label names in the model config)"
