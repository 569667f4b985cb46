"""The store on its own: atomic parts, orphans and temp files ignored, which row is current, the lock."""

import pandas as pd
import pytest

from bench import columns as C
from bench.store import (CELLS_DIR, CURVES_DIR, StoreBusyError, done_hashes, load_cells, load_curves, locked,
                         new_attempt_id, write_attempt)


def attempt(store, config_hash, status, curves=(), **extra):
    row = {C.CONFIG_HASH: config_hash, C.ATTEMPT_ID: new_attempt_id(), C.STATUS: status, C.LABEL: config_hash,
           **extra}
    write_attempt(store, row, list(curves))
    return row[C.ATTEMPT_ID]


def test_a_failed_rerun_never_hides_a_completed_result(tmp_path):
    ok = attempt(tmp_path, "aaaa", "ok", curves=[{"epoch": 0, "loss": 1.0}], metric_x=1.0)
    attempt(tmp_path, "aaaa", "oom", curves=[{"epoch": 0, "loss": 9.0}])
    attempt(tmp_path, "bbbb", "error")
    last = attempt(tmp_path, "bbbb", "killed")
    current = load_cells(tmp_path).set_index(C.CONFIG_HASH)
    assert current.loc["aaaa", C.ATTEMPT_ID] == ok and current.loc["bbbb", C.ATTEMPT_ID] == last
    assert load_curves(tmp_path)[C.LOSS].tolist() == [1.0]
    assert len(load_cells(tmp_path, all_rows=True)) == 4
    assert done_hashes(tmp_path) == {"aaaa"}


def test_orphan_curves_and_temp_files_are_ignored(tmp_path):
    attempt(tmp_path, "aaaa", "ok", curves=[{"epoch": 0, "loss": 1.0}])
    # a runner killed between the curves part and the cell row, and one killed inside a write
    pd.DataFrame([{C.CONFIG_HASH: "bbbb", C.ATTEMPT_ID: "x", C.EPOCH: 0}]).to_parquet(
        tmp_path / CURVES_DIR / "bbbb-20260101T000000000000-abcdef.parquet")
    (tmp_path / CELLS_DIR / ".tmp-cccc-1.parquet.123").write_bytes(b"PAR1 torn")
    assert list(load_cells(tmp_path)[C.CONFIG_HASH]) == ["aaaa"]
    assert list(load_curves(tmp_path)[C.CONFIG_HASH]) == ["aaaa"]
    with locked(tmp_path):  # the next runner clears the torn temp file
        pass
    assert not list(tmp_path.rglob(".tmp-*"))


def test_types_survive_and_lists_become_json(tmp_path):
    attempt(tmp_path, "aaaa", "ok", cfg_templates=["a {}", "b {}"], cfg_depth=2, peak_gpu_allocated_bytes=None)
    attempt(tmp_path, "bbbb", "ok", cfg_templates=["c {}"], cfg_depth="full", peak_gpu_allocated_bytes=None)
    cells = load_cells(tmp_path)
    assert cells["cfg_templates"].tolist() == ['["a {}", "b {}"]', '["c {}"]']
    assert cells["cfg_depth"].tolist() == [2, "full"]
    assert cells[C.PEAK_GPU_ALLOCATED].isna().all()


def test_empty_store(tmp_path):
    assert load_cells(tmp_path).empty and load_curves(tmp_path).empty and done_hashes(tmp_path) == set()


def test_one_runner_per_store(tmp_path):
    with locked(tmp_path):
        with pytest.raises(StoreBusyError, match="in use by another runner"):
            with locked(tmp_path):
                pass
    with locked(tmp_path):  # released
        pass
