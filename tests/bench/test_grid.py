"""The runner end to end, on real (tiny) cells, each in its own process: outcomes of failing cells,
measurements, provenance, resume and --force. One grid is run once per module and inspected by
several tests, because every cell costs a process start (~2 s here)."""

import json

import pytest
import typer
from typer.testing import CliRunner

from bench import columns as C
from bench.cli import bench_app, make_bench_command, results_app
from bench.grid import run_grid
from bench.store import CURVES_DIR, load_cells, load_curves

SECRET = "s3cret-pw"
SPEC = f"""
[experiment]
name = "mixed"
cell = "tiny_mlp"
store = "STORE"
warmup_steps = 1

[fixed]
steps = 4
data_url = "postgresql://alice:{SECRET}@db.example:5432/grid"

# The failing cells come first, so that the ok cells after them show that the grid went on.
[axes]
fail = ["cuda_oom", "sigkill", "error", "none"]

[[include]]
label = "big"
alloc_mb = 256
"""


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    import io

    from rich.console import Console

    folder = tmp_path_factory.mktemp("grid")
    spec = folder / "mixed.toml"
    spec.write_text(SPEC.replace("STORE", str(folder / "store")))
    result = run_grid(spec, console=Console(file=io.StringIO()), show_progress=False)
    return spec, folder / "store", result


def by_label(store):
    return load_cells(store).set_index(C.LABEL)


def test_failures_are_recorded_and_the_grid_goes_on(grid):
    _, store, result = grid
    assert [status for _, status in result.ran] == ["oom", "killed", "error", "ok", "ok"]
    cells = by_label(store)
    assert cells.loc["fail=cuda_oom", C.ERROR].startswith("OutOfMemoryError: CUDA out of memory")
    assert "SIGKILL" in cells.loc["fail=sigkill", C.ERROR]
    assert cells.loc["fail=error", C.ERROR] == "ValueError: simulated failure"
    assert "_fail" in cells.loc["fail=error", C.TRACEBACK]
    # an oom cell still reports what it had measured when it failed
    assert cells.loc["fail=cuda_oom", C.PEAK_RSS_BYTES] > 0
    assert cells.loc["fail=cuda_oom", C.STEPS_TIMED] == 2


def test_measurements(grid):
    _, store, _ = grid
    ok = by_label(store).loc["fail=none"]
    assert ok[C.STEPS_TIMED] == 4 and ok[C.WARMUP_STEPS] == 1
    times = json.loads(ok[C.STEP_TIMES_S])
    assert len(times) == 4 and ok[C.STEP_TIME_MEDIAN_S] == sorted(times[1:])[1]
    assert 0 < ok[C.WALL_S] < ok[C.PROCESS_WALL_S]
    assert ok[C.DEVICE] == "cpu" and "cores" in ok[C.DEVICE_NAME]
    assert ok[C.PEAK_MEM_BYTES] == ok[C.PEAK_RSS_BYTES]
    assert ok[C.phase_seconds_col("train")] > 0 and ok[C.phase_peak_col("eval")] > 0
    assert ok[C.metric_col("final_loss")] < 1


def test_peak_rss_grows_with_allocated_memory(grid):
    _, store, _ = grid
    cells = by_label(store)
    grown = cells.loc["big", C.PEAK_RSS_BYTES] - cells.loc["fail=none", C.PEAK_RSS_BYTES]
    # 256 MiB of ballast; the other cell's baseline is a separate process, so the difference is the ballast
    assert 200 * 2**20 < grown < 320 * 2**20
    assert cells.loc["big", C.phase_peak_col("train")] - cells.loc["fail=none", C.phase_peak_col("train")] > 200 * 2**20


def test_curves(grid):
    _, store, _ = grid
    curves = load_curves(store)
    ok_hash = by_label(store).loc["fail=none", C.CONFIG_HASH]
    rows = curves[curves[C.CONFIG_HASH] == ok_hash]
    assert list(rows[C.EPOCH]) == [0, 1, 2, 3]
    assert rows[C.LOSS].is_monotonic_decreasing and (rows[C.GRAD_NORM] > 0).all()


def test_provenance_columns_and_password_redaction(grid):
    spec, store, _ = grid
    cells = load_cells(store)
    for col in (C.CONFIG_JSON, C.CONFIG_HASH, C.SEED, C.GIT_SHA, C.GIT_DIRTY, C.HOSTNAME, C.STARTED_AT,
                C.FINISHED_AT, C.SPEC_FILE, C.SPEC_HASH, C.PYTHON_VERSION, C.RUN_ID, C.ATTEMPT_ID,
                *(C.version_col(p) for p in ("torch", "diffusers", "transformers", "timm", "torch-fidelity",
                                              "optuna", "numpy"))):
        assert col in cells.columns, col
    row = cells.iloc[0]
    assert len(row[C.GIT_SHA]) == 40 and row[C.SPEC_FILE].endswith("mixed.toml") and len(row[C.SPEC_HASH]) == 12
    assert row[C.STARTED_AT] < row[C.FINISHED_AT]
    assert json.loads(row[C.CONFIG_JSON])["data_url"] == "postgresql://alice:***@db.example:5432/grid"
    assert row[C.config_col("data_url")] == "postgresql://alice:***@db.example:5432/grid"
    # nowhere in the store, as bytes: rows, curves, the saved copy of the spec
    for path in store.rglob("*"):
        if path.is_file() and path.suffix in (".parquet", ".toml"):
            assert SECRET.encode() not in path.read_bytes(), path


def test_resume_skips_done_cells(grid, quiet):
    spec, store, _ = grid
    before = len(list(store.rglob("weights.pt")))  # a cell execution saves its weights
    result = run_grid(spec, only=["fail=none", "big"], console=quiet, show_progress=False)
    assert result.ran == [] and len(result.skipped) == 2
    assert len(list(store.rglob("weights.pt"))) == before


def test_force_reruns_and_keeps_the_superseded_row(grid, quiet):
    spec, store, _ = grid
    result = run_grid(spec, only=["fail=none"], force=True, console=quiet, show_progress=False)
    assert [s for _, s in result.ran] == ["ok"]
    h = result.ran[0][0].config_hash
    rows = load_cells(store, all_rows=True)
    rows = rows[rows[C.CONFIG_HASH] == h]
    assert list(rows[C.SUPERSEDED]) == [True, False]
    assert len(load_cells(store).query(f"{C.CONFIG_HASH} == @h")) == 1
    curves = load_curves(store)
    assert (curves[C.CONFIG_HASH] == h).sum() == 4  # only the current attempt's epochs
    assert len(list((store / CURVES_DIR).glob(f"{h}-*.parquet"))) == 2


def test_cli_dry_run_and_results_show(grid, monkeypatch):
    spec, store, _ = grid
    runner = CliRunner()
    app = typer.Typer()
    app.command("mixed")(make_bench_command("mixed"))
    app.command("other")(make_bench_command("other"))
    monkeypatch.setenv("DCT_ABLATIONS", str(spec.parent))  # the named command finds mixed.toml there
    out = runner.invoke(app, ["mixed", "--dry-run"], terminal_width=200)
    assert out.exit_code == 0, out.output
    assert "done" in out.output and "pending (last: oom)" in out.output

    out = runner.invoke(results_app, ["show", str(store), "--json", "--columns", "label,status,final_loss"])
    assert out.exit_code == 0, out.output
    records = json.loads(out.output)
    assert {r[C.LABEL]: r[C.STATUS] for r in records}["big"] == "ok"
    assert set(records[0]) == {C.LABEL, C.STATUS, C.metric_col("final_loss")}

    monkeypatch.setenv("COLUMNS", "250")  # rich's width when not writing to a terminal
    out = runner.invoke(results_app, ["show", str(store)])
    assert out.exit_code == 0 and "fail=sigkill" in out.output

    out = runner.invoke(results_app, ["show", str(store), "--columns", "nope"])
    assert out.exit_code == 2 and "no column 'nope'" in out.output


def test_cli_rejects_a_bad_spec_with_exit_2(write_spec):
    path = write_spec(SPEC.replace("steps = 4", "stpes = 4"))
    out = CliRunner().invoke(bench_app, ["run", "--spec", str(path)], terminal_width=200)
    assert out.exit_code == 2
    assert "unknown setting 'stpes'" in out.output


def test_failed_cells_are_retried_and_the_new_row_supersedes_the_old(write_spec, tmp_path, quiet, monkeypatch):
    path = write_spec("""
        [experiment]
        name = "retry"
        cell = "tiny_mlp"
        store = "STORE"
        [fixed]
        steps = 2
        [axes]
        width = [2, 3, 4, 5]
    """)
    store = tmp_path / "store"
    # The first run fails three cells, the oom one by a real allocation failure in the child (a 1 GiB
    # tensor past its address-space limit), not a hand-raised exception.
    monkeypatch.setenv("TINY_MLP_FAULTS", json.dumps({"width=2": "alloc_over_limit", "width=3": "error",
                                                      "width=4": "sigkill"}))
    first = run_grid(path, console=quiet, show_progress=False)
    assert [(c.label, s) for c, s in first.ran] == [("width=2", "oom"), ("width=3", "error"), ("width=4", "killed"),
                                                    ("width=5", "ok")]
    failed = load_cells(store).set_index(C.LABEL)
    assert "DefaultCPUAllocator: can't allocate memory" in failed.loc["width=2", C.ERROR]
    assert failed.loc["width=2", C.ERROR].startswith("RuntimeError")

    monkeypatch.delenv("TINY_MLP_FAULTS")  # the reason for the failures is gone: the next run retries them
    second = run_grid(path, console=quiet, show_progress=False)
    assert [(c.label, s) for c, s in second.ran] == [("width=2", "ok"), ("width=3", "ok"), ("width=4", "ok")]
    assert [c.label for c in second.skipped] == ["width=5"]

    rows = load_cells(store, all_rows=True)
    for label, old in (("width=2", "oom"), ("width=3", "error"), ("width=4", "killed")):
        attempts = rows[rows[C.LABEL] == label].sort_values(C.ATTEMPT_ID)
        assert list(attempts[C.STATUS]) == [old, "ok"] and list(attempts[C.SUPERSEDED]) == [True, False]
    current = load_cells(store).set_index(C.LABEL)
    assert (current[C.STATUS] == "ok").all() and current[C.metric_col("final_loss")].notna().all()
    assert current.loc[["width=2", "width=3", "width=4"], C.RUN_ID].nunique() == 1
    assert set(current.loc[["width=2", "width=3", "width=4"], C.RUN_ID]) != set(failed.loc[["width=2"], C.RUN_ID])
    assert run_grid(path, console=quiet, show_progress=False).ran == []  # and a third run has nothing to do
