"""`file:<path>`: a whole model in one file, either a TorchScript archive or a pickled nn.Module.

A TorchScript archive is loaded by torch.jit's own deserialiser, not by unpickling Python classes, so no
Python code from the file runs. A pickled nn.Module can only be rebuilt by importing and running whatever
classes it names; it is refused unless the user passes trust_pickle=True. A plain state dict has no
architecture; the error says which spec to use instead.

Preprocessing and class names come from an optional JSON sidecar `<path>.json` with timm-style keys:
input_size [3, H, W], crop_pct, crop_mode, interpolation, mean, std, label_names. Without it the images
reach the model as they are (no resize, no normalisation), with a warning and `describe()` saying so.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import torch

from dct.errors import ClassifierSpecError, UnsafeWeightsError

from .base import Classifier, ModuleNet, final_linear
from .labels import generic_labels
from .preprocess import Preprocessing, from_timm
from .spec import existing_file
from .weights import torch_load


def is_torchscript(path: Path) -> bool:
    # torch.jit.save archives carry the compiled program under <root>/code/; torch.save archives never do
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def _sidecar(path: Path) -> dict:
    sidecar = path.with_name(path.name + ".json")
    if not sidecar.is_file():
        return {}
    try:
        return json.loads(sidecar.read_text())
    except json.JSONDecodeError as e:
        raise ClassifierSpecError(f"{sidecar}: not valid JSON ({e})") from None


class ScriptNet(torch.nn.Module):
    """A TorchScript module; hooks do not exist there, so features need an exported `features` method."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)
        return out[0] if isinstance(out, (tuple, list)) else out

    def features(self, x):
        if not hasattr(self.model, "features"):
            raise NotImplementedError("this TorchScript classifier exports no `features` method; "
                                      "script it with @torch.jit.export def features(self, x)")
        return self.model.features(x)


def load_file(target: str, *, trust_pickle: bool = False) -> Classifier:
    path = existing_file(target, "model file")
    spec = f"file:{path}"
    alternatives = (f"a weights file needs its architecture: use timm:<arch>@{path}, torchvision:<arch>@{path}, "
                    "or a folder with hf:/timm:")
    if path.suffix == ".safetensors":
        raise ClassifierSpecError(f"{spec}: a .safetensors file holds weights only; {alternatives}")
    if is_torchscript(path):
        model, kind = torch.jit.load(str(path), map_location="cpu"), "torchscript"
        net = ScriptNet(model)
    else:
        try:
            obj = torch_load(path, trust_pickle=trust_pickle)
        except UnsafeWeightsError:
            raise UnsafeWeightsError(
                f"{spec}: this is a pickled Python object (e.g. a whole nn.Module), and loading it runs "
                "arbitrary code from the file. From Python, pass trust_pickle=True to load_classifier only if you "
                "trust its author (no dct command unpickles a classifier), or export it with torch.jit.script/trace, or save a state dict and use "
                "timm:<arch>@file / torchvision:<arch>@file.") from None
        if isinstance(obj, dict):
            raise ClassifierSpecError(f"{spec}: the file holds a plain state dict ({len(obj)} entries); {alternatives}")
        if not isinstance(obj, torch.nn.Module):
            raise ClassifierSpecError(f"{spec}: the file holds a {type(obj).__name__}, not a model")
        model, kind = obj, "pickled nn.Module"
        net = None

    meta = _sidecar(path)
    if meta:
        data_cfg = {"input_size": meta.get("input_size", (3, 224, 224)), "crop_pct": meta.get("crop_pct"),
                    "crop_mode": meta.get("crop_mode"), "interpolation": meta.get("interpolation", "bilinear"),
                    "mean": meta.get("mean", (0.0, 0.0, 0.0)), "std": meta.get("std", (1.0, 1.0, 1.0))}
        preprocessing = from_timm(data_cfg, f"sidecar {path.name}.json")
    else:
        warnings.warn(f"{spec}: no {path.name}.json sidecar, so images reach the model unresized and "
                      "unnormalised; add one with input_size, crop_pct, mean, std, label_names", stacklevel=3)
        preprocessing = Preprocessing(source="none (no sidecar JSON)")

    num_classes = _num_classes(model, meta, preprocessing)
    names = meta.get("label_names")
    if names and len(names) != num_classes:
        raise ClassifierSpecError(f"{spec}: sidecar lists {len(names)} label_names, the model has {num_classes} outputs")
    labels = list(names) if names else generic_labels(num_classes)
    if net is None:
        net = ModuleNet(model, num_classes)
    return Classifier(net, preprocessing, labels, spec=spec, family="file", source=f"{kind} {path}",
                      labels_source="sidecar label_names" if names else "generic (no sidecar label_names)",
                      weights_file=path, info={"file_kind": kind})


def _num_classes(model, meta: dict, preprocessing: Preprocessing) -> int:
    if meta.get("label_names"):
        return len(meta["label_names"])
    if isinstance(model, torch.jit.ScriptModule):
        linears = [m for m in model.modules() if getattr(m, "original_name", "") == "Linear"]
        if linears:
            return int(linears[-1].weight.shape[0])
    else:
        head = final_linear(model)
        if head is not None:
            return head.out_features
    # no linear head to read: ask the model itself, at the size its preprocessing produces
    size = preprocessing.crop or (preprocessing.size * 2)[:2] or (224, 224)
    with torch.no_grad():
        out = ScriptNet(model)(torch.zeros(1, 3, *size)) if isinstance(model, torch.jit.ScriptModule) \
            else ModuleNet(model)(torch.zeros(1, 3, *size))
    return int(out.shape[-1])
