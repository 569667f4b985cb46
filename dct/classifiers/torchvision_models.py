"""torchvision classifiers: `torchvision:<name>` (the DEFAULT weights, from the torch hub cache or a download)
and `torchvision:<name>@<weights file>`. Preprocessing and class names come from the weights' metadata,
which torchvision ships offline."""

from __future__ import annotations

import difflib
from pathlib import Path

from dct.errors import ModelNotFoundError

from .base import Classifier, ModuleNet, final_linear
from .labels import generic_labels, imagenet_labels
from .preprocess import from_torchvision
from .spec import existing_file, split_weights
from .weights import host_reachable, load_state_dict


def _default_weights(name: str):
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)  # classification models only
    if name not in names:
        close = difflib.get_close_matches(name, names, n=5)
        hint = f"; close names: {', '.join(close)}" if close else ""
        raise ModelNotFoundError(f"torchvision has no classification model named {name!r}{hint}")
    return torchvision.models.get_model_weights(name).DEFAULT


def _head_name(model) -> str | None:
    head = final_linear(model)
    return next((n for n, m in model.named_modules() if m is head), None) if head is not None else None


def load_torchvision(target: str, *, trust_pickle: bool = False) -> Classifier:
    import torch
    import torchvision

    name, weights_file = split_weights(target)
    weights = _default_weights(name)
    if weights_file is None:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        if not cached.is_file() and not host_reachable(weights.url):
            raise ModelNotFoundError(
                f"torchvision:{name}: weights {weights.url} are not in the torch hub cache ({cached.parent}) and "
                f"cannot be downloaded (offline). Copy the file there, or use torchvision:{name}@/path/to/file")
        model = torchvision.models.get_model(name, weights=weights)
        spec, source, path = f"torchvision:{name}", f"torchvision {weights}", cached
    else:
        path = existing_file(weights_file, "torchvision weights file")
        state_dict = load_state_dict(path, trust_pickle=trust_pickle)
        model = torchvision.models.get_model(name, weights=None)
        head = _head_name(model)
        if head and f"{head}.weight" in state_dict:  # the file decides the number of classes
            num_classes = int(state_dict[f"{head}.weight"].shape[0])
            if num_classes != final_linear(model).out_features:
                model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        try:
            model.load_state_dict(state_dict)
        except RuntimeError as e:
            raise ModelNotFoundError(f"torchvision:{name}@{path}: the weights do not fit {name}: {str(e)[:600]}") from None
        spec, source = f"torchvision:{name}@{path}", f"torchvision {name} with weights {path}"

    categories = list(weights.meta.get("categories") or [])
    head = final_linear(model)
    num_classes = head.out_features if head is not None else len(categories)  # squeezenet: a conv head
    if len(categories) == num_classes == 1000 and imagenet_labels():
        # torchvision's short ImageNet names -> the synonym strings timm and transformers models use
        labels, labels_source = list(imagenet_labels()), "ImageNet-1k (torchvision weights meta)"
    elif len(categories) == num_classes:
        labels, labels_source = categories, "torchvision weights meta"
    else:
        labels, labels_source = generic_labels(num_classes), "generic (class count differs from the weights meta)"
    preprocessing = from_torchvision(weights.transforms(), f"torchvision {weights} transforms")
    return Classifier(ModuleNet(model, num_classes), preprocessing, labels, spec=spec, family="torchvision",
                      source=source, labels_source=labels_source,
                      weights_file=path if path.is_file() else None)
