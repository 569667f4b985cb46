"""Bad input and faults a new user meets, each through the real `dct` CLI on the embedded tiny world:
exit status 2 and ONE line on stderr naming the bad value, no traceback (unless --debug), nothing lost."""

from __future__ import annotations

import json
import os
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from cli import app

pytestmark = pytest.mark.world
runner = CliRunner()
QUICK = ["--depth", "2", "--steps", "3", "--max-epochs", "1", "--images-per-update", "2", "--rollout-batch", "2"]


def dct(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def error_line(r, *needles: str) -> str:
    """The single 'error:' line of a user error; every needle must be in it."""
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.stderr
    assert "Traceback" not in r.output
    assert r.stderr.rstrip().endswith(errors[0])  # the last thing said, on one line
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


@pytest.fixture(scope="module")
def token(tmp_path_factory):
    """A real token of class 7 trained by `dct train` on the tiny world (one quick epoch)."""
    out = tmp_path_factory.mktemp("tok") / "seven.safetensors"
    r = dct("train", "--class", "7", *QUICK, "--out", out)
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# --- presets and options ------------------------------------------------------------------------------------


def test_malformed_preset_toml(tmp_path):
    preset = tmp_path / "broken.toml"
    preset.write_text("lr = [1\n")
    error_line(dct("train", "--class", "7", "--preset", preset), "broken.toml", "not valid TOML")


def test_wrongly_typed_preset_value(tmp_path):
    preset = tmp_path / "typed.toml"
    preset.write_text('lr = "fast"\n')
    error_line(dct("train", "--class", "7", "--preset", preset), "typed.toml", "lr='fast'", "a number")


def test_debug_shows_the_traceback(tmp_path):
    from dct.errors import ConfigError

    preset = tmp_path / "broken.toml"
    preset.write_text("lr = [1\n")
    r = dct("--debug", "train", "--class", "7", "--preset", preset)
    assert isinstance(r.exception, ConfigError) and "broken.toml" in str(r.exception)


def test_brackets_in_an_error_print_as_they_are():
    # rich would take "[red]" for markup and swallow it
    error_line(dct("train", "--class", "[red]x[/red]", *QUICK), "'[red]x[/red]'")


@pytest.mark.parametrize("command", [
    ["train", "--class", "7", *QUICK],
    ["generate", "--class", "7", "--out", "OUT"],
    ["eval", "--class", "7", "--seeds", "0-1", "--no-fid"],
])
def test_cuda_requested_without_cuda(no_cuda, tmp_path, command):
    command = [str(tmp_path / "o") if a == "OUT" else a for a in command]
    error_line(dct(*command, "--device", "cuda"), "--device 'cuda'", "CUDA is not available", "--device cpu")


@pytest.mark.parametrize("command", [
    ["train", "--class", "7", *QUICK, "--guidance", "nan"],
    ["generate", "--class", "7", "--guidance", "nan", "--out", "OUT"],
    ["eval", "--class", "7", "--seeds", "0-1", "--no-fid", "--guidance", "inf"],
])
def test_non_finite_guidance(tmp_path, command):
    command = [str(tmp_path / "o") if a == "OUT" else a for a in command]
    error_line(dct(*command), "guidance=", "a finite number")
    assert not (tmp_path / "o").exists()


def test_bad_device_name():
    error_line(dct("generate", "--class", "7", "--device", "tpu", "--out", "x"), "'tpu'", "'cuda:N'")


# --- output locations ---------------------------------------------------------------------------------------


def test_unwritable_out_is_refused_before_training(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    r = dct("train", "--class", "7", *QUICK, "--out", blocker / "sub" / "t.safetensors")
    error_line(r, str(blocker / "sub"), "cannot be written")
    assert "token for class" not in r.stderr  # no training bar: refused before any work


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    error_line(dct("train", "--class", "7", *QUICK, "--out", folder / "t.safetensors"), "cannot be written")


def test_a_token_that_cannot_be_saved_is_rescued(tmp_path, monkeypatch):
    from dct import token as token_module

    target = tmp_path / "tok.safetensors"
    real_save = token_module.save_file

    def refuse_target(tensors, filename, *a, **k):  # the disk fills up after training
        if str(tmp_path) in filename and "rescue" not in filename:
            raise OSError(28, "No space left on device")
        return real_save(tensors, filename, *a, **k)

    monkeypatch.setattr(token_module, "save_file", refuse_target)
    monkeypatch.setenv("DCT_RESCUE_DIR", str(tmp_path / "rescue"))
    line = error_line(dct("train", "--class", "7", *QUICK, "--out", target), str(target), "No space left",
                      str(tmp_path / "rescue"))
    rescued = next((tmp_path / "rescue").glob("tok-*.safetensors"))
    assert str(rescued) in line
    vector = load_file(str(rescued))["newclas"]
    assert vector.shape == (64,) and torch.isfinite(vector).all()
    assert json.loads(rescued.with_suffix(".json").read_text())["class_index"] == 7


def test_generate_refuses_an_unwritable_out_before_rendering(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    error_line(dct("generate", "--class", "7", "--out", blocker / "imgs"), "--out folder", "cannot be written")


# --- token files --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, needles", [
    ("corrupt", ["not a readable safetensors file"]),
    ("empty", ["not a readable safetensors file"]),
    ("no-tensor", ["holds no token"]),
    ("wide", ["width 17", "width 64"]),
    ("nan", ["NaN or infinite", "black images"]),
])
@pytest.mark.parametrize("command", ["generate", "eval"])
def test_bad_token_files(token, tmp_path, kind, needles, command):
    path = tmp_path / f"{kind}.safetensors"
    if kind == "corrupt":
        path.write_bytes(b"\x10\x00\x00\x00junk junk junk")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "no-tensor":
        save_file({}, str(path))
    elif kind == "wide":
        save_file({"newclas": torch.zeros(17)}, str(path))
    else:
        save_file({"newclas": torch.full((64,), float("nan"))}, str(path))
    args = ["--out", tmp_path / "o"] if command == "generate" else ["--seeds", "0-1", "--no-fid"]
    error_line(dct(command, "--token", path, "--class", "7", *args), f"{kind}.safetensors", *needles)


def test_malformed_sidecar(token, tmp_path):
    copy = tmp_path / "t.safetensors"
    copy.write_bytes(token.read_bytes())
    (tmp_path / "t.json").write_text("{oops")
    error_line(dct("generate", "--token", copy, "--out", tmp_path / "o"), "t.json", "not valid JSON")


def test_missing_sidecar_needs_class_and_then_works(token, tmp_path):
    """A plain diffusers textual-inversion file (no sidecar) works once --class names the class."""
    plain = tmp_path / "sks.safetensors"
    save_file({"sks": load_file(str(token))["newclas"]}, str(plain))
    error_line(dct("generate", "--token", plain, "--out", tmp_path / "o"), "sks.json", "--class")
    r = dct("generate", "--token", plain, "--class", "seven", "--seeds", "0", "--steps", "2", "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output
    prompts = json.loads((tmp_path / "o" / "prompts.json").read_text())["prompts"]
    assert "sks seven" in prompts["token-class7"]


def test_generate_with_a_hub_model_does_not_ask_for_a_missing_option(tmp_path):
    line = error_line(dct("generate", "--model", "CompVis/stable-diffusion-v1-4", "--class", "7",
                          "--out", tmp_path / "o"), "--class '7'", "as words")
    assert "--classifier" not in line


# --- specs and stores ---------------------------------------------------------------------------------------


def _spec(tmp_path, body: str):
    path = tmp_path / "spec.toml"
    path.write_text(textwrap.dedent(f"""\
        [experiment]
        name = "t"
        cell = "dct"
        store = "{tmp_path / 'store'}"
        """) + textwrap.dedent(body))
    return path


def test_wrongly_typed_spec_value(tmp_path):
    spec = _spec(tmp_path, """
        [fixed]
        lr = "fast"
        [axes]
        depth = [1]
        """)
    error_line(dct("bench", "run", "--spec", spec, "--dry-run"), "spec.toml", "lr='fast'", "a number")


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_spec_value(tmp_path, value):
    spec = _spec(tmp_path, f"""
        [axes]
        guidance = [5.0, {value}]
        """)
    error_line(dct("bench", "run", "--spec", spec, "--dry-run"), "guidance", "a finite number")


@pytest.mark.parametrize("dry", [True, False])
def test_missing_classifier_is_found_before_the_first_cell(tmp_path, dry):
    spec = _spec(tmp_path, """
        [fixed]
        classes = [7]
        max_epochs = 1
        [axes]
        judge = ["world:judge", "timm:/no/such/classifier"]
        """)
    r = dct("bench", "run", "--spec", spec, "--no-progress", *(["--dry-run"] if dry else []))
    error_line(r, "judge=timm:/no/such/classifier", "/no/such/classifier")
    assert not (tmp_path / "store" / "cells").exists()  # the good cell did not run first


def test_spec_cells_need_an_available_device(no_cuda, tmp_path):
    spec = _spec(tmp_path, """
        [axes]
        depth = [1]
        """)
    error_line(dct("bench", "run", "--spec", spec, "--device", "cuda:1", "--dry-run"), "'cuda:1'", "CUDA")


def test_store_that_cannot_be_written(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    spec = _spec(tmp_path, """
        [fixed]
        classes = [7]
        [axes]
        depth = [1]
        """)
    error_line(dct("bench", "run", "--spec", spec, "--store", blocker / "store", "--no-progress"),
               str(blocker / "store"), "cannot be written")


def test_damaged_store_file_is_skipped_with_a_warning(tmp_path):
    from bench import columns as C
    from bench.store import CELLS_DIR, write_attempt

    store = tmp_path / "store"
    for h, a in (("aaaa11112222", "20260101T000000000000-aaaaaa"), ("bbbb11112222", "20260101T000000000001-bbbbbb")):
        write_attempt(store, {C.CONFIG_HASH: h, C.ATTEMPT_ID: a, C.LABEL: f"cell {h[:4]}", C.STATUS: C.STATUS_OK}, [])
    damaged = next((store / CELLS_DIR).glob("bbbb*.parquet"))
    damaged.write_bytes(b"PAR1 this is not parquet")
    r = dct("results", "show", store, "--json")
    assert r.exit_code == 0, r.output
    assert [row[C.CONFIG_HASH] for row in json.loads(r.stdout)] == ["aaaa11112222"]
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and damaged.name in warnings[0]


def test_worker_refuses_a_store_a_runner_holds(tmp_path):
    from bench.store import locked

    spec = _spec(tmp_path, """
        [fixed]
        classes = [7]
        max_epochs = 1
        eval_seeds = 2
        fid = false
        [axes]
        depth = [1]
        """)
    with locked(tmp_path / "store"):
        r = dct("worker", "--grid", spec, "--storage", f"sqlite:///{tmp_path / 'board.db'}")
    error_line(r, "in use by another runner", f"pid {os.getpid()}")


def test_storage_password_with_a_slash_is_redacted(tmp_path):
    spec = _spec(tmp_path, """
        [axes]
        depth = [1]
        """)
    r = dct("worker", "--grid", spec, "--storage", "postgresql://dct:se/cr:et@127.0.0.1:9/dct")
    line = error_line(r, "cannot open storage", "dct:***@127.0.0.1")
    assert "se/cr" not in r.output and "cr:et" not in r.output
