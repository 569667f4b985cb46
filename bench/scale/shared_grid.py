"""A grid shared by workers on one machine or many: the grid is an Optuna study named `grid:<experiment>`
in a shared storage (bench.search.storage), each pending cell one enqueued trial; results go to the
usual store folder (shared between the machines), exactly as `dct bench` writes them.

    dct worker --storage journal:///shared/dct.log --grid ablations/depth.toml             # SLURM, no server
    dct worker --storage postgresql://dct@db-host/dct --grid ablations/depth.toml          # many machines
    dct launch --slurm --workers 8 --storage ... --grid ablations/depth.toml

A cell's trial: user attributes config_hash, position (its place in the spec), label, and, once claimed,
attempt_id (the store attempt: names its part files and artifacts), worker (host:pid) and status (the
bench.columns status the cell ended with). The trial is COMPLETE (value 0, meaningless) when the cell's
row is ok, FAIL otherwise. The storage only says who runs what; `dct results show` reads the store.

Guarantees, and what keeps each:
- No cell run by two workers at once: a claim sets a WAITING trial RUNNING, atomically in the storage
  (SQLite needs BEGIN IMMEDIATE for it, see bench.search.storage). Claims follow spec order. Workers that
  fill the table at once may enqueue one cell twice: the trial with the lowest number wins, and a worker
  that claims a later one fails it as a duplicate instead of running it.
- A killed worker's cell is run again: its trial stops heartbeating, another worker fails it after the
  grace period and Retry enqueues a copy, up to --max-retry times; then the cell gets a row with status
  killed ("given up"), so that the store says what happened to it.
- A cell whose row was written before its worker died is not run again: a retried trial carries the
  dead attempt's attempt_id, and a row of that attempt in the store finishes the retry without running.
- A cell with an ok row in the store (say from a local `dct bench` run) is not enqueued, or, when it was
  enqueued before, finished without running.
- A worker that lost its claim (paused past the grace period: another worker failed its trial) kills its
  cell and writes nothing (bench.search.worker.ClaimWatch).
- A worker stopped by Ctrl-C or SIGTERM kills its cell and hands the trial back, not counted as a retry.
Workers stay while other workers' cells run (one may die and come back) and exit when none is left.
Failed cells stay failed; `--retry-failed` enqueues them again.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from bench import columns as C
from bench import store as S
from bench.provenance import now_iso, provenance, redact
from bench.search.storage import Retry, make_storage
from bench.search.worker import ClaimLost, ClaimWatch, work
from bench.spec import Cell, Spec, check_cells, load_spec

PREFIX = "grid:"
ATTR_HASH, ATTR_POSITION, ATTR_LABEL = "config_hash", "position", "label"
ATTR_ATTEMPT, ATTR_WORKER, ATTR_STATUS, ATTR_ERROR = "attempt_id", "worker", "status", "error"
ATTR_RECOVERED, ATTR_DUPLICATE = "recovered", "duplicate"
STATES = {"WAITING": "pending", "RUNNING": "running", "COMPLETE": "done", "FAIL": "failed"}


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def grid_study(storage, name: str):
    """The grid's study (created when missing; several workers creating it at once is fine)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.create_study(study_name=PREFIX + name, storage=storage, load_if_exists=True)


def _live(trials) -> dict[str, int]:
    """config_hash -> the lowest number of its trials that are waiting, running or complete."""
    live: dict[str, int] = {}
    for t in trials:
        if t.state.name in ("WAITING", "RUNNING", "COMPLETE"):
            h = t.user_attrs.get(ATTR_HASH)
            live[h] = min(live.get(h, t.number), t.number)
    return live


def register(study, cells: list[Cell], done: set[str] = frozenset(), *, retry_failed: bool = False) -> int:
    """Enqueue one trial per cell that has none yet and no ok row in the store (`done`); failed cells
    only with retry_failed. Returns how many were enqueued."""
    trials = study.get_trials(deepcopy=False)
    for h in {t.user_attrs.get(ATTR_HASH) for t in trials if t.state.name == "WAITING"} & set(done):
        # ok in the store since it was enqueued (by a local `dct bench` run): done, not run again
        while (taken := claim(study, {h})) is not None:
            study._storage.set_trial_user_attr(taken._trial_id, ATTR_RECOVERED, "store")
            _finish(study, taken, C.STATUS_OK)
    live = _live(trials)
    failed = {t.user_attrs.get(ATTR_HASH) for t in trials if t.state.name == "FAIL"}
    added = 0
    for position, cell in enumerate(cells):
        h = cell.config_hash
        if h in done or h in live or (h in failed and not retry_failed):
            continue
        study.enqueue_trial({}, user_attrs={ATTR_HASH: h, ATTR_POSITION: position, ATTR_LABEL: cell.label})
        added += 1
    return added


def claim(study, hashes: set[str]):
    """Take the first waiting trial among `hashes` in spec order (RUNNING, atomically), or None. A later
    duplicate of a cell's trial is failed, not returned."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage
    trials = study.get_trials(deepcopy=False)
    live = _live(trials)
    waiting = sorted((t for t in trials if t.state == TrialState.WAITING and t.user_attrs.get(ATTR_HASH) in hashes),
                     key=lambda t: (t.user_attrs.get(ATTR_POSITION, 0), t.number))
    for t in waiting:
        try:
            if not storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                continue  # another worker was first
        except UpdateFinishedTrialError:
            continue
        storage.record_heartbeat(t._trial_id)
        first = live.get(t.user_attrs[ATTR_HASH], t.number)
        if first < t.number:
            storage.set_trial_user_attr(t._trial_id, ATTR_DUPLICATE, first)
            storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
            continue
        return storage.get_trial(t._trial_id)
    return None


def counts(study, hashes) -> dict[str, int]:
    """How many of the cells are pending / running / done / failed (each cell by its latest trial)."""
    latest = {}
    for t in study.get_trials(deepcopy=False):
        h = t.user_attrs.get(ATTR_HASH)
        if h in hashes and (h not in latest or t.number > latest[h].number) and ATTR_DUPLICATE not in t.user_attrs:
            latest[h] = t
    out: dict[str, int] = {}
    for t in latest.values():
        out[STATES[t.state.name]] = out.get(STATES[t.state.name], 0) + 1
    return out


def _finish(study, trial, status: str, error: str | None = None) -> bool:
    """Record the cell's outcome on its trial; False when the trial is no longer this worker's."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage
    try:
        storage.set_trial_user_attr(trial._trial_id, ATTR_STATUS, status)
        if error:
            storage.set_trial_user_attr(trial._trial_id, ATTR_ERROR, redact(error)[:2000])
        if status == C.STATUS_OK:
            storage.set_trial_state_values(trial._trial_id, state=TrialState.COMPLETE, values=[0.0])
        else:
            storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        return True
    except UpdateFinishedTrialError:
        return False


def _attempt_row(store: Path, config_hash: str, attempt_id: str | None) -> dict | None:
    import pandas as pd

    path = store / S.CELLS_DIR / f"{config_hash}-{attempt_id}.parquet"
    return pd.read_parquet(path).iloc[0].to_dict() if attempt_id and path.is_file() else None


@dataclass
class WorkerResult:
    spec: Spec
    worker: str
    ran: list[tuple[str, str]] = field(default_factory=list)  # (config_hash, status) of cells run here
    recovered: list[str] = field(default_factory=list)  # finished from a row a dead worker had written
    lost: list[str] = field(default_factory=list)  # claims lost while running (nothing written)
    interrupted_by: int | None = None
    counts: dict[str, int] = field(default_factory=dict)


class _GridJob:
    """The grid's job for the worker loop (bench.search.worker.work)."""

    def __init__(self, study, spec: Spec, result: WorkerResult, *, device: str, timeout: float | None,
                 heartbeat: float, signals, console: Console):
        from bench.grid import _spec_file_name
        from bench.registry import get_cell

        self.study, self.spec, self.result, self.signals, self.console = study, spec, result, signals, console
        self.device, self.timeout, self.heartbeat = device, timeout, heartbeat
        self.kind = get_cell(spec.kind)
        self.by_hash = {c.config_hash: c for c in spec.cells.values()}
        self.store = spec.store
        self.run_id, self.spec_file = S.new_attempt_id(), _spec_file_name(spec)
        self.current: int | None = None

    def wants(self, trials) -> bool:
        return any(t.state.name == "WAITING" and t.user_attrs.get(ATTR_HASH) in self.by_hash for t in trials)

    def run_one(self) -> None:
        from bench.grid import _print_outcome, _row, _worker

        trial = claim(self.study, set(self.by_hash))
        if trial is None:
            return
        self.current = trial.number
        storage, tid = self.study._storage, trial._trial_id
        cell = self.by_hash[trial.user_attrs[ATTR_HASH]]
        previous = _attempt_row(self.store, cell.config_hash, trial.user_attrs.get(ATTR_ATTEMPT))
        if previous is not None:  # the dead worker had written its row: the cell ran, do not run it again
            storage.set_trial_user_attr(tid, ATTR_RECOVERED, previous[C.ATTEMPT_ID])
            _finish(self.study, trial, previous[C.STATUS], previous.get(C.ERROR))
            self.result.recovered.append(cell.config_hash)
            self.current = None
            return
        attempt_id = S.new_attempt_id()
        storage.set_trial_user_attr(tid, ATTR_ATTEMPT, attempt_id)
        storage.set_trial_user_attr(tid, ATTR_WORKER, self.result.worker)
        job = {"module": self.kind.module, "kind": self.spec.kind, "config": cell.config,
               "config_hash": cell.config_hash, "label": cell.label, "device": self.device,
               "warmup_steps": self.spec.warmup_steps,
               "out_dir": str(S.artifacts_dir(self.store, cell.config_hash, attempt_id))}
        prov = provenance(spec_file=self.spec_file, spec_hash=self.spec.spec_hash)
        started = now_iso()
        try:
            with ClaimWatch(storage, tid, self.heartbeat) as watch:
                outcome = _worker().run_in_child(job, timeout=self.timeout, on_progress=watch.check)
            if watch.lost.is_set() or not watch.still_ours():
                raise ClaimLost(f"trial {trial.number} was taken over")
        except ClaimLost:
            self.console.print(f"[yellow]claim lost[/] {cell.config_hash} {cell.label}: another worker has it; "
                               "nothing written", highlight=False)
            self.result.lost.append(cell.config_hash)
            self.current = None
            return
        with self.signals.deferred():
            row = _row(self.spec, cell, run_id=self.run_id, attempt_id=attempt_id, store=self.store, started=started,
                       finished=now_iso(), result=outcome, prov=prov)
            S.write_attempt(self.store, row, outcome.get("curves", []))
            _finish(self.study, trial, row[C.STATUS], row.get(C.ERROR))
            self.result.ran.append((cell.config_hash, row[C.STATUS]))
            self.current = None
        _print_outcome(self.console, cell, row)

    def given_up(self, study, trial) -> None:
        """Retry's hook: the trial's cell used all its retries. The row the grid runner writes for a killed
        cell, unless the last attempt wrote its own before its worker died."""
        from bench.grid import _row

        cell = self.by_hash.get(trial.user_attrs.get(ATTR_HASH))
        if study.study_name != self.study.study_name or cell is None:
            return
        if _attempt_row(self.store, cell.config_hash, trial.user_attrs.get(ATTR_ATTEMPT)) is not None:
            return
        from bench.search.storage import HANDED_BACK_ATTR

        history, handed = trial.system_attrs.get("retry_history", []), trial.system_attrs.get(HANDED_BACK_ATTR, [])
        attempts = len(history) + 1 - len(handed)  # claims whose worker died
        outcome = {C.STATUS: C.STATUS_KILLED, C.TRACEBACK: None, "metrics": {}, "curves": [], "measured": {},
                   C.ERROR: f"killed: {attempts} worker(s) claimed this cell and stopped heartbeating (killed, "
                            "preempted, or out of memory); not retried again"}
        stamp = now_iso()
        row = _row(self.spec, cell, run_id=self.run_id, attempt_id=S.new_attempt_id(), store=self.store,
                   started=stamp, finished=stamp, result=outcome,
                   prov=provenance(spec_file=self.spec_file, spec_hash=self.spec.spec_hash))
        S.write_attempt(self.store, row, [])
        self.console.print(f"[red]given up[/] {cell.config_hash} {cell.label} after {attempts} attempt(s)",
                           highlight=False)


def run_grid_worker(spec_path: str | Path, *, storage: str, store: str | Path | None = None, device: str = "auto",
                    timeout_per_cell: float | None = None, heartbeat: int = 30, grace: int | None = None,
                    max_retry: int = 3, retry_failed: bool = False, poll: float | None = None,
                    console: Console | None = None) -> WorkerResult:
    """Claim and run cells of a spec until none is left (see the module docstring)."""
    from bench.grid import _Signals
    from dct.device import resolve_device

    console = console or Console(stderr=True)
    spec = load_spec(spec_path, store=store)
    check_cells(spec, list(spec.cells.values()))
    timeout = timeout_per_cell if timeout_per_cell is not None else spec.timeout_per_cell
    resolved = resolve_device(device)
    spec.store.mkdir(parents=True, exist_ok=True)
    db = make_storage(storage, heartbeat=heartbeat, grace=grace, max_retry=max_retry)
    # shared with the other workers on this store, refused while `dct bench run` holds it exclusively
    with S.locked(spec.store, shared=True), _Signals() as signals:
        study = grid_study(db, spec.name)
        result = WorkerResult(spec=spec, worker=worker_id())
        added = register(study, list(spec.cells.values()), S.done_hashes(spec.store), retry_failed=retry_failed)
        if spec.path is not None and spec.spec_hash is not None:
            S.save_spec(spec.store, spec.path, spec.spec_hash)
        hashes = set(spec.cells)
        console.print(f"[bold]{spec.name}[/]: worker {result.worker} on {resolved}; {len(hashes)} cell(s) ({added} "
                      f"newly enqueued) {counts(study, hashes)}; storage {redact(storage)}; store {spec.store}",
                      highlight=False)
        job = _GridJob(study, spec, result, device=resolved, timeout=timeout, heartbeat=heartbeat, signals=signals,
                       console=console)
        db.heartbeat_stale_trial_callback = Retry(max_retry, on_given_up=job.given_up)
        result.interrupted_by = work(study, job, wait_for_others=True, poll=poll or max(1.0, heartbeat),
                                     console=console, signals=signals)
        result.counts = counts(study, hashes)
    console.print(f"worker {result.worker}: ran {len(result.ran)}, recovered {len(result.recovered)}, lost "
                  f"{len(result.lost)}; grid now {result.counts}", highlight=False)
    return result
