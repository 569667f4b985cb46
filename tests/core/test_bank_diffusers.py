"""A token bank from `dct train --classes` loads in diffusers itself, with the one call the README gives."""

from __future__ import annotations

import glob

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from cli import app


@pytest.mark.world
def test_bank_loads_with_load_textual_inversion(tmp_path):
    from diffusers import StableDiffusionPipeline

    from dct.world.paths import default_pipeline_dir

    bank = tmp_path / "bank.safetensors"
    r = CliRunner().invoke(app, ["train", "--classes", "1,3", "--depth", "2", "--steps", "3", "--max-epochs", "1",
                                 "--images-per-update", "2", "--rollout-batch", "2", "--out", str(bank)])
    assert r.exit_code == 0, r.output
    assert "load_textual_inversion" in r.stdout  # the output says how to load it

    pipe = StableDiffusionPipeline.from_pretrained(str(default_pipeline_dir()), safety_checker=None,
                                                   feature_extractor=None, requires_safety_checker=False)
    with pytest.raises(ValueError):  # why the bank file itself is not the diffusers form
        pipe.load_textual_inversion(str(bank))
    # the README's one line
    pipe.load_textual_inversion(sorted(glob.glob(f"{tmp_path}/bank.classes/class-*.safetensors")))
    table = pipe.text_encoder.get_input_embeddings().weight
    for name, vector in load_file(str(bank)).items():
        row = table[pipe.tokenizer.convert_tokens_to_ids(name)]
        torch.testing.assert_close(row, vector.to(row.dtype))
    assert {"newclas1", "newclas3"} <= set(pipe.tokenizer.get_vocab())
