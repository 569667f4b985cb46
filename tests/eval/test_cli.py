"""`dct eval`: token vs plain prompt on the same seeds, tables and JSON, errors before any work."""

import io
import json

import pytest
import torch
from typer.testing import CliRunner

from dct.errors import ConfigError
from dct.eval.cli import eval_app, parse_seeds, print_tables, run_eval

STEPS = 2


def test_parse_seeds():
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("0-2,10, 12") == [0, 1, 2, 10, 12]
    for bad in ("a-b", "3-1", "", "0-2,2"):
        with pytest.raises(ConfigError, match="seeds"):
            parse_seeds(bad)


def test_run_eval_token_vs_plain_paired_with_fid(parts, tiny_judge, tmp_path):
    vec = parts.text_encoder.get_input_embeddings().weight[320].detach().clone() + 0.3
    reference = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = run_eval(parts, tiny_judge, 7, "seven", [0, 1, 2], template="a photo of {}", token_vectors={"newclas": vec},
                   reference=reference, steps=STEPS, n_boot=100, images_out=tmp_path / "imgs")
    assert out["prompts"] == {"token": "a photo of newclas seven", "plain": "a photo of seven"}
    assert out["token"]["n_images"] == out["plain"]["n_images"] == 3
    assert out["difference"]["paired"] is True
    assert set(out["fid"]) == {"token", "plain"}
    assert out["fid"]["token"]["n_generated"] == 3 and out["fid"]["token"]["n_reference"] == 6
    assert out["fid"]["token"]["kid_subset_size"] == 3
    assert len(list((tmp_path / "imgs").glob("*.png"))) == 6
    json.dumps(out)
    # the token is spliced only for the call
    assert not parts.text_encoder.get_input_embeddings()._forward_hooks
    buf = io.StringIO()
    from rich.console import Console

    print_tables(out, Console(file=buf, width=200))
    text = buf.getvalue()
    assert "token - plain (paired)" in text and "FID" in text and "a photo of newclas seven" in text


def test_run_eval_plain_only_with_paper_prefix(parts, tiny_judge):
    out = run_eval(parts, tiny_judge, 1, "one", [5, 6], template="A photo of {}", plain_prefix="a", fid=False,
                   steps=STEPS, n_boot=20)
    assert out["prompts"] == {"plain": "A photo of a one"}
    assert "token" not in out and "difference" not in out and out["fid"] == {}


@pytest.mark.parametrize("args, match", [
    (["--seeds", "x"], "seeds 'x' are malformed"),
    (["--token", "missing.safetensors"], "does not exist"),
    (["--seeds", "0-3"], "give --class"),
    (["--class", "3", "--reference", "no/such/folder"], "reference folder"),
    (["--class", "3", "--model", "some/model", "--fid"], "--fid needs --reference"),
    (["--class", "3", "--inception-weights", "nope.pth"], "Inception weights file"),
])
def test_cli_errors_exit_2_with_one_clear_line(args, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(eval_app, args)
    assert r.exit_code == 2, r.output
    assert "error:" in r.output and match in " ".join(r.output.split())


def _registry_available():
    try:
        from dct.classifiers import load_classifier, resolve_class  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _registry_available(), reason="dct.classifiers registry not available yet")
def test_cli_end_to_end_json(tiny_sd_dir, tiny_timm_dir, tmp_path):
    from dct.generate import save_images

    save_images(torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)), tmp_path / "ref",
                [f"r{i}" for i in range(4)])
    r = CliRunner().invoke(eval_app, ["--model", str(tiny_sd_dir), "--classifier", f"timm:{tiny_timm_dir}",
                                      "--class", "3", "--seeds", "0-2", "--steps", str(STEPS), "--n-boot", "50",
                                      "--reference", str(tmp_path / "ref"), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output[r.output.index("{"):])
    assert out["class_index"] == 3 and out["plain"]["n_images"] == 3
    assert out["fid"]["plain"]["n_reference"] == 4
