"""`dct launch` through submitit's local executor, and the database password kept out of everything the
harness writes: results, logs, figures, reports, submitit's files."""

import textwrap

import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from bench import columns as C
from bench import store as S
from bench.scale.distributed import GridBoard
from bench.scale.launch import launch_app, worker_app
from bench.search.study import study_store
from bench.search.cli import search_app
from bench.spec import load_spec

from tests.bench.workers import REPO, start_worker

pytestmark = pytest.mark.slow

GRID = """
[experiment]
name = "NAME"
cell = "tiny_mlp"
store = "store"
[fixed]
steps = 3
step_sleep_s = 0.2
data_url = "postgresql://someone:data-pw-123@example.org/data"
[axes]
width = [1, 2, 3]
"""


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    # the launched jobs inherit this environment and run in this folder
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("DCT_CELL_MODULES", "tests.bench.mlp_cell")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("COLUMNS", "250")
    return tmp_path


def grid(tmp_path, name):
    path = tmp_path / "grid.toml"
    path.write_text(textwrap.dedent(GRID).replace("NAME", name))
    return path


def test_launch_local_workers_complete_a_grid(storage_url, in_tmp, unique):
    spec = grid(in_tmp, unique)
    out = CliRunner().invoke(launch_app, ["--local", "--workers", "2", "--storage", storage_url, "--grid", str(spec),
                                          "--device", "cpu", "--heartbeat", "2", "--folder", "launch", "--wait"])
    assert out.exit_code == 0, out.output
    assert "submitted 2 grid worker(s) (local)" in out.output and out.output.count("job ") >= 2
    rows = S.load_cells(in_tmp / "store", all_rows=True)
    assert sorted(rows[C.CONFIG_HASH]) == sorted(load_spec(spec).cells) and (rows[C.STATUS] == C.STATUS_OK).all()
    assert list((in_tmp / "launch").glob("*/*_log.out"))  # submitit's logs, one folder per job


def test_launch_needs_one_executor_and_one_target(in_tmp):
    runner = CliRunner()
    out = runner.invoke(launch_app, ["--workers", "2", "--storage", "sqlite:///x.db", "--study", "s"])
    assert out.exit_code == 2 and "exactly one of --slurm and --local" in out.output
    out = runner.invoke(launch_app, ["--local", "--storage", "sqlite:///x.db"])
    assert out.exit_code == 2 and "exactly one of --study NAME and --grid SPEC" in out.output
    out = runner.invoke(worker_app, ["--study", "s"], env={"DCT_STORAGE": ""})
    assert out.exit_code == 2 and "give --storage URL" in out.output


def test_the_database_password_is_never_written(pg_url, in_tmp, mlp_space, unique):
    password = make_url(pg_url).password
    assert password and len(password) >= 16
    runner = CliRunner()
    outputs = []

    # a study created and run by two local workers (the password only in the launcher's URL)
    space = mlp_space(unique, trials=3, pruner="none")
    out = runner.invoke(launch_app, ["--local", "--workers", "2", "--storage", pg_url, "--study", unique,
                                     "--space", str(space), "--device", "cpu", "--heartbeat", "2",
                                     "--folder", "launch", "--wait"])
    outputs.append(out.output)
    assert out.exit_code == 0, out.output
    assert "on postgresql://dct@127.0.0.1" in out.output and "ran 3 trial(s) in all" in out.output
    # its figures and best preset, read through the same URL
    for command in (["plots"], ["best"], ["show"]):
        out = runner.invoke(search_app, [*command, "--study", unique, "--storage", pg_url])
        outputs.append(out.output)
        assert out.exit_code == 0, out.output
    store = study_store(unique)
    assert len(list((store / "figures").glob("*.png"))) >= 3 and (store / "best.toml").is_file()
    assert len(S.load_cells(store)) == 3

    # a grid worker as its own process, its output in a log file
    spec = grid(in_tmp, unique)
    worker = start_worker(["--storage", pg_url, "--grid", str(spec), "--device", "cpu", "--heartbeat", "2"],
                          in_tmp, in_tmp / "grid-worker.log")
    assert worker.wait(timeout=300) == 0, (in_tmp / "grid-worker.log").read_text()[-3000:]
    board = GridBoard(pg_url, unique)
    assert board.counts() == {"done": 3}
    board.close()
    # a wrong password: a clear error, and the URL in it redacted
    wrong = make_url(pg_url).set(password="not-the-pw-4711").render_as_string(hide_password=False)
    out = runner.invoke(worker_app, ["--storage", wrong, "--grid", str(spec)])
    outputs.append(out.output)
    assert out.exit_code == 2 and "cannot open storage postgresql://dct:***@" in out.output, out.output
    assert "not-the-pw-4711" not in out.output

    for text in outputs:
        assert password not in text
    written = [p for p in in_tmp.rglob("*") if p.is_file()]
    assert any(p.suffix == ".pkl" for p in written) and any(p.suffix == ".png" for p in written)
    assert any(p.name == "grid-worker.log" for p in written) and any(p.suffix == ".parquet" for p in written)
    for path in written:
        data = path.read_bytes()
        assert password.encode() not in data, path
        assert b"data-pw-123" not in data or path.name == "grid.toml", path  # a cell's own URL is redacted too
