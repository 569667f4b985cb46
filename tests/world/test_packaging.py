"""What the package declares is what it imports, and what the world build needs ships inside it."""

from __future__ import annotations

import importlib.metadata
import importlib.util

import pytest
from packaging.requirements import Requirement


def _requirements() -> dict[str, Requirement]:
    reqs = [Requirement(r) for r in importlib.metadata.requires("dct-bench") or []]
    return {r.name.lower().replace("_", "-"): r for r in reqs if r.marker is None}


def test_declared_dependencies_match_imports():
    reqs = _requirements()
    assert "sqlalchemy" in reqs  # dct.redact, bench.search.storage and optuna storages import it
    assert "open-clip-torch" not in reqs  # its one file (the CLIP vocabulary) ships with dct
    # the committed world's tokenizer (tokenizer.json alone) needs transformers 5
    assert not reqs["transformers"].specifier.contains("4.99")
    for name, req in reqs.items():
        installed = importlib.metadata.version(name)
        assert req.specifier.contains(installed, prereleases=True), (name, installed, str(req))


@pytest.mark.world
def test_clip_tokenizer_builds_without_open_clip(tmp_path, monkeypatch):
    from transformers import AutoTokenizer, CLIPTokenizer

    from dct.world import tokenizer as T
    from dct.world.paths import default_pipeline_dir

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "open_clip" else real_find_spec(name, *a))
    built = CLIPTokenizer.from_pretrained(str(T.write_clip_tokenizer(tmp_path / "tok")))
    world = AutoTokenizer.from_pretrained(str(default_pipeline_dir() / "tokenizer"))
    text = "a handwritten seven, the handwritten number 7 newclas"
    assert built(text)["input_ids"] == world(text)["input_ids"]
