"""transformers classifiers: `hf:` (AutoModelForImageClassification) and `hf-vitmae:` (ViT-MAE encoder with
the mean-pool head of the DCT paper's CUB / iNat models), each with its AutoImageProcessor config."""

from __future__ import annotations

import pickle
from pathlib import Path

from dct.errors import ClassifierSpecError, ModelNotFoundError, UnsafeWeightsError

from .base import Classifier, HFNet
from .labels import hf_labels
from .preprocess import from_hf_processor
from .spec import folder_or_hub_id, local_path
from .weights import hf_hub_online

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")


def _locate(target: str, family: str) -> tuple[str, Path | None, dict]:
    """(source for from_pretrained, folder or None, extra from_pretrained kwargs); fails fast on missing files."""
    source, folder = folder_or_hub_id(target, f"{family} model")
    if folder is not None:
        missing = [f for f in ("config.json", "preprocessor_config.json") if not (folder / f).is_file()]
        if not any((folder / f).is_file() for f in _WEIGHT_FILES):
            missing.append("model.safetensors (or pytorch_model.bin)")
        if missing:
            raise ModelNotFoundError(f"{family}:{target}: folder {folder} lacks {', '.join(missing)} (a transformers "
                                     "image classifier saved with save_pretrained, plus its image processor)")
        return source, folder, {}
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(source, "config.json"), str):
        return source, None, {"local_files_only": True}  # cached: never touch the network
    if hf_hub_online():
        return source, None, {}
    raise ModelNotFoundError(f"{family}:{target}: no folder {local_path(target)} and hub model {source!r} is not "
                             "in the local cache, and the hub cannot be reached (offline). Download it elsewhere "
                             f"and pass the folder: {family}:/path/to/folder")


def _load(call, spec: str, folder: Path | None = None):
    """Run a from_pretrained call, translating its failures into the project's errors."""
    try:
        return call()
    except pickle.UnpicklingError:
        pickled = sorted(str(p) for p in folder.glob("*.bin")) if folder is not None else []
        what = ", ".join(pickled) if pickled else "the weights file"
        raise UnsafeWeightsError(f"{spec}: {what} is not plain weights (it would run code when "
                                 "unpickled); convert it to model.safetensors") from None
    except OSError as e:
        raise ModelNotFoundError(f"{spec}: {str(e)[:600]}") from None


def _processor(source: str, kwargs: dict, spec: str):
    from transformers import AutoImageProcessor

    return _load(lambda: AutoImageProcessor.from_pretrained(source, **kwargs), spec)


def load_hf(target: str, *, trust_pickle: bool = False) -> Classifier:
    from transformers import AutoConfig, AutoModelForImageClassification

    source, folder, kwargs = _locate(target, "hf")
    spec = f"hf:{source}"
    config = _load(lambda: AutoConfig.from_pretrained(source, **kwargs), spec)
    processor = _processor(source, kwargs, spec)
    try:
        model = _load(lambda: AutoModelForImageClassification.from_pretrained(source, **kwargs), spec, folder)
    except ValueError as e:
        hint = " (a ViT-MAE encoder with a mean-pool head loads as hf-vitmae:)" if config.model_type == "vit_mae" else ""
        raise ClassifierSpecError(f"{spec}: model type {config.model_type!r} has no image-classification "
                                  f"class in transformers{hint}: {str(e)[:300]}") from None
    return _wrap(model, processor, spec, family="hf", folder=folder)


def load_hf_vitmae(target: str, *, trust_pickle: bool = False) -> Classifier:
    from transformers import PretrainedConfig, ViTConfig

    from .vitmae import MeanPoolViTForImageClassification

    source, folder, kwargs = _locate(target, "hf-vitmae")
    spec = f"hf-vitmae:{source}"
    config_dict, _ = _load(lambda: PretrainedConfig.get_config_dict(source, **kwargs), spec)
    if config_dict.get("model_type") not in ("vit", "vit_mae"):
        raise ClassifierSpecError(f"{spec}: hf-vitmae needs a ViT or ViT-MAE config, "
                                  f"got model_type {config_dict.get('model_type')!r}")
    config = ViTConfig.from_dict(config_dict)
    processor = _processor(source, kwargs, spec)
    model, info = _load(lambda: MeanPoolViTForImageClassification.from_pretrained(
        source, config=config, output_loading_info=True, **kwargs), spec, folder)
    bad = sorted(info["missing_keys"]) + sorted(info["unexpected_keys"]) + sorted(map(str, info["mismatched_keys"]))
    if bad:
        raise ClassifierSpecError(
            f"{spec}: the checkpoint is not a ViT encoder with a classifier head (missing "
            f"{sorted(info['missing_keys'])[:5]}, unexpected {sorted(info['unexpected_keys'])[:5]}, "
            f"mismatched {list(map(str, info['mismatched_keys']))[:3]}); a pre-training checkpoint has no classifier")
    return _wrap(model, processor, spec, family="hf-vitmae", folder=folder,
                 info={"head": "mean of patch tokens (CLS excluded) -> LayerNorm -> Linear"})


def _wrap(model, processor, spec: str, *, family: str, folder: Path | None, info: dict | None = None) -> Classifier:
    labels, labels_source = hf_labels(model.config)
    preprocessing = from_hf_processor(processor, "image processor config")
    hub_id = spec.split(":", 1)[1]
    if folder is not None:
        weights = next((folder / f for f in _WEIGHT_FILES if (folder / f).is_file() and "index" not in f), None)
    else:  # the cached snapshot path names the hub revision: worth recording
        from huggingface_hub import try_to_load_from_cache

        found = [try_to_load_from_cache(hub_id, f) for f in _WEIGHT_FILES if "index" not in f]
        weights = next((Path(f) for f in found if isinstance(f, str)), None)
    source = f"folder {folder}" if folder else f"hub {hub_id}" + (f" (cached {weights.parent})" if weights else "")
    return Classifier(HFNet(model, len(labels)), preprocessing, labels, spec=spec, family=family, source=source,
                      labels_source=labels_source, weights_file=weights,
                      info={"model_class": type(model).__name__, **(info or {})})
