"""Classifier families keyed by spec prefix, and `load_classifier`, the one entry point.

A family is a function `loader(target: str, *, trust_pickle: bool) -> Classifier` that receives the part of
the spec after `<prefix>:`, validates it before any heavy work, and returns a CPU classifier whose `spec`
is the normalised spec string.
"""

from __future__ import annotations

import re
from typing import Callable

from dct.errors import ClassifierSpecError

from .base import Classifier
from .ensemble import EnsembleClassifier, check_shared_labels
from .file_models import load_file
from .hf_models import load_hf, load_hf_vitmae
from .spec import split_ensemble, split_spec
from .timm_models import load_timm
from .torchvision_models import load_torchvision
from .world import load_world

Loader = Callable[..., Classifier]
CLASSIFIER_FAMILIES: dict[str, Loader] = {}


def register_family(prefix: str, loader: Loader, *, overwrite: bool = False) -> None:
    """Make `<prefix>:<target>` specs load through `loader(target, trust_pickle=...)`."""
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", prefix):
        raise ValueError(f"family prefix must be lower-case letters, digits, '-' or '_', got {prefix!r}")
    if prefix in CLASSIFIER_FAMILIES and not overwrite:
        raise ValueError(f"classifier family {prefix!r} is already registered (pass overwrite=True to replace it)")
    CLASSIFIER_FAMILIES[prefix] = loader


def _load_ensemble(target: str, *, trust_pickle: bool = False) -> Classifier:
    parts = split_ensemble(target)
    if len(parts) < 2:
        raise ClassifierSpecError(f"ensemble:{target}: an ensemble needs at least two comma-separated specs")
    prefixes = [split_spec(p, list(CLASSIFIER_FAMILIES))[0] for p in parts]  # all specs parsed before any load
    if "ensemble" in prefixes:
        raise ClassifierSpecError(f"ensemble:{target}: ensembles cannot be nested; list all members in one")
    members = [_load(p, trust_pickle=trust_pickle) for p in parts]
    check_shared_labels(members)
    return EnsembleClassifier(members, "ensemble:" + ",".join(m.spec for m in members))


for _prefix, _loader in (("timm", load_timm), ("hf", load_hf), ("hf-vitmae", load_hf_vitmae),
                         ("torchvision", load_torchvision), ("file", load_file), ("ensemble", _load_ensemble),
                         ("world", load_world)):
    register_family(_prefix, _loader)


def _load(spec: str, *, trust_pickle: bool) -> Classifier:
    prefix, target = split_spec(spec, list(CLASSIFIER_FAMILIES))
    return CLASSIFIER_FAMILIES[prefix](target, trust_pickle=trust_pickle)


def load_classifier(spec: str, *, device="cpu", trust_pickle: bool = False) -> Classifier:
    """Load a frozen classifier from a spec string (grammar in `dct.classifiers`' docstring)."""
    return _load(spec, trust_pickle=trust_pickle).to(device)
