"""A tiny stand-in for a dct classifier (same API as dct.classifiers: forward on [0, 1] images, features,
labels, num_classes, spec), so that evaluation tests run whatever the state of the classifier registry."""

from __future__ import annotations

import pytest
import torch


class TinyClassifier(torch.nn.Module):
    def __init__(self, num_classes: int = 10, seed: int = 0, spec: str = "test:tiny"):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8 + 3, num_classes)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        self.num_classes = num_classes
        self.labels = [f"class{i}" for i in range(num_classes)]
        self.spec = spec

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.interpolate(images, size=(16, 16), mode="bilinear", align_corners=False)
        # the channel means make the features react to a global brightness shift
        return torch.cat([torch.relu(self.conv(x * 2 - 1)).mean((2, 3)), x.mean((2, 3))], 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(images))

    def describe(self) -> str:
        return f"{self.spec} ({self.num_classes} classes)"


@pytest.fixture()
def tiny_judge():
    return TinyClassifier()
