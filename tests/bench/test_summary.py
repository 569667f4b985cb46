"""The grid's final summary and `dct results show` read well in an 80-column terminal: every cell's
accuracy [CI] and peak memory are visible, no line is wider than the terminal, --all has every column."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app

REFERENCE = Path(__file__).resolve().parents[2] / "results" / "reference" / "depth"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# one summary row: peak memory, s/step, accuracy [CI] (the label wraps, the numbers never do)
ROW = re.compile(r"\d+ MiB\s+\d+\.\d\d\s+0\.\d\d \[0\.\d\d, 0\.\d\d\]\s+0\.\d\d\s+\d+\.\d")


def in_terminal(args: list[str], columns: int = 80, cwd: Path | None = None) -> str:
    """Run `dct args` in a pseudo-terminal of `columns` columns; its output as the terminal shows it."""
    dct = Path(sys.executable).with_name("dct")
    command = [str(dct)] if dct.exists() else [sys.executable, "-c", "from cli import app; app()"]
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen(command + args, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
                            close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=600) == 0, b"".join(chunks).decode(errors="replace")
    return ANSI.sub("", b"".join(chunks).decode(errors="replace").replace("\r", ""))


@pytest.fixture(scope="module")
def depth_store(tmp_path_factory):
    """A copy of the committed reference depth store: `dct bench depth` finds all 12 cells done."""
    store = tmp_path_factory.mktemp("depth") / "depth"
    for part in ("cells", "specs"):
        shutil.copytree(REFERENCE / part, store / part)
    return store


@pytest.mark.world
def test_bench_depth_summary_fits_80_columns(depth_store):
    text = in_terminal(["bench", "depth", "--store", str(depth_store), "--no-progress"])
    assert "12 already done, 0 to run" in text  # nothing ran: this is the final summary of the real grid
    assert max(len(line) for line in text.splitlines()) <= 80
    rows = [line for line in text.splitlines() if ROW.search(line)]
    assert len(rows) == 12, text
    for label in ("depth=1", "depth=4", "depth=full"):
        assert sum(line.startswith(label) for line in rows) == 4, text
    assert "0.68 [0.58, 0.78]" in text and "1767 MiB" in text  # depth=full, no checkpointing
    assert "depth full - 1    +26.4 [+16.6, +36.9]  10x3x32  higher" in text  # the paired contrast


def test_results_show_fits_80_columns_and_all_has_every_column():
    text = in_terminal(["results", "show", str(REFERENCE)])
    assert max(len(line) for line in text.splitlines()) <= 80
    assert len([line for line in text.splitlines() if ROW.search(line)]) == 12, text
    assert "acc [95% CI]" in text and "peak mem" in text and "FID" in text

    every = in_terminal(["results", "show", str(REFERENCE), "--all"])
    assert max(len(line) for line in every.splitlines()) <= 80
    frame = json.loads(CliRunner().invoke(app, ["results", "show", str(REFERENCE), "--json"]).stdout)
    for column in frame[0]:
        if frame[0][column] is not None:
            assert column in every, column


def test_json_goes_to_stdout_alone():
    r = CliRunner().invoke(app, ["results", "show", str(REFERENCE), "--json"])
    assert r.exit_code == 0 and len(json.loads(r.stdout)) == 12 and r.stderr == ""
