"""Workers sharing a grid or a study through Optuna's storage, each its own process (`dct worker`), on
SQLite, a journal file and a real PostgreSQL server: no cell run twice or lost, a killed worker's cell or
trial retried by another worker, a row written before a worker died not run again, retries capped."""

import signal
import sys
import textwrap
import time

import optuna
import pytest

from bench import columns as C
from bench import store as S
from bench.scale.launch import prepare
from bench.scale.shared_grid import ATTR_ATTEMPT, ATTR_DUPLICATE, ATTR_HASH, ATTR_WORKER, grid_study
from bench.search.storage import make_storage, study_store
from bench.search.study import RETRY_COL, TRIAL_COL
from bench.spec import load_spec

from tests.bench.workers import dead, start_worker, wait_for

pytestmark = pytest.mark.slow  # each test starts workers as processes: ~20-40 s apiece

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
    spec = write_grid(tmp_path, unique, [1, 2, 3, 4], sleep=0.3)
    args = ["--storage", storage_url, "--grid", str(spec), "--device", "cpu", "--heartbeat", "1", "--grace", "20"]
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    workers = [start_worker(args, tmp_path, log) for log in logs]
    for w, log in zip(workers, logs):
        assert w.wait(timeout=300) == 0, log.read_text()[-3000:]

    all_hashes = set(load_spec(spec).cells)
    rows = S.load_cells(tmp_path / "store", all_rows=True)
    assert sorted(rows[C.CONFIG_HASH]) == sorted(all_hashes)  # every cell once: none lost, none twice
    assert (rows[C.STATUS] == C.STATUS_OK).all()
    trials = grid_study(make_storage(storage_url), unique).get_trials()
    # both workers may enqueue a cell when they start together: the later trial is failed as a duplicate
    duplicates = [t for t in trials if ATTR_DUPLICATE in t.user_attrs]
    assert all(t.state == optuna.trial.TrialState.FAIL for t in duplicates)
    trials = [t for t in trials if t not in duplicates]
    assert sorted(t.user_attrs[ATTR_HASH] for t in trials) == sorted(all_hashes)  # one trial per cell
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert {t.user_attrs[ATTR_ATTEMPT] for t in trials} == set(rows[C.ATTEMPT_ID])  # trials name the attempts
    assert len({t.user_attrs[ATTR_WORKER] for t in trials}) == 2, "both workers ran cells"


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
    trials = grid_study(make_storage(storage_url), unique).get_trials()
    killed = [t for t in trials if t.user_attrs[ATTR_HASH] == pid_file.parent.parent.name]
    # claimed again after the grace period: the dead attempt failed, its retry complete
    assert [t.state for t in killed] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
    assert killed[0].user_attrs[ATTR_ATTEMPT] == pid_file.parent.name  # the dead attempt, which wrote no row
    assert killed[1].system_attrs["failed_trial"] == killed[0].number
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


CLAIMER = """
import json, os, sys, time
from bench.scale.shared_grid import claim, grid_study
from bench.search.storage import make_storage
study = grid_study(make_storage(sys.argv[1], heartbeat=60), sys.argv[2])
while not os.path.exists(sys.argv[3]):
    time.sleep(0.01)
got = []
while (trial := claim(study, {f"h{i}" for i in range(60)})) is not None:
    got.append(trial.number)
print(json.dumps(got))
"""


def test_three_claimers_never_take_one_trial_twice(storage_url, tmp_path, unique):
    """Claims race for 60 enqueued trials: each is taken exactly once (on SQLite only with BEGIN IMMEDIATE)."""
    import json
    import subprocess

    from tests.bench.workers import worker_env

    study = grid_study(make_storage(storage_url), unique)
    for i in range(60):
        study.enqueue_trial({}, user_attrs={ATTR_HASH: f"h{i}", "position": i})
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, storage_url, unique, str(go)], env=worker_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    time.sleep(3)  # all three connected and waiting
    go.touch()
    claimed = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        claimed += json.loads(out.strip().splitlines()[-1])
    assert sorted(claimed) == list(range(60)), f"{len(claimed)} claims of 60 trials"


def _one_cell_stale(study, h: str, grace: float):
    # a worker that claimed the cell and died: its trial heartbeated once, then nothing
    from bench.scale.shared_grid import claim

    trial = claim(study, {h})
    assert trial is not None and trial.user_attrs[ATTR_HASH] == h
    time.sleep(grace + 1.2)
    return trial


def _write_ok_row(spec, cell, attempt_id: str) -> None:
    from bench.grid import _row

    outcome = {C.STATUS: C.STATUS_OK, C.ERROR: None, C.TRACEBACK: None, "metrics": {"final_loss": 0.5}, "curves": [],
               "measured": {}}
    S.write_attempt(spec.store, _row(spec, cell, run_id="r", attempt_id=attempt_id, store=spec.store, started="s",
                                     finished="f", result=outcome, prov={}), [])


def test_a_cell_done_in_the_store_after_it_was_enqueued_is_not_run(tmp_path, unique, quiet):
    from bench.scale.shared_grid import register, run_grid_worker

    spec_path = write_grid(tmp_path, unique, [1, 2], sleep=0.0)
    spec = load_spec(spec_path)
    first, second = spec.cells.values()
    url = f"sqlite:///{tmp_path / 'x.db'}"
    register(grid_study(make_storage(url), unique), list(spec.cells.values()))  # as dct launch does
    _write_ok_row(spec, first, "local0001")  # then a local `dct bench` run did the first cell
    result = run_grid_worker(spec_path, storage=url, device="cpu", heartbeat=1, grace=2, console=quiet)
    assert result.ran == [(second.config_hash, C.STATUS_OK)] and result.counts == {"done": 2}
    assert len(S.load_cells(spec.store, all_rows=True)) == 2


def test_a_row_written_before_the_worker_died_is_not_run_again(storage_url, tmp_path, unique, quiet):
    from bench.scale.shared_grid import register, run_grid_worker

    spec_path = write_grid(tmp_path, unique, [1, 2], sleep=0.0)
    spec = load_spec(spec_path)
    first, second = spec.cells.values()
    study = grid_study(make_storage(storage_url, heartbeat=1, grace=2), unique)
    register(study, list(spec.cells.values()))
    trial = _one_cell_stale(study, first.config_hash, grace=0)
    study._storage.set_trial_user_attr(trial._trial_id, ATTR_ATTEMPT, "deadbeef01")
    _write_ok_row(spec, first, "deadbeef01")  # the row is written; the worker dies before it finishes the trial
    time.sleep(3.2)  # past the grace period

    result = run_grid_worker(spec_path, storage=storage_url, device="cpu", heartbeat=1, grace=2, console=quiet)
    assert result.recovered == [first.config_hash] and result.ran == [(second.config_hash, C.STATUS_OK)]
    rows = S.load_cells(spec.store, all_rows=True)
    assert sorted(rows[C.CONFIG_HASH]) == sorted(spec.cells)  # the first cell's one row, not a second
    assert result.counts == {"done": 2}


def test_retries_are_capped_and_a_hand_back_is_not_a_retry(storage_url, tmp_path, unique, quiet):
    from bench.scale.shared_grid import register, run_grid_worker
    from bench.search.storage import hand_back
    from bench.search.worker import fail_stale

    spec_path = write_grid(tmp_path, unique, [1, 2], sleep=0.0)
    spec = load_spec(spec_path)
    first, second = spec.cells.values()
    study = grid_study(make_storage(storage_url, heartbeat=1, grace=2, max_retry=1), unique)
    register(study, list(spec.cells.values()))
    handed = _one_cell_stale(study, first.config_hash, grace=0)
    hand_back(study, handed.number)  # a worker stopped by SIGTERM: its cell comes back, not as a retry
    _one_cell_stale(study, first.config_hash, grace=2)  # then a worker dies on it: the one retry allowed
    fail_stale(study)
    waiting = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.WAITING
               and t.user_attrs[ATTR_HASH] == first.config_hash]
    assert len(waiting) == 1, "the killed claim is retried: the hand-back before it did not count"
    _one_cell_stale(study, first.config_hash, grace=2)  # the retry's worker dies too: given up

    result = run_grid_worker(spec_path, storage=storage_url, device="cpu", heartbeat=1, grace=2, max_retry=1,
                             console=quiet)
    assert result.ran == [(second.config_hash, C.STATUS_OK)]
    rows = S.load_cells(spec.store, all_rows=True).set_index(C.CONFIG_HASH)
    assert rows.loc[first.config_hash, C.STATUS] == C.STATUS_KILLED  # the given-up row says what happened
    assert "2 worker(s) claimed this cell" in rows.loc[first.config_hash, C.ERROR]
    assert result.counts == {"done": 1, "failed": 1}


def test_a_worker_that_lost_its_claim_stops_its_cell(tmp_path, unique):
    """Another worker failed the trial as stale (this one was paused past the grace period): ClaimWatch
    interrupts the running cell at its next heartbeat."""
    from bench.scale.shared_grid import claim
    from bench.search.worker import ClaimLost, ClaimWatch

    study = grid_study(make_storage(f"sqlite:///{tmp_path / 'x.db'}", heartbeat=1), unique)
    study.enqueue_trial({}, user_attrs={ATTR_HASH: "h0"})
    trial = claim(study, {"h0"})
    started = time.monotonic()
    with pytest.raises(ClaimLost):
        with ClaimWatch(study._storage, trial._trial_id, 0.2):
            study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
            time.sleep(20)  # a cell running in bench.child: the interruption kills it
    assert time.monotonic() - started < 5


def test_a_cell_enqueued_twice_is_claimed_once(tmp_path, unique):
    """Two workers filling the grid at once may enqueue a cell twice: the lowest trial number wins."""
    from bench.scale.shared_grid import claim

    study = grid_study(make_storage(f"journal://{tmp_path / 'x.log'}"), unique)
    for _ in range(2):
        study.enqueue_trial({}, user_attrs={ATTR_HASH: "h0", "position": 0})
    first = claim(study, {"h0"})
    assert first.number == 0 and claim(study, {"h0"}) is None
    second = study.get_trials()[1]
    assert second.state == optuna.trial.TrialState.FAIL and second.user_attrs[ATTR_DUPLICATE] == 0
