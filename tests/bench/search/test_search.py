"""`dct search` in-process on the cheap tiny_mlp cell: trials are cells of the study's store (grid
columns and provenance), the study resumes, enqueued and repeated configs, pruning, best export, figures,
and the CLI."""

import json
import tomllib

import optuna
import pytest
from typer.testing import CliRunner

from bench import columns as C
from bench import store as S
from bench.search.show import export_best
from bench.search.storage import make_storage, study_store
from bench.search.study import (ATTR_REUSED, STATUS_PRUNED, STUDY_COL, TRIAL_COL, IntermediateReporter,
                                TrialRunner, open_study, run_search, run_trials)
from bench.search.cli import search_app
from bench.search.space import parse_space
from dct.errors import ConfigError

# every column a grid row has, whatever the cell kind (bench.grid._row and bench.provenance)
GRID_COLUMNS = {C.EXPERIMENT, C.CONFIG_HASH, C.LABEL, C.ORIGIN, C.CELL_KIND, C.CONFIG_JSON, C.SEED, C.RUN_ID,
                C.ATTEMPT_ID, C.ARTIFACTS_DIR, C.STATUS, C.ERROR, C.TRACEBACK, C.STARTED_AT, C.FINISHED_AT,
                C.GIT_SHA, C.GIT_DIRTY, C.HOSTNAME, C.PYTHON_VERSION, C.SPEC_FILE, C.SPEC_HASH, C.WALL_S,
                C.PROCESS_WALL_S, C.STEP_TIME_MEDIAN_S, C.STEP_TIMES_S, C.PEAK_MEM_BYTES, C.PEAK_RSS_BYTES,
                C.DEVICE, C.DEVICE_NAME, C.version_col("torch"), C.version_col("optuna")}


@pytest.fixture
def quiet():
    import io

    from rich.console import Console

    return Console(file=io.StringIO(), width=200)


def test_search_stores_trials_like_grid_cells_and_resumes(mlp_space, tmp_path, quiet, unique):
    space = mlp_space(unique, trials=2, pruner="none")  # reported, not pruned: every trial completes
    results = tmp_path / "results"
    first = run_search(space, results=results, device="cpu", heartbeat=2, console=quiet)
    assert [n for n, _ in first.ran] == [0, 1]
    store = study_store(unique, results)
    assert (store / "study.db").is_file()  # the default storage: SQLite beside the store

    # resume: the same study, up to the new budget; no trial runs twice
    again = run_search(space, results=results, trials=3, device="cpu", heartbeat=2, console=quiet)
    assert [n for n, _ in again.ran] == [2]
    assert run_search(None, study_name=unique, results=results, device="cpu", console=quiet).ran == []

    rows = S.load_cells(store, all_rows=True)
    assert len(rows) == 3 and (rows[C.STATUS] == C.STATUS_OK).all()
    assert GRID_COLUMNS <= set(rows.columns), GRID_COLUMNS - set(rows.columns)
    assert sorted(rows[TRIAL_COL]) == [0, 1, 2] and set(rows[STUDY_COL]) == {unique}
    assert set(rows[C.EXPERIMENT]) == {unique} and set(rows[C.ORIGIN]) == {"search"}
    ok = rows[rows[C.STATUS] == C.STATUS_OK].iloc[0]
    assert json.loads(ok[C.CONFIG_JSON])["steps"] == 3 and ok[C.metric_col("final_loss")] > 0
    assert ok[C.SPEC_FILE] == str(space) and (store / S.SPECS_DIR / f"{ok[C.SPEC_HASH]}.toml").is_file()
    assert len(S.load_curves(store)) >= 3  # per-step curves, as in a grid

    figures = first.figures
    for name in ("history", "importances", "intermediate"):
        assert figures[name].endswith(f"{name}.png"), figures
        assert (store / "figures" / f"{name}.png").stat().st_size > 5000

    # a study keeps its space: another file under the same name is refused
    space.write_text(space.read_text().replace("high = 0.5", "high = 0.6"))
    with pytest.raises(ConfigError, match="was created from another search space"):
        run_search(space, results=results, device="cpu", console=quiet)


def _study(mlp_space, tmp_path, name, trials, sleep=0.0):
    space_file = mlp_space(name, trials=trials, sleep=sleep)
    storage = make_storage(f"sqlite:///{tmp_path / 'db.sqlite'}", heartbeat=2)
    study, space = open_study(storage, study_name=name, space_path=space_file)
    return study, space


def test_pruned_trial_is_killed_and_recorded_with_its_curves(mlp_space, tmp_path, quiet, unique):
    study, space = _study(mlp_space, tmp_path, unique, trials=2)
    study.enqueue_trial({"lr": 0.3, "width": 8})
    study.enqueue_trial({"lr": 0.001, "width": 8})  # same start, barely moves: worse than the median at step 1
    store = tmp_path / "store"
    runner = TrialRunner(space, unique, store, "cpu", console=quiet)
    run_trials(study, space, runner, wait_for_others=False, console=quiet)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED]
    rows = S.load_cells(store, all_rows=True).set_index(TRIAL_COL)
    assert rows.loc[1, C.STATUS] == STATUS_PRUNED and rows.loc[1, C.ERROR].startswith("pruned by Optuna")
    curves = S.load_curves(store)
    pruned = curves[curves[C.ATTEMPT_ID] == rows.loc[1, C.ATTEMPT_ID]]
    assert 1 <= len(pruned) < 3 and pruned[C.LOSS].notna().all()  # killed before its last step


def test_a_repeated_config_is_read_from_the_store(mlp_space, tmp_path, quiet, unique):
    study, space = _study(mlp_space, tmp_path, unique, trials=2)
    for _ in range(2):
        study.enqueue_trial({"lr": 0.05, "width": 2})
    store = tmp_path / "store"
    run_trials(study, space, TrialRunner(space, unique, store, "cpu", console=quiet), wait_for_others=False,
               console=quiet)
    first, second = study.trials
    assert second.user_attrs[ATTR_REUSED] == first.user_attrs["attempt_id"]
    assert second.value == first.value and len(S.load_cells(store, all_rows=True)) == 1
    # replayed from its curves (progress messages carry 4 decimals, curves all of them)
    assert second.intermediate_values == pytest.approx(first.intermediate_values, abs=1e-4)


def test_export_best_for_another_cell_kind(mlp_space, tmp_path, quiet, unique):
    study, space = _study(mlp_space, tmp_path, unique, trials=2)
    run_trials(study, space, TrialRunner(space, unique, tmp_path / "store", "cpu", console=quiet),
               wait_for_others=False, console=quiet)
    path = export_best(study, space, tmp_path / "best.toml")
    data = tomllib.loads(path.read_text())
    assert "train" not in data and data["config"]["steps"] == 3
    assert data["search"]["trial"] == study.best_trial.number
    assert data["search"]["metric_final_loss:minimize"] == study.best_value


def test_reporter_holds_a_stopped_class_and_prunes_below_the_median():
    space = parse_space("""
        [study]
        name = "r"
        objectives = "images"
        [fixed]
        max_epochs = 4
        [space.lr]
        type = "float"
        low = 0.01
        high = 0.1
        [pruning]
        window = 2
        startup_trials = 1
        warmup_epochs = 0
    """)
    assert space.epoch_stride == 4
    study = optuna.create_study(direction="minimize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1,
                                                                                         n_warmup_steps=0))
    good = study.ask()
    reporter = IntermediateReporter(good, space, max_epochs=4, prune=True)
    reporter.add(0, 0, 0.5)
    reporter.add(0, 1, 1.0)  # class 0 stops at the threshold after two epochs
    reporter.add(1, 0, 0.0)
    # minimised objective: the guide error (1 - mean of the last 2 epochs) is reported
    assert good.storage.get_trial(good._trial_id).intermediate_values == {0: 0.5, 1: 0.25, 2: 0.25, 3: 0.25, 4: 1.0}
    study.tell(good, 8.0)
    bad = study.ask()
    reporter = IntermediateReporter(bad, space, max_epochs=4, prune=True)
    reporter.add(0, 0, 0.5)
    with pytest.raises(optuna.TrialPruned, match="class #0 epoch 1"):
        reporter.add(0, 1, 0.0, prune=True)


def test_cli_search_show_best(mlp_space, tmp_path, monkeypatch, unique):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "250")  # rich's width when not writing to a terminal
    space = mlp_space(unique, trials=2)
    runner = CliRunner()
    out = runner.invoke(search_app, ["--space", str(space), "--device", "cpu", "--no-figures", "--heartbeat", "2"],
                        terminal_width=200)
    assert out.exit_code == 0, out.output
    assert "2 of 2 finished" in out.output and f"results/search/{unique}" in out.output
    out = runner.invoke(search_app, ["show", "--study", unique], terminal_width=200)
    assert out.exit_code == 0 and "complete trial" in out.output, out.output
    out = runner.invoke(search_app, ["best", "--study", unique], terminal_width=200)
    assert out.exit_code == 0, out.output
    assert tomllib.loads((tmp_path / "results" / "search" / unique / "best.toml").read_text())["config"]
    out = runner.invoke(search_app, ["best", "--study", "nope"], terminal_width=200)
    assert out.exit_code == 2 and "no study 'nope'" in out.output
    assert not (tmp_path / "results" / "search" / "nope").exists()  # looking does not create
    out = runner.invoke(search_app, ["--space", str(tmp_path / "missing.toml")], terminal_width=200)
    assert out.exit_code == 2 and "does not exist" in out.output


def test_multi_objective_study_draws_its_pareto_front(mlp_space, tmp_path, quiet, unique):
    space = mlp_space(unique, trials=4)
    space.write_text(space.read_text().replace('objectives = "metric_final_loss:minimize"',
                                               'objectives = ["metric_final_loss:minimize", "peak_mem"]')
                     .replace('pruner = "median"', 'pruner = "auto"'))  # auto: none for several objectives
    result = run_search(space, results=tmp_path / "results", device="cpu", heartbeat=2, console=quiet)
    study = result.study
    assert type(study.sampler).__name__ == "NSGAIISampler" and len(study.directions) == 2
    assert all(t.state == optuna.trial.TrialState.COMPLETE and not t.intermediate_values for t in study.trials)
    assert result.figures["pareto"].endswith("pareto.png"), result.figures
    for name in ("history-metric_final_loss:minimize", "history-peak_mem", "importances-peak_mem"):
        assert name in result.figures
    best = tomllib.loads(export_best(study, result.space, tmp_path / "best.toml").read_text())
    # several objectives: the Pareto trial best in the first one
    front = study.best_trials
    assert best["search"]["trial"] == min(front, key=lambda t: t.values[0]).number
    rows = S.load_cells(study_store(unique, tmp_path / "results"), all_rows=True)
    peak = rows.set_index(C.ATTEMPT_ID)[C.PEAK_MEM_BYTES]
    for t in study.trials:  # the objective is the stored measurement (of the reused attempt, if any)
        assert peak[t.user_attrs.get(ATTR_REUSED) or t.user_attrs["attempt_id"]] == t.values[1]


def test_trials_budget_holds_with_enqueued_trials(mlp_space, tmp_path, monkeypatch, unique):
    """`dct search --trials 1` runs one trial, even with two trials enqueued (as a dct space's presets are)."""
    from bench.search.storage import resolve_storage_url

    monkeypatch.chdir(tmp_path)
    space = mlp_space(unique, trials=5)
    study, _ = open_study(make_storage(resolve_storage_url(None, unique, "results")), study_name=unique,
                          space_path=space)
    for lr in (0.01, 0.02):
        study.enqueue_trial({"lr": lr, "width": 8})
    out = CliRunner().invoke(search_app, ["--space", str(space), "--trials", "1", "--device", "cpu", "--no-figures",
                                          "--heartbeat", "2"], terminal_width=200)
    assert out.exit_code == 0, out.output
    assert "this run: 1 trial(s)" in out.output and "1 of 1 finished" in out.output
