"""`Classifier`: a frozen model behind its own differentiable preprocessing, with labels and provenance.

Families wrap their networks in a small adapter with `forward(x) -> logits` and `features(x) -> (B, F)` on
already-preprocessed input; `Classifier` adds preprocessing, freezing, dtype handling and `describe()`.
"""

from __future__ import annotations

import torch
from torch import nn

from .preprocess import Preprocess, Preprocessing
from .weights import sha256


class Classifier(nn.Module):
    """A frozen image classifier for DCT guidance and evaluation.

    `forward(images)` takes (B, 3, H, W) float images in [0, 1] of any size and returns (B, num_classes)
    logits, with the model's own preprocessing applied inside (so gradients reach the images).
    `features(images)` returns the (B, F) penultimate features (the input of the final linear layer).
    Parameters never require grad and the model stays in eval mode, even under a parent's `.train()`:
    batch-norm statistics must not move while a token is optimised against the classifier.
    """

    def __init__(self, net: nn.Module, preprocessing: Preprocessing | None, labels: list[str], *, spec: str,
                 family: str, source: str, labels_source: str = "", weights_file=None, info: dict | None = None):
        super().__init__()
        self.net = net
        self.preprocess = Preprocess(preprocessing) if preprocessing is not None else None
        self.labels = list(labels)
        self.spec = spec
        self.family = family
        self.source = source
        self.labels_source = labels_source
        self.weights_file = str(weights_file) if weights_file else None
        self.info = dict(info or {})
        self.requires_grad_(False)
        self.train(False)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def preprocessing(self) -> Preprocessing | None:
        return self.preprocess.config if self.preprocess is not None else None

    def set_preprocessing(self, preprocessing: Preprocessing) -> "Classifier":
        """Swap the preprocessing (e.g. `c.set_preprocessing(c.preprocessing.replace(antialias=False))` to
        replay the reference code's kornia resize). Recorded by `describe()`."""
        device = next(iter(self.buffers()), torch.empty(0)).device
        self.preprocess = Preprocess(preprocessing).to(device)
        return self

    def train(self, mode: bool = True) -> "Classifier":
        return super().train(False)

    def _model_input(self, images: torch.Tensor) -> torch.Tensor:
        # Images may arrive in the VAE's fp16; the classifier runs in its own dtype.
        param = next(self.net.parameters(), None)
        if param is not None and images.dtype != param.dtype and param.dtype.is_floating_point:
            images = images.to(param.dtype)
        return self.preprocess(images) if self.preprocess is not None else images

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self._model_input(images))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.features(self._model_input(images)).flatten(1)

    def describe(self) -> dict:
        """Provenance for run records: what was loaded, from where, and how images are prepared."""
        d = {
            "spec": self.spec,
            "family": self.family,
            "source": self.source,
            "num_classes": self.num_classes,
            "labels_source": self.labels_source,
            "preprocessing": self.preprocessing.to_dict() if self.preprocessing is not None else None,
            "num_params": sum(p.numel() for p in self.parameters()),
        }
        if self.weights_file:
            d["weights_file"] = self.weights_file
            d["weights_sha256"] = sha256(self.weights_file)
        d.update(self.info)
        return d

    def extra_repr(self) -> str:
        return f"spec={self.spec!r}, num_classes={self.num_classes}"


# ------------------------------------------------------------------------------------------------ adapters

def _logits(output) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, (tuple, list)):
        return output[0]
    raise TypeError(f"cannot find logits in a model output of type {type(output).__name__}")


def final_linear(model: nn.Module, num_classes: int | None = None) -> nn.Module | None:
    """The last nn.Linear (in registration order) that produces `num_classes` outputs: the classifier head."""
    head = None
    for module in model.modules():
        if isinstance(module, nn.Linear) and (num_classes is None or module.out_features == num_classes):
            head = module
    return head


class ModuleNet(nn.Module):
    """Any nn.Module returning logits; features are the input of its final linear layer, caught by a hook."""

    def __init__(self, model: nn.Module, num_classes: int | None = None):
        super().__init__()
        self.model = model
        self._head = final_linear(model, num_classes)

    def forward(self, x):
        return _logits(self.model(x))

    def features(self, x):
        if self._head is None:
            raise NotImplementedError(f"{type(self.model).__name__} has no final nn.Linear to take features from")
        captured = []
        handle = self._head.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
        try:
            self.forward(x)
        finally:
            handle.remove()
        return captured[-1]


class HFNet(ModuleNet):
    """transformers *ForImageClassification: keyword input, `.logits` output."""

    def forward(self, x):
        return self.model(pixel_values=x).logits


class TimmNet(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)

    def features(self, x):
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)
