"""One set of conventions in every command: --device, --json, --version, results on stdout only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cli import app
from dct.clikit import DEVICE_DEFAULT, DEVICE_HELP

runner = CliRunner()
REFERENCE = Path(__file__).resolve().parents[2] / "results" / "reference" / "depth"
# every command that prints results (files-only commands such as figures and plots are not here)
PRINTS_RESULTS = {"train", "generate", "eval", "bench depth", "bench classifier", "bench transfer",
                  "bench augment", "bench run", "results show", "search", "search show", "search best",
                  "worker", "world check", "world info"}


def commands(cmd, path: str = ""):
    yield path, cmd
    if hasattr(cmd, "commands"):  # typer may carry its own click: duck-typed
        for name, sub in cmd.commands.items():
            yield from commands(sub, f"{path} {name}".strip())


ALL = dict(commands(typer.main.get_command(app)))


def test_device_option_is_the_same_everywhere():
    with_device = {path: cmd for path, cmd in ALL.items()
                   if any("--device" in p.opts for p in cmd.params)}
    assert {"train", "generate", "eval", "bench run", "search", "worker", "launch"} <= set(with_device)
    for path, cmd in with_device.items():
        param = next(p for p in cmd.params if "--device" in p.opts)
        assert param.default == DEVICE_DEFAULT and param.help == DEVICE_HELP, path


@pytest.mark.parametrize("path", sorted(PRINTS_RESULTS))
def test_every_result_printing_command_has_json(path):
    assert any("--json" in p.opts for p in ALL[path].params), path


def test_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.startswith("dct ")


@pytest.mark.world
def test_json_stdout_is_pure_json_while_logs_go_to_stderr(tmp_path):
    store = tmp_path / "depth"
    for part in ("cells", "specs"):
        shutil.copytree(REFERENCE / part, store / part)
    r = runner.invoke(app, ["bench", "depth", "--store", str(store), "--json", "--no-progress"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert len(rows) == 12 and all(row["status"] == "ok" for row in rows)
    assert "12 already done" in r.stderr

    r = runner.invoke(app, ["generate", "--class", "7", "--seeds", "0", "--steps", "2", "--out", str(tmp_path / "i"),
                            "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert len(out["files"]) == 1 and Path(out["files"][0]).is_file()


def test_one_option_name_per_meaning():
    """--store for a result store, --out for files (older spellings stay as aliases)."""
    def names(path):
        return {o for p in ALL[path].params for o in p.opts}

    for path in ("figures", "report", "bench run", "bench depth", "worker"):
        assert "--store" in names(path), path
    for path in ("train", "generate", "eval", "search best"):
        assert "--out" in names(path), path
