"""Hyper-parameter search over cells: an Optuna study whose trials are cells, run and measured exactly as
grid cells are (one fresh child process through bench.child, the grid's row writer, the same store).

    dct search                                   # ablations/search.toml, SQLite under results/search/<study>/
    dct search --trials 60                       # the same study, continued up to 60 finished trials
    dct search best                              # the best configuration as a preset file for `dct train`
    dct worker --storage postgresql://u@db/x --study dct-search    # more workers, on other machines

    results/search/<study>/
        study.db            the Optuna study (default storage; --storage puts it in a shared database)
        cells/ curves/ artifacts/ specs/     the pandas store (bench.store): one row per trial attempt
        figures/            history, parameter importances, Pareto front, intermediate values (PNG)
        best.toml           `dct search best`

How a trial runs: the objective samples parameters (bench.search.space), validates the cell's settings,
and runs the cell with bench.child.run_in_child, the grid's own child runner. Intermediate values come
from the cell's progress messages, which the dct cell sends after every epoch (guide accuracy `acc` of
class k, epoch e): each is reported to Optuna at step k * stride + e (stride = the largest max_epochs of
the space), as the mean of the class's last `window` epochs; when a class stops early its last value is
held for its remaining epochs, so a token that stopped at the threshold keeps counting as good. A pruned
trial's cell is killed at once; its row has status "pruned" and the epochs it reported as curves.

Rows: the grid's columns and provenance (bench.grid._row, bench.store.write_attempt) plus search_study,
search_trial, search_preset (the enqueued preset, if any) and search_retry_of. A trial whose config
already has an ok row in the store is not run again: its values are read from that row.

Heartbeats and retries: the storage records a heartbeat of every running trial (heartbeat_interval); a
trial whose heartbeat is older than grace_period (its worker was killed, or its machine lost) is failed
by the next worker that starts a trial or waits for one, and Retry (bench.search.storage) enqueues a copy
with the same parameters, which runs before any new trial. A trial stopped by Ctrl-C or SIGTERM is handed
back: re-queued the same way, not counted as a retry. The loop is bench.search.worker's, shared with
grids. The budget (`trials`) counts finished trials (complete, pruned, failed) except failed ones that
were retried; with several workers it can overshoot by up to one trial per worker.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from dct.config import config_hash
from dct.errors import ConfigError, DCTError

from bench import columns as C
from bench import store as S
from dct.device import resolve_device
from bench.provenance import now_iso, provenance, redact
from bench.search.space import SearchSpace, load_space, parse_space
from bench.search.storage import make_storage, resolve_storage_url, study_store
from bench.search.worker import work
from bench.spec import Cell, Spec, _fmt

DEFAULT_SPACE = Path("ablations/search.toml")

STATUS_PRUNED = "pruned"  # a store status of search rows only: Optuna stopped the trial early
STUDY_COL = "search_study"
TRIAL_COL = "search_trial"
PRESET_COL = "search_preset"
RETRY_COL = "search_retry_of"

ATTR_SPACE = "dct_space"  # the space TOML: workers elsewhere need no file
ATTR_SPACE_SOURCE = "dct_space_source"
ATTR_SPACE_HASH = "dct_space_hash"
ATTR_TRIALS = "dct_trials"
ATTR_ENQUEUED = "dct_enqueued"
ATTR_PRESET = "preset"  # trial: the enqueued preset it runs
ATTR_OUTSIDE = "outside_space"  # trial: the preset's values that are not in the space
ATTR_CONFIG = "config"  # trial: the validated cell config (passwords redacted)
ATTR_CONFIG_HASH = "config_hash"
ATTR_ATTEMPT = "attempt_id"
ATTR_REUSED = "reused_attempt"


class TrialFailed(DCTError):
    """A trial's cell ended in error/oom/killed/timeout, or its settings cannot be built: the trial is FAIL
    and the study goes on."""


# --- the study ---------------------------------------------------------------------------------------------


def _sampler(space: SearchSpace, seed: int | None):
    import optuna

    kind = space.sampler
    if kind == "auto":
        kind = "nsga2" if space.multi_objective else "tpe"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if kind == "tpe":
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=space.startup_trials)
        if kind == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(2, space.startup_trials))
        return optuna.samplers.RandomSampler(seed=seed)


def _pruner(space: SearchSpace):
    import optuna

    if not space.prunes:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=space.pruning.startup_trials,
                                       n_warmup_steps=space.pruning.warmup_epochs)


def _study_exists(storage, name: str) -> bool:
    try:
        storage.get_study_id_from_name(name)
        return True
    except KeyError:
        return False


def open_study(storage, *, study_name: str | None, space_path: str | Path | None = None,
               trials: int | None = None, create: bool = True, sampler_seed: int | None | str = "space",
               console: Console | None = None):
    """(study, space): the study named `study_name` (default: the space's name), created with the space
    of `space_path` (default ablations/search.toml) and its presets enqueued when it does not exist. An
    existing study keeps the space it was created with; giving a different file is an error."""
    import optuna

    console = console or Console(stderr=True)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial gets its own line here
    space = load_space(space_path) if space_path is not None else None
    if study_name is None:
        if space is None:
            space = load_space(DEFAULT_SPACE)
        study_name = space.name
    if _study_exists(storage, study_name):
        probe = optuna.load_study(study_name=study_name, storage=storage)
        attrs = probe.user_attrs
        if ATTR_SPACE not in attrs:
            raise ConfigError(f"study {study_name!r} exists but was not created by `dct search` (no search space "
                              "in its attributes): choose another --study name")
        stored = parse_space(attrs[ATTR_SPACE], source=attrs.get(ATTR_SPACE_SOURCE, f"study:{study_name}"))
        if space is not None and space.space_hash != stored.space_hash:
            raise ConfigError(f"study {study_name!r} was created from another search space ({stored.source}, hash "
                              f"{stored.space_hash}; {space.source} has hash {space.space_hash}): resume it without "
                              "--space, or start a new study with --study NAME")
        space = stored
        seed = space.seed if sampler_seed == "space" else sampler_seed
        study = optuna.load_study(study_name=study_name, storage=storage, sampler=_sampler(space, seed),
                                  pruner=_pruner(space))
        if trials is not None and trials != study.user_attrs.get(ATTR_TRIALS):
            study.set_user_attr(ATTR_TRIALS, trials)
        return study, space
    if not create:
        raise ConfigError(f"no study {study_name!r} in this storage: create it with `dct search --study {study_name}` "
                          "(or `dct launch --study ...`) first")
    if space is None:
        space = load_space(DEFAULT_SPACE)
    seed = space.seed if sampler_seed == "space" else sampler_seed
    study = optuna.create_study(study_name=study_name, storage=storage, directions=space.directions,
                                sampler=_sampler(space, seed), pruner=_pruner(space), load_if_exists=True)
    if ATTR_SPACE not in study.user_attrs:
        study.set_user_attr(ATTR_SPACE, space.text)
        study.set_user_attr(ATTR_SPACE_SOURCE, space.source)
        study.set_user_attr(ATTR_SPACE_HASH, space.space_hash)
        study.set_user_attr(ATTR_TRIALS, trials or space.trials)
    if not study.user_attrs.get(ATTR_ENQUEUED):
        for preset in space.enqueue:
            inside, outside = space.preset_params(preset)
            study.enqueue_trial(inside, user_attrs={ATTR_PRESET: preset, ATTR_OUTSIDE: outside})
            if outside:
                console.print(f"enqueued preset {preset!r}; its values outside the space, kept as they are: "
                              f"{', '.join(f'{k}={_fmt(v)}' for k, v in outside.items())}", highlight=False)
        study.set_user_attr(ATTR_ENQUEUED, list(space.enqueue))
    return study, space


def budget(study) -> int:
    return int(study.user_attrs.get(ATTR_TRIALS) or 0)


def finished_trials(trials) -> list:
    """Trials that count against the budget: complete, pruned, and failed ones that were not retried."""
    from optuna.trial import TrialState

    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            or (t.state == TrialState.FAIL and t.number not in retried)]


# --- one trial ---------------------------------------------------------------------------------------------


class IntermediateReporter:
    """Turns the cell's per-epoch progress messages into Optuna reports (see the module docstring)."""

    CURVE_KEYS = {"acc": "accuracy"}  # the progress key -> the curve column holding the same number

    def __init__(self, trial, space: SearchSpace, max_epochs: int | None, prune: bool):
        self.trial, self.space, self.max_epochs, self.prune = trial, space, max_epochs, prune
        self.key = space.pruning.on
        self.active = not space.multi_objective  # Optuna has no intermediate values for several objectives
        self.position: int | None = None
        self.last: tuple[int, float] | None = None
        self.recent: list[float] = []
        self.rows: list[dict] = []  # what was reported, as curve rows (kept for a pruned trial's row)

    def _oriented(self, value: float) -> float:
        if (self.space.directions[0] == "maximize") == self.space.pruning.higher_is_better:
            return value
        return 1.0 - value if self.key in ("acc", "accuracy") else -value  # guide error for a minimised objective

    def on_progress(self, message: dict) -> None:
        info = message.get("info") or {}
        value = info.get(self.key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return
        if "epoch" in info:
            position, epoch = int(message.get("done") or 0), int(info["epoch"])
        else:
            position, epoch = 0, int(message.get("done") or 1) - 1
        self.add(position, epoch, float(value), prune=self.prune)

    def add(self, position: int, epoch: int, value: float, *, prune: bool = False) -> None:
        import optuna

        if position != self.position:
            self._hold_last()
            self.position, self.recent = position, []
        self.rows.append({"class_position": position, C.EPOCH: epoch, self.CURVE_KEYS.get(self.key, self.key): value})
        if not self.active:
            return
        self.recent.append(value)
        smoothed = statistics.fmean(self.recent[-self.space.pruning.window:])
        step = position * self.space.epoch_stride + epoch
        self.trial.report(self._oriented(smoothed), step)
        self.last = (step, self._oriented(smoothed))
        if prune and self.trial.should_prune():
            raise optuna.TrialPruned(f"class #{position} epoch {epoch}: {self.key} {smoothed:.3f} "
                                     f"(mean of the last {len(self.recent[-self.space.pruning.window:])} epochs) "
                                     "below the median of earlier trials")

    def _hold_last(self) -> None:
        # A class that stopped early keeps its token: its last value holds for the epochs it did not need.
        if not self.active or self.last is None or self.max_epochs is None or self.position is None:
            return
        step, value = self.last
        end = self.position * self.space.epoch_stride + self.max_epochs
        for s in range(step + 1, end):
            self.trial.report(value, s)

    def replay(self, curves) -> None:
        """Report a stored attempt's curves (a reused trial) as if they had arrived live."""
        column = self.CURVE_KEYS.get(self.key, self.key)
        if curves is None or curves.empty or column not in curves.columns:
            return
        order = list(dict.fromkeys(curves["class_id"])) if "class_id" in curves.columns else [None]
        for position, cls in enumerate(order):
            rows = curves if cls is None else curves[curves["class_id"] == cls]
            for _, r in rows.sort_values(C.EPOCH).iterrows():
                self.add(position, int(r[C.EPOCH]), float(r[column]))


@dataclass
class TrialRunner:
    """The objective: one trial = one cell run, measured and stored as a grid cell is."""

    space: SearchSpace
    study_name: str
    store: Path
    device: str
    timeout: float | None = None
    console: Console = field(default_factory=lambda: Console(stderr=True))
    run_id: str = field(default_factory=S.new_attempt_id)
    current: int | None = None  # the number of the trial running now

    def __post_init__(self):
        self.spec = Spec(name=self.study_name, kind=self.space.cell, description=self.space.description,
                         store=self.store, path=None, spec_hash=self.space.space_hash, fixed=self.space.fixed,
                         axes={}, include=[], exclude=[], seeds=None, warmup_steps=self.space.warmup_steps,
                         timeout_per_cell=self.timeout, cells={})
        _save_space(self.store, self.space)

    def __call__(self, trial) -> float | list[float]:
        from bench.grid import _row, _worker

        self.current = trial.number
        preset = trial.user_attrs.get(ATTR_PRESET)
        outside = trial.user_attrs.get(ATTR_OUTSIDE) or {}
        try:
            settings = self.space.suggest(trial, skip=tuple(outside))
            config = self.space.kind.validate(settings)
        except ConfigError as e:
            _fail_trial(trial, f"these settings cannot be built: {e}")
        h = config_hash(redact(config))
        trial.set_user_attr(ATTR_CONFIG_HASH, h)
        trial.set_user_attr(ATTR_CONFIG, json.loads(json.dumps(redact(config), default=str)))
        reporter = IntermediateReporter(trial, self.space, _max_epochs(config), prune=self.space.prunes)

        done = _ok_row(self.store, h)
        if done is not None:  # the same config ran before: its measurements stand
            trial.set_user_attr(ATTR_REUSED, done[C.ATTEMPT_ID])
            reporter.replay(_curves_of(self.store, done[C.ATTEMPT_ID]))
            return self._values(trial, done)

        label = _label(trial.number, preset, trial.params)
        cell = Cell(h, label, config, "search", dict(trial.params))
        attempt_id = S.new_attempt_id()
        trial.set_user_attr(ATTR_ATTEMPT, attempt_id)
        job = {"module": self.space.kind.module, "kind": self.space.cell, "config": config, "config_hash": h,
               "label": label, "device": self.device, "warmup_steps": self.space.warmup_steps,
               "out_dir": str(S.artifacts_dir(self.store, h, attempt_id))}
        prov = provenance(spec_file=self.space.source, spec_hash=self.space.space_hash)
        started = now_iso()
        pruned = None
        import optuna

        try:
            outcome = _worker().run_in_child(job, timeout=self.timeout, on_progress=reporter.on_progress)
        except optuna.TrialPruned as e:  # raised by the reporter; run_in_child has killed the cell
            pruned = e
            outcome = {C.STATUS: STATUS_PRUNED, C.ERROR: f"pruned by Optuna: {e}", C.TRACEBACK: None,
                       "metrics": {}, "curves": reporter.rows, "measured": {C.DEVICE: self.device}}
        row = _row(self.spec, cell, run_id=self.run_id, attempt_id=attempt_id, store=self.store, started=started,
                   finished=now_iso(), result=outcome, prov=prov)
        row.update({STUDY_COL: self.study_name, TRIAL_COL: trial.number, PRESET_COL: preset,
                    RETRY_COL: _retry_of(trial)})
        S.write_attempt(self.store, row, outcome.get("curves", []))
        if pruned is not None:
            raise pruned
        if row[C.STATUS] != C.STATUS_OK:
            trial.set_user_attr("status", row[C.STATUS])
            _fail_trial(trial, f"the cell ended {row[C.STATUS]}: {row[C.ERROR]}")
        return self._values(trial, row)

    def _values(self, trial, row: dict) -> float | list[float]:
        values = []
        for objective in self.space.objectives:
            value = objective.value(row)
            if math.isnan(value):
                _fail_trial(trial, f"objective {objective.name!r} has no value in the cell's results (column "
                                   f"{objective.column or 'metric_images_mean/metric_threshold_reached'})")
            trial.set_user_attr(objective.name, value)
            values.append(value)
        return values[0] if len(values) == 1 else values


def _retry_of(trial) -> int | None:
    # set by RetryHeartbeatStaleTrialCallback on the copy of a trial whose worker died
    return trial.study._storage.get_trial(trial._trial_id).system_attrs.get("failed_trial")


def _fail_trial(trial, message: str) -> None:
    message = redact(message)
    trial.set_user_attr("error", message[:2000])
    raise TrialFailed(f"trial {trial.number}: {message}")


def _max_epochs(config: dict) -> int | None:
    value = config.get("max_epochs")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _label(number: int, preset: str | None, params: dict) -> str:
    head = f"trial {number}" + (f" ({preset})" if preset else "")
    return head + (": " + " ".join(f"{k}={_fmt(v)}" for k, v in params.items()) if params else "")


def _ok_row(store: Path, h: str) -> dict | None:
    if not (store / S.CELLS_DIR).is_dir():
        return None
    cells = S.load_cells(store)
    hit = cells[(cells[C.CONFIG_HASH] == h) & (cells[C.STATUS] == C.STATUS_OK)]
    return None if hit.empty else hit.iloc[-1].to_dict()


def _curves_of(store: Path, attempt_id: str):
    import pandas as pd

    parts = list((store / S.CURVES_DIR).glob(f"*-{attempt_id}.parquet"))
    return pd.read_parquet(parts[0]) if parts else None


def _save_space(store: Path, space: SearchSpace) -> None:
    # as bench.store.save_spec does for a grid's spec file, from the text (a worker may have no file)
    target = store / S.SPECS_DIR / f"{space.space_hash}.toml"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".tmp-{target.name}.{os.getpid()}")
        tmp.write_text(redact(space.text))
        os.replace(tmp, target)


# --- running trials ----------------------------------------------------------------------------------------


@dataclass
class SearchResult:
    study: Any
    space: SearchSpace
    store: Path
    ran: list[tuple[int, str]] = field(default_factory=list)  # (trial number, state) run by this process
    interrupted_by: int | None = None
    figures: dict[str, str] = field(default_factory=dict)


class _Search:
    """The search's job for the worker loop (bench.search.worker): trials up to the budget, each claimed
    or sampled by study.optimize and run by the TrialRunner."""

    def __init__(self, study, space: SearchSpace, runner: TrialRunner, console: Console, result: SearchResult):
        self.study, self.space, self.runner, self.console, self.result = study, space, runner, console, result

    @property
    def current(self) -> int | None:  # set by the runner when optuna hands it a trial
        return self.runner.current

    @current.setter
    def current(self, number: int | None) -> None:
        self.runner.current = number

    def wants(self, trials) -> bool:
        # enqueued trials (presets, retries) wait their turn within the budget: `--trials 1` runs one
        # trial even when the space enqueues two presets
        from optuna.trial import TrialState

        running = [t for t in trials if t.state == TrialState.RUNNING]
        return len(finished_trials(trials)) + len(running) < (budget(self.study) or self.space.trials)

    def run_one(self) -> None:
        self.study.optimize(self.runner, n_trials=1, catch=(TrialFailed,), gc_after_trial=False)
        _report_trial(self.console, self.study, self.current, self.space, self.result)


def run_trials(study, space: SearchSpace, runner: TrialRunner, *, wait_for_others: bool, poll: float = 5.0,
               console: Console | None = None, result: SearchResult | None = None) -> SearchResult:
    """Run trials until the study's budget is reached; with wait_for_others, stay while other workers'
    trials run (one of them may die and be retried here)."""
    console = console or Console(stderr=True)
    result = result or SearchResult(study=study, space=space, store=runner.store)
    result.interrupted_by = work(study, _Search(study, space, runner, console, result),
                                 wait_for_others=wait_for_others, poll=poll, console=console)
    return result


def _report_trial(console: Console, study, number: int | None, space: SearchSpace, result: SearchResult) -> None:
    from bench.search.show import short

    if number is None:
        return
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if trial is None:
        return
    state = trial.state.name.lower()
    result.ran.append((number, state))
    style = {"complete": "green", "pruned": "yellow"}.get(state, "red")
    values = ""
    if trial.state.name == "COMPLETE":
        values = " " + " ".join(f"{o.name}={short(v)}" for o, v in zip(space.objectives, trial.values))
    elif trial.state.name == "PRUNED" and trial.intermediate_values:
        values = f" at step {max(trial.intermediate_values)}"
    preset = trial.user_attrs.get(ATTR_PRESET)
    reused = " (reused " + trial.user_attrs[ATTR_REUSED] + ")" if trial.user_attrs.get(ATTR_REUSED) else ""
    params = " ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
    console.print(f"[{style}]{state}[/] trial {number}{f' ({preset})' if preset else ''}{values}{reused}  {params}",
                  highlight=False)
    if state == "fail" and trial.user_attrs.get("error"):
        console.print(f"    {trial.user_attrs['error']}", markup=False, highlight=False)


def run_search(space_path: str | Path | None = None, *, study_name: str | None = None, storage: str | None = None,
               trials: int | None = None, results: str | Path = "results", device: str = "auto",
               timeout_per_trial: float | None = None, heartbeat: int = 30, grace: int | None = None,
               max_retry: int = 3, figures: bool = True, worker: bool = False,
               console: Console | None = None) -> SearchResult:
    """`dct search` (worker=False: create or resume the study, run it, draw figures) and `dct worker --study`
    (worker=True: attach to an existing study, run trials while any are left or running)."""
    console = console or Console(stderr=True)
    if trials is not None and trials < 1:
        raise ConfigError(f"--trials {trials!r} is not accepted: an integer >= 1")
    if study_name is None and worker:
        raise ConfigError("a worker needs --study NAME")
    if study_name is None:
        study_name = load_space(space_path or DEFAULT_SPACE).name
    url = resolve_storage_url(storage, study_name, results, create=not worker)
    store = study_store(study_name, results)
    store.mkdir(parents=True, exist_ok=True)
    resolved = resolve_device(device)
    db = make_storage(url, heartbeat=heartbeat, grace=grace, max_retry=max_retry)
    study, space = open_study(db, study_name=study_name, space_path=space_path, trials=trials, create=not worker,
                              sampler_seed=None if worker else "space", console=console)
    timeout = timeout_per_trial if timeout_per_trial is not None else space.timeout_per_trial
    if timeout is not None and not timeout > 0:
        raise ConfigError(f"--timeout-per-trial {timeout!r} is not accepted: a number of seconds > 0")
    done = len(finished_trials(study.get_trials(deepcopy=False)))
    console.print(f"[bold]{study_name}[/]: {done} of {budget(study)} trial(s) finished; objectives "
                  f"{', '.join(f'{o.name} ({o.direction})' for o in space.objectives)}; storage {redact(url)}; "
                  f"store {store}; device {resolved}", highlight=False)
    runner = TrialRunner(space, study_name, store, resolved, timeout, console)
    result = run_trials(study, space, runner, wait_for_others=worker, poll=max(1.0, heartbeat / 2), console=console)
    if figures and not worker and result.interrupted_by is None:
        from bench.search.show import FIGURES_DIR, save_figures

        result.figures = save_figures(study, space, store / FIGURES_DIR)
    return result

