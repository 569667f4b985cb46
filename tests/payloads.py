"""Pickles with live payloads: unpickling one creates a sentinel file.

A payload without side effects cannot tell "refused" from "ran, then refused"; with these, a loader that
refuses a file must leave the sentinel absent, and a trusted load (the control) must create it.
"""

from __future__ import annotations

from pathlib import Path

import torch


class Payload:
    """Unpickling this object runs `exec`, which creates `sentinel`."""

    def __init__(self, sentinel: Path):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return exec, (f"open({self.sentinel!r}, 'w').close()",)


class Holder(torch.nn.Module):
    """An identity layer that carries a payload, so a whole pickled model holds live code."""

    def __init__(self, sentinel: Path):
        super().__init__()
        self.payload = Payload(sentinel)

    def forward(self, x):
        return x


def save_with_payload(state: dict, path: Path, sentinel: Path) -> Path:
    """A state dict wrapped as a training checkpoint with a live payload beside it, via torch.save."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "extra": Payload(sentinel)}, path)
    return path
