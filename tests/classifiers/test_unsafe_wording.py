"""A refused pickle is reported as unsafe whatever words torch uses to refuse it, and no message points
at a command-line option that does not exist."""

from __future__ import annotations

import pickle

import pytest
import torch
from typer.testing import CliRunner

from cli import app


@pytest.fixture
def reworded_torch(monkeypatch):
    """torch.load whose weights_only refusal is worded as a future torch might word it."""
    real = torch.load

    def load(*args, weights_only=None, **kwargs):
        if weights_only:
            try:
                return real(*args, weights_only=True, **kwargs)
            except pickle.UnpicklingError:
                raise pickle.UnpicklingError("Weights-only loading refused: type torch.nn.Linear is not in "
                                             "the allowlist") from None
        return real(*args, weights_only=weights_only, **kwargs)

    monkeypatch.setattr(torch, "load", load)


def _eval(classifier: str):
    return CliRunner().invoke(app, ["eval", "--class", "7", "--classifier", classifier, "--seeds", "0-1",
                                    "--no-fid"])


@pytest.mark.world
def test_refused_pickle_is_unsafe_whatever_the_wording(reworded_torch, tmp_path):
    path = tmp_path / "whole-model.pt"
    torch.save(torch.nn.Linear(4, 10), path)
    r = _eval(f"file:{path}")
    assert r.exit_code == 2, r.output
    line = r.stderr.strip().splitlines()[-1]
    assert "arbitrary code" in line and "trust_pickle=True" in line, line
    assert "not a readable" not in line and "--trust-pickle" not in line


@pytest.mark.world
def test_junk_weights_are_unreadable_not_unsafe(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"\x80\x05 not a pickle at all")
    r = CliRunner().invoke(app, ["eval", "--class", "7", "--classifier", f"timm:test_resnet@{path}",
                                 "--seeds", "0-1", "--no-fid"])
    assert r.exit_code == 2, r.output
    line = r.stderr.strip().splitlines()[-1]
    assert "not a readable torch weights file" in line and "arbitrary code" not in line, line
