"""SIGTERM (or Ctrl-C) stops the runner cleanly: the running cell is killed and gets no row, so it stays
pending; a cell past --timeout-per-cell is killed and recorded as timeout."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench import columns as C
from bench.grid import run_grid
from bench.store import done_hashes, load_cells

REPO = Path(__file__).resolve().parents[2]


def test_sigterm_stops_cleanly_then_a_hung_cell_times_out(write_spec, tmp_path, quiet):
    path = write_spec("""
        [experiment]
        name = "stop"
        cell = "tiny_mlp"
        store = "STORE"
        [fixed]
        steps = 2
        [[include]]
        label = "quick"
        [[include]]
        label = "hangs"
        step_sleep_s = 600.0
    """)
    store = tmp_path / "store"
    # through the command line, as a user runs it; the test's cell kind is found through $DCT_CELL_MODULES
    env = {**os.environ, "PYTHONPATH": str(REPO), "DCT_CELL_MODULES": "tests.bench.mlp_cell"}
    runner = subprocess.Popen([sys.executable, "-m", "bench.cli", "bench", "run", "--spec", str(path), "--no-progress"],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not (done_hashes(store) and list(store.glob("artifacts/*/*/pid"))[1:]):  # quick done, hangs started
        assert runner.poll() is None, runner.stdout.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    hung_pid = max(store.glob("artifacts/*/*/pid"), key=lambda p: p.stat().st_mtime).read_text()
    stopped_at = time.monotonic()
    runner.send_signal(signal.SIGTERM)
    output = runner.communicate(timeout=30)[0]
    assert runner.returncode == 128 + signal.SIGTERM, output
    assert time.monotonic() - stopped_at < 10
    assert "stopped by SIGTERM" in output and "1 pending" in output
    assert not Path(f"/proc/{hung_pid}").exists() or "Z" in Path(f"/proc/{hung_pid}/stat").read_text().split(")")[-1][:3]
    rows = load_cells(store, all_rows=True)
    assert list(rows[C.LABEL]) == ["quick"]  # the interrupted cell left no row

    started = time.monotonic()
    result = run_grid(path, timeout_per_cell=3, console=quiet, show_progress=False)
    assert [(c.label, s) for c, s in result.ran] == [("hangs", "timeout")]
    assert time.monotonic() - started < 15
    row = load_cells(store).set_index(C.LABEL).loc["hangs"]
    assert row[C.ERROR].startswith("timeout: still running after 3 s") and row[C.PROCESS_WALL_S] >= 3
