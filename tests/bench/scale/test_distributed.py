"""Workers sharing a grid or a study through a database, each its own process (`dct worker`), on SQLite
and on a real PostgreSQL server: no cell run twice or lost, and a killed worker's cell or trial retried
by another worker."""

import signal
import sys
import textwrap
import time

import optuna
import pytest

from bench import columns as C
from bench import store as S
from bench.scale.distributed import DONE, GridBoard
from bench.scale.launch import prepare
from bench.search.study import RETRY_COL, TRIAL_COL, make_storage, study_store
from bench.spec import load_spec

from tests.bench.workers import dead, start_worker, wait_for

pytestmark = pytest.mark.slow  # each test starts workers as processes: ~30-50 s apiece

GRID = """
[experiment]
name = "NAME"
cell = "tiny_mlp"
store = "STORE"
[fixed]
steps = 3
step_sleep_s = SLEEP
[axes]
width = WIDTHS
"""


def write_grid(tmp_path, name, widths, sleep):
    path = tmp_path / "grid.toml"
    path.write_text(textwrap.dedent(GRID).replace("NAME", name).replace("STORE", str(tmp_path / "store"))
                    .replace("SLEEP", str(sleep)).replace("WIDTHS", str(widths)))
    return path


def test_two_workers_complete_one_grid_without_duplicates(storage_url, tmp_path, unique):
    spec = write_grid(tmp_path, unique, [1, 2, 3, 4, 5, 6], sleep=0.3)
    args = ["--storage", storage_url, "--grid", str(spec), "--device", "cpu", "--heartbeat", "1", "--grace", "20"]
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    workers = [start_worker(args, tmp_path, log) for log in logs]
    for w, log in zip(workers, logs):
        assert w.wait(timeout=300) == 0, log.read_text()[-3000:]

    all_hashes = set(load_spec(spec).cells)
    rows = S.load_cells(tmp_path / "store", all_rows=True)
    assert sorted(rows[C.CONFIG_HASH]) == sorted(all_hashes)  # every cell once: none lost, none twice
    assert (rows[C.STATUS] == C.STATUS_OK).all()
    board = GridBoard(storage_url, unique)
    table = board.rows()
    board.close()
    assert {r["config_hash"] for r in table} == all_hashes
    assert all(r["state"] == DONE and r["attempts"] == 1 and r["claim"] is None for r in table)
    assert {r["attempt_id"] for r in table} == set(rows[C.ATTEMPT_ID])  # the table names each stored attempt
    assert len({r["worker"] for r in table}) == 2, "both workers ran cells"


def test_a_killed_grid_workers_cell_is_run_by_another(storage_url, tmp_path, unique):
    spec = write_grid(tmp_path, unique, [1, 2], sleep=1.5)
    args = ["--storage", storage_url, "--grid", str(spec), "--device", "cpu", "--heartbeat", "1", "--grace", "3"]
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    a = start_worker(args, tmp_path, log_a)
    pid_file = wait_for(lambda: next((tmp_path / "store").glob("artifacts/*/*/pid"), None), 120, "a running cell",
                        a, log_a)
    time.sleep(0.5)
    a.send_signal(signal.SIGKILL)
    a.wait()
    cell_pid = int(pid_file.read_text())
    wait_for(lambda: dead(cell_pid), 10, "the killed worker's cell to die with it")

    b = start_worker(args, tmp_path, log_b)
    assert b.wait(timeout=300) == 0, log_b.read_text()[-3000:]
    rows = S.load_cells(tmp_path / "store", all_rows=True)
    assert sorted(rows[C.CONFIG_HASH]) == sorted(load_spec(spec).cells) and (rows[C.STATUS] == C.STATUS_OK).all()
    board = GridBoard(storage_url, unique)
    table = {r["config_hash"]: r for r in board.rows()}
    board.close()
    killed = pid_file.parent.parent.name
    assert table[killed]["attempts"] == 2 and table[killed]["state"] == DONE  # claimed again after the lease
    assert table[killed]["previous_attempt_id"] == pid_file.parent.name  # the dead attempt, which wrote no row
    assert pid_file.parent.name not in set(rows[C.ATTEMPT_ID])


def test_a_killed_workers_trial_is_retried_by_another(storage_url, tmp_path, mlp_space, unique):
    # No pruner: the retry is judged by whether it runs to the end, and the median pruner may legitimately
    # stop a retried trial whose loss is worse than the other one's.
    space = mlp_space(unique, trials=2, sleep=1.5, pruner="none")
    results = tmp_path / "results"
    prepare("study", unique, storage_url, space=str(space))  # as dct launch does before starting workers
    args = ["--storage", storage_url, "--study", unique, "--results", str(results), "--device", "cpu",
            "--heartbeat", "1", "--grace", "3"]
    store = study_store(unique, results)
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    a = start_worker(args, tmp_path, log_a)
    pid_file = wait_for(lambda: next(store.glob("artifacts/*/*/pid"), None), 120, "a running trial", a, log_a)
    a.send_signal(signal.SIGKILL)
    a.wait()
    wait_for(lambda: dead(int(pid_file.read_text())), 10, "the killed worker's cell to die with it")

    b = start_worker(args, tmp_path, log_b)
    assert b.wait(timeout=300) == 0, log_b.read_text()[-3000:]
    study = optuna.load_study(study_name=unique, storage=make_storage(storage_url, heartbeat=1))
    trials = {t.number: t for t in study.get_trials()}
    killed = trials[0]
    assert killed.state == optuna.trial.TrialState.FAIL
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == 0]
    assert len(retries) == 1 and retries[0].state == optuna.trial.TrialState.COMPLETE
    assert retries[0].params == killed.params
    # the budget: the failed-and-retried trial does not count
    finished = [t for t in trials.values() if t.state in (optuna.trial.TrialState.COMPLETE,
                                                          optuna.trial.TrialState.PRUNED)]
    assert len(finished) == 2 == len(trials) - 1, [(t.number, t.state, t.system_attrs) for t in trials.values()]
    rows = S.load_cells(store, all_rows=True)
    assert sorted(rows[TRIAL_COL]) == sorted(t.number for t in finished)  # no row of the killed attempt
    assert rows.set_index(TRIAL_COL).loc[retries[0].number, RETRY_COL] == 0


def test_a_stopped_search_requeues_its_trial(tmp_path, mlp_space, unique):
    """Ctrl-C (or SLURM's SIGTERM) stops `dct search`: the running trial comes back first when resumed."""
    import subprocess

    from tests.bench.workers import worker_env

    space = mlp_space(unique, trials=2, sleep=1.5)
    code = "import tests.bench.mlp_cell; from bench.search.cli import search_app; search_app()"
    args = ["--space", str(space), "--device", "cpu", "--no-figures", "--heartbeat", "1"]
    log = tmp_path / "search.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=tmp_path, env=worker_env(), stdout=out,
                                stderr=subprocess.STDOUT)
        store = study_store(unique, tmp_path / "results")
        wait_for(lambda: next(store.glob("artifacts/*/*/pid"), None), 120, "a running trial", proc, log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM, log.read_text()
    assert "re-queued" in log.read_text()
    storage = make_storage(f"sqlite:///{store / 'study.db'}")
    study = optuna.load_study(study_name=unique, storage=storage)
    states = [t.state for t in study.get_trials()]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]
    with open(log, "a") as out:
        done = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, env=worker_env(), stdout=out,
                              stderr=subprocess.STDOUT, timeout=300)
    assert done.returncode == 0, log.read_text()[-3000:]
    trials = optuna.load_study(study_name=unique, storage=storage).get_trials()
    assert trials[1].state == optuna.trial.TrialState.COMPLETE and trials[1].params == trials[0].params
    assert len(trials) == 3 and trials[2].state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
