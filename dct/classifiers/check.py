"""Is a classifier spec resolvable? Cheap checks (names, files, folders; no weights read, no model built),
so a grid can refuse a spec with a missing classifier before its first cell runs instead of when the
cell that needs it is reached."""

from __future__ import annotations

from dct.errors import ModelNotFoundError

from .spec import existing_dir, existing_file, folder_or_hub_id, looks_like_path, local_path, split_ensemble, \
    split_spec, split_weights


def check_resolvable(spec: str) -> None:
    """Raise the error loading would raise, for everything that can be known without loading."""
    from .registry import CLASSIFIER_FAMILIES

    family, target = split_spec(spec, list(CLASSIFIER_FAMILIES))
    if family == "ensemble":
        for member in split_ensemble(target):
            check_resolvable(member)
    elif family == "world":
        from dct.world.paths import classifier_dir

        folder = classifier_dir(target)
        if not folder.is_dir():
            raise ModelNotFoundError(f"world:{target}: classifier folder {folder} does not exist (build the world first)")
    elif family == "timm":
        from .timm_models import _LOCAL_DIR, _check_name

        name, weights = split_weights(target)
        if weights is not None:
            existing_file(weights, "timm weights file")
        elif target.startswith(_LOCAL_DIR):
            existing_dir(target[len(_LOCAL_DIR):], "timm local-dir folder")
        elif local_path(target).is_dir() or looks_like_path(target):
            existing_dir(target, "timm local-dir folder")
        else:
            _check_name(name)
    elif family == "torchvision":
        import torchvision

        name, weights = split_weights(target)
        if name not in torchvision.models.list_models():
            raise ModelNotFoundError(f"torchvision has no classification model named {name!r}")
        if weights is not None:
            existing_file(weights, "torchvision weights file")
    elif family in ("hf", "hf-vitmae"):
        folder_or_hub_id(target, f"{family} model")
    elif family == "file":
        existing_file(target, "classifier file")
    # families registered by users are checked when they load
