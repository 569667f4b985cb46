"""`ensemble:<spec>,<spec>[,...]`: several classifiers over one shared label set, as one classifier.

The ensemble's logits are the MEAN OF THE MEMBERS' LOG-SOFTMAX (a product of experts; softmax of them is the
normalised geometric mean of the members' probabilities). Chosen over log-mean-exp (the log of the
averaged probabilities) because DCT optimises a token *against* the classifier: with averaged
probabilities, fooling one member completely already bounds the loss by log K, so the token can win by
exploiting a single model's quirks; under the geometric mean every member must agree, which is what an
ensemble is meant to enforce. Each member applies its own preprocessing; `features` concatenates theirs.
"""

from __future__ import annotations

import torch

from dct.errors import ClassifierSpecError

from .base import Classifier


def _normalise(label: str) -> str:
    return " ".join(label.lower().split())


class EnsembleClassifier(Classifier):
    def __init__(self, members: list[Classifier], spec: str):
        first = members[0]
        super().__init__(torch.nn.ModuleList(members), None, first.labels, spec=spec, family="ensemble",
                         source=", ".join(m.spec for m in members), labels_source=first.labels_source)

    @property
    def members(self) -> list[Classifier]:
        return list(self.net)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(images).float().log_softmax(-1) for m in self.net]).mean(0)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([m.features(images).float() for m in self.net], dim=1)

    def describe(self) -> dict:
        d = super().describe()
        d["combine"] = "mean of member log_softmax (normalised geometric mean of probabilities)"
        d["members"] = [m.describe() for m in self.net]
        return d


def check_shared_labels(members: list[Classifier]) -> None:
    first = members[0]
    for other in members[1:]:
        if other.num_classes != first.num_classes:
            raise ClassifierSpecError(f"ensemble members disagree on the label set: {first.spec!r} has "
                                      f"{first.num_classes} classes, {other.spec!r} has {other.num_classes}")
        for i, (a, b) in enumerate(zip(first.labels, other.labels)):
            if _normalise(a) != _normalise(b):
                raise ClassifierSpecError(f"ensemble members disagree on the label set: class {i} is {a!r} in "
                                          f"{first.spec!r} but {b!r} in {other.spec!r}")
