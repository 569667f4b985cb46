"""`dct train` and `dct generate` as a user runs them, on tiny real models given by path."""

import json

import pytest
from typer.testing import CliRunner

from cli import app

runner = CliRunner()
FAST = ["--depth", "2", "--steps", "3", "--max-epochs", "2", "--images-per-update", "2", "--rollout-batch", "2", "--guidance", "3"]


def dct(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_train_bank_resume_and_generate(tiny_sd_dir, tiny_timm_dir, tmp_path):
    model = ["--model", tiny_sd_dir, "--classifier", f"timm:{tiny_timm_dir}"]
    bank = tmp_path / "bank.safetensors"
    r = dct("train", "--class", "1,three", *model, *FAST, "--out", bank)
    assert r.exit_code == 0, r.output
    meta = json.loads(bank.with_suffix(".json").read_text())
    assert set(meta["tokens"]) == {"newclas1", "newclas3"} and meta["resumed_classes"] == []

    # an interrupted run: class 3 never finished, the bank was never written
    bank.unlink()
    (tmp_path / "bank.classes" / "class-3.safetensors").unlink()
    r = dct("train", "--class", "1,3", *model, *FAST, "--out", bank)
    assert r.exit_code == 0, r.output
    assert json.loads(bank.with_suffix(".json").read_text())["resumed_classes"] == [1]

    from diffusers import StableDiffusionPipeline

    from dct.token import load_into_pipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_sd_dir), safety_checker=None, feature_extractor=None,
                                                   requires_safety_checker=False)
    assert sorted(load_into_pipeline(pipe, bank)) == ["newclas1", "newclas3"]

    out = tmp_path / "images"
    r = dct("generate", "--token", bank, "--plain", "--model", tiny_sd_dir, "--seeds", "0-1", "--steps", "3",
            "--out", out)
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in out.glob("*.png"))
    assert len(names) == 8 and "token-class3-seed0001.png" in names and "plain-class1-seed0000.png" in names


def test_single_token_file(tiny_sd_dir, tiny_timm_dir, tmp_path):
    out = tmp_path / "seven.safetensors"
    r = dct("train", "--class", "seven", "--model", tiny_sd_dir, "--classifier", f"timm:{tiny_timm_dir}",
            *FAST[2:], "--out", out, "--depth", "full", "--checkpointing", "both")
    assert r.exit_code == 0, r.output
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["class_index"] == 7 and meta["result"]["n_grad_calls"] == 3 == meta["result"]["n_calls"]
    assert len(meta["history"]) == 2 and meta["config"]["checkpointing"] == "both"
    r = dct("train", "--class", "7", "--model", tiny_sd_dir, "--classifier", f"timm:{tiny_timm_dir}", "--out", out)
    assert r.exit_code == 2 and "exists" in r.output


@pytest.mark.parametrize("args, message", [
    (["--class", "12"], "12"),
    (["--class", "elephant"], "elephant"),
    (["--class", "1", "--classifier", "nosuch:x"], "nosuch"),
    (["--class", "1", "--depth", "deep"], "deep"),
    (["--class", "1", "--depth", "9", "--steps", "3"], "at most 3"),
    (["--class", "1", "--precision", "fp8"], "fp8"),
    (["--class", "1", "--model", "/no/such/folder"], "/no/such/folder"),
])
def test_bad_input_fails_fast_and_clearly(tiny_sd_dir, tiny_timm_dir, tmp_path, args, message):
    base = {"--model": str(tiny_sd_dir), "--classifier": f"timm:{tiny_timm_dir}"}
    for i in range(0, len(args), 2):
        base.pop(args[i], None)
    flat = [x for kv in base.items() for x in kv]
    r = dct("train", *args, *flat, "--out", tmp_path / "x.safetensors")
    assert r.exit_code == 2
    assert message in r.output and "error" in r.output
    assert not (tmp_path / "x.safetensors").exists()


def test_train_then_eval_prints_the_token_against_plain(tiny_sd_dir, tiny_timm_dir, tmp_path):
    """The path a user takes: `dct train` then `dct eval --token` (tables, and JSON keeping both reports)."""
    token = tmp_path / "t.safetensors"
    model = ["--model", tiny_sd_dir, "--classifier", f"timm:{tiny_timm_dir}"]
    assert dct("train", "--class", "2", *model, *FAST, "--out", token).exit_code == 0
    args = ["eval", "--token", token, "--classifier", f"timm:{tiny_timm_dir}", "--seeds", "100-102", "--no-fid",
            "--steps", "2", "--n-boot", "50"]
    # seeds 0-1 drew this token's training latents (fast preset: epoch e on seed e): refused, named
    r = dct(*[a if a != "100-102" else "0-2" for a in args])
    assert r.exit_code == 2 and "seeds [0, 1] are seeds the token's training latents" in r.output
    r = dct(*args)
    assert r.exit_code == 0, r.output
    assert "token - plain (paired)" in r.output
    out = json.loads(dct(*args, "--json").stdout)
    assert out["token"]["n_images"] == out["plain"]["n_images"] == 3 and out["token_file"] == str(token)


def test_eval_reference_protocol_judges_with_the_guide_and_the_judge(tiny_sd_dir, tiny_timm_dir, tmp_path):
    """`dct eval --protocol reference`: the authors' evaluation (stock scheduler, 50 steps, guidance 7.5,
    seeds 0-9, baseline 'a <class>'), scored by the token's own guide beside the independent judge."""
    token = tmp_path / "paper.safetensors"
    model = ["--model", tiny_sd_dir, "--classifier", f"timm:{tiny_timm_dir}"]
    r = dct("train", "--class", "2", *model, "--preset", "paper", "--precision", "fp32", "--steps", "3",
            "--max-epochs", "1", "--images-per-update", "2", "--rollout-batch", "1", "--out", token)
    assert r.exit_code == 0, r.output
    args = ["eval", "--token", token, "--classifier", f"timm:{tiny_timm_dir}", "--protocol", "reference",
            "--steps", "2", "--n-boot", "50"]
    r = dct(*args)
    assert r.exit_code == 0, r.output
    assert "protocol reference" in r.output and "by the guide that trained the token" in r.output
    out = json.loads(dct(*args, "--json").stdout)
    assert out["protocol"] == "reference" and out["seeds"] == list(range(10)) and out["fid"] == {}
    assert out["settings"]["scheduler"] == "default" and out["settings"]["guidance"] == 7.5
    assert out["prompts"]["plain"].endswith(" a two") and "newclas two" in out["prompts"]["token"]
    guide = out["guide"]
    assert guide["classifier"] == f"timm:{tiny_timm_dir}"
    assert guide["token"]["n_images"] == guide["plain"]["n_images"] == 10 and guide["difference"]["paired"]
    assert dct(*args, "--protocol", "theirs").exit_code == 2
    # a bench cell's token sidecar keeps its evaluation settings in the config: still a token dct eval reads
    side = token.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta["config"].update(eval_seeds=32, eval_seed_base=20000, judge=None, fid=False)
    side.write_text(json.dumps(meta))
    r = dct(*args, "--seeds", "36-37")
    assert r.exit_code == 0, r.output
    assert dct(*args, "--seeds", "35-36").exit_code == 2  # the paper preset drew its latents from seed 35


def test_eval_reference_protocol_refuses_a_token_trained_on_its_seeds(tiny_sd_dir, tiny_timm_dir, tmp_path):
    token = tmp_path / "fast.safetensors"
    model = ["--model", tiny_sd_dir, "--classifier", f"timm:{tiny_timm_dir}"]
    assert dct("train", "--class", "2", *model, *FAST, "--out", token).exit_code == 0  # fast: epoch e on seed e
    r = dct("eval", "--token", token, "--classifier", f"timm:{tiny_timm_dir}", "--protocol", "reference")
    assert r.exit_code == 2 and "seeds [0, 1] are seeds the token's training latents" in r.output
