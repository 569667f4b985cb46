"""A runner killed with SIGKILL mid-grid (no chance to clean up) loses nothing it recorded, leaves no
torn row, takes its running cell down with it, and a second run completes only the missing cells."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench import columns as C
from bench.grid import run_grid
from bench.spec import load_spec
from bench.store import done_hashes, load_cells, load_curves

REPO = Path(__file__).resolve().parents[2]
RUNNER = "import sys, tests.bench.mlp_cell; from bench.grid import run_grid; run_grid(sys.argv[1], show_progress=False)"


def _dead(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def test_killed_runner_then_rerun_completes_only_missing_cells(write_spec, tmp_path, quiet):
    path = write_spec("""
        [experiment]
        name = "kill"
        cell = "tiny_mlp"
        store = "STORE"
        [fixed]
        steps = 3
        step_sleep_s = 0.2
        [axes]
        width = [2, 3]
    """)
    store = tmp_path / "store"
    all_hashes = set(load_spec(path).cells)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(tmp_path / "runner.log", "w") as log:
        runner = subprocess.Popen([sys.executable, "-c", RUNNER, str(path)], cwd=REPO, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while not done_hashes(store):
            assert runner.poll() is None, (tmp_path / "runner.log").read_text()
            assert time.monotonic() < deadline, "no cell finished in 60 s"
            time.sleep(0.05)
        runner.send_signal(signal.SIGKILL)
        runner.wait()

    # the cell that was running dies with its runner instead of running on as an orphan
    pids = [int(p.read_text()) for p in store.glob("artifacts/*/*/pid")]
    deadline = time.monotonic() + 10
    while not all(_dead(pid) for pid in pids):
        assert time.monotonic() < deadline, "a cell process outlived its killed runner"
        time.sleep(0.05)

    done = done_hashes(store)  # whatever was recorded before the kill, read back whole
    assert 1 <= len(done) < len(all_hashes)
    result = run_grid(path, console=quiet, show_progress=False)
    ran = [cell.config_hash for cell, _ in result.ran]
    assert sorted(ran) == sorted(all_hashes - done)  # only the missing cells, each once
    assert {c.config_hash for c in result.skipped} == done

    rows = load_cells(store, all_rows=True)
    assert sorted(rows[C.CONFIG_HASH]) == sorted(all_hashes)  # one row per cell: nothing duplicated
    assert (rows[C.STATUS] == C.STATUS_OK).all() and not rows[C.SUPERSEDED].any()
    assert rows[C.metric_col("final_loss")].notna().all()
    curves = load_curves(store)
    assert sorted(curves.groupby(C.CONFIG_HASH).size()) == [3, 3]
    assert not list(store.rglob(".tmp-*"))  # a kill mid-write would leave one; the next run clears it
