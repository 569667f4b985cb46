"""`dct launch` through submitit's local executor, and the database password kept out of everything the
harness writes: results, logs, figures, reports, submitit's files."""

import textwrap

import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from bench import columns as C
from bench import store as S
from bench.scale.launch import launch_app, worker_app
from bench.scale.shared_grid import counts, grid_study
from bench.search.storage import make_storage, study_store
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
    assert counts(grid_study(make_storage(pg_url), unique), set(load_spec(spec).cells)) == {"done": 3}
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


FAKE_SBATCH = r"""#!/bin/bash
# A fake sbatch: every task of the job array runs in the background on this machine, with the variables
# SLURM sets on a node; prints what sbatch prints.
script="$1"
last=$(grep -o -- '--array=0-[0-9]*' "$script" | sed 's/.*-//')
for i in $(seq 0 "${last:-0}"); do
  SLURM_JOB_ID=$((4243 + i)) SLURM_ARRAY_JOB_ID=4242 SLURM_ARRAY_TASK_ID=$i SLURM_NTASKS=1 SLURM_JOB_NUM_NODES=1 \
    SLURM_NODEID=0 SLURM_PROCID=0 SLURM_LOCALID=0 SLURM_JOB_NODELIST=localhost \
    setsid bash "$script" > "$FAKE_SLURM_DIR/task$i.log" 2>&1 &
  echo $! >> "$FAKE_SLURM_DIR/pids"
done
echo "Submitted batch job 4242"
"""

FAKE_SRUN = r"""#!/bin/bash
# A fake srun: drops srun's own options and runs the command
while [[ "$1" == --* ]]; do
  case "$1" in --output|--error) shift 2 ;; *) shift ;; esac
done
exec "$@"
"""


def test_launch_slurm_workers_on_a_journal_file(in_tmp, unique, monkeypatch):
    """`dct launch --slurm` with a journal file as the storage (no database server), through fake
    sbatch/srun scripts: the jobs are submitit's own, and together they run every cell once."""
    import os
    import pickle
    import time

    from tests.bench.workers import dead, wait_for

    bin_dir = in_tmp / "bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("srun", FAKE_SRUN)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(in_tmp))
    spec = grid(in_tmp, unique)
    journal = f"journal://{in_tmp / 'shared' / 'dct.log'}"
    out = CliRunner().invoke(launch_app, ["--slurm", "--workers", "2", "--storage", journal, "--grid", str(spec),
                                          "--device", "cpu", "--heartbeat", "2", "--folder", "launch",
                                          "--partition", "gpu"])
    assert out.exit_code == 0, out.output
    assert "submitted 2 grid worker(s) (slurm)" in out.output and "4242_0, 4242_1" in out.output
    script = next((in_tmp / "launch").rglob("*.sh")).read_text()
    assert "#SBATCH --partition=gpu" in script and "#SBATCH --array=0-1" in script

    pids = [int(p) for p in (in_tmp / "pids").read_text().split()]
    deadline = time.monotonic() + 300
    for pid in pids:
        wait_for(lambda: dead(pid), max(1.0, deadline - time.monotonic()), f"fake SLURM task {pid}")
    logs = "\n".join(p.read_text()[-2000:] for p in in_tmp.glob("task*.log"))
    rows = S.load_cells(in_tmp / "store", all_rows=True)
    assert sorted(rows[C.CONFIG_HASH]) == sorted(load_spec(spec).cells), logs  # every cell, once
    assert (rows[C.STATUS] == C.STATUS_OK).all()
    results = [pickle.loads(p.read_bytes()) for p in (in_tmp / "launch").rglob("*_result.pkl")]
    assert [r[0] for r in results] == ["success", "success"], logs
    assert sum(len(r[1]["ran"]) for r in results) == 3
