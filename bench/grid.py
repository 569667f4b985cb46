"""The grid runner: expand and validate a spec, skip the cells already done, run the others one by one,
each in a fresh child process, and append one row per attempt to the store.

    from bench.grid import run_grid
    run_grid("ablations/depth.toml", device="cuda", timeout_per_cell=3600)

- Resume: a cell whose config hash has an ok row is skipped; `force=True` runs it again and the new row
  supersedes the old one (nothing is deleted, see bench.store).
- A cell that raises is recorded as error, out of memory as oom, a child killed by a signal as killed,
  one past the timeout as timeout; the grid goes on with the next cell.
- Ctrl-C or SIGTERM kills the running child and stops; that cell gets no row (it stays pending) and no
  row is ever half-written (a signal that arrives while a row is written waits until it is).
"""

from __future__ import annotations

import json
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dct.errors import ConfigError, DCTError

from bench import columns as C
from bench import store as S
from dct.device import resolve_device
from bench.provenance import now_iso, provenance, redact
from bench.registry import get_cell
from bench.spec import Cell, Spec, check_cells, load_spec, select
from bench.table import render_summary


class GridInterrupted(KeyboardInterrupt):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class GridResult:
    spec: Spec
    store: Path
    selected: list[Cell]
    skipped: list[Cell] = field(default_factory=list)  # already done
    ran: list[tuple[Cell, str]] = field(default_factory=list)  # (cell, status) in run order
    interrupted_by: int | None = None  # the signal that stopped the grid

    @property
    def pending(self) -> list[Cell]:
        finished = {c.config_hash for c, _ in self.ran} | {c.config_hash for c in self.skipped}
        return [c for c in self.selected if c.config_hash not in finished]


class _Signals:
    """SIGINT/SIGTERM raise GridInterrupted, except inside `deferred()`, where they wait for its end."""

    def __init__(self):
        self.deferring = False
        self.pending: int | None = None
        self.previous: dict[int, Any] = {}

    def _handler(self, signum, frame):
        if self.deferring:
            self.pending = signum
        else:
            raise GridInterrupted(signum)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
        if self.pending is not None:
            raise GridInterrupted(self.pending)


def _spec_file_name(spec: Spec) -> str | None:
    if spec.path is None:
        return None
    path = spec.path.resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _row(spec: Spec, cell: Cell, *, run_id: str, attempt_id: str, store: Path, started: str, finished: str,
         result: dict, prov: dict) -> dict[str, Any]:
    config = redact(cell.config)
    seed = cell.config.get("seed")
    row: dict[str, Any] = {
        C.EXPERIMENT: spec.name,
        C.CONFIG_HASH: cell.config_hash,
        C.LABEL: cell.label,
        C.ORIGIN: cell.origin,
        C.CELL_KIND: spec.kind,
        C.CONFIG_JSON: json.dumps(config, sort_keys=True, default=str),
        C.SEED: seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        C.RUN_ID: run_id,
        C.ATTEMPT_ID: attempt_id,
        C.ARTIFACTS_DIR: str(S.artifacts_dir(store, cell.config_hash, attempt_id).relative_to(store)),
        C.STATUS: result[C.STATUS],
        C.ERROR: result[C.ERROR],
        C.TRACEBACK: result[C.TRACEBACK],
        C.STARTED_AT: started,
        C.FINISHED_AT: finished,
        C.SPEC_AXES: json.dumps(spec.axes, default=str),
        C.SPEC_BASELINE: json.dumps(spec.baseline, default=str),
        C.SPEC_QUALITY_NEUTRAL: json.dumps(spec.quality_neutral),
        **prov,
    }
    measured = dict(result.get("measured", {}))
    if C.STEP_TIMES_S in measured:
        measured[C.STEP_TIMES_S] = json.dumps(measured[C.STEP_TIMES_S])
    row.update(measured)
    row.update({C.config_col(k): v for k, v in config.items()})
    row.update({C.metric_col(k): v for k, v in result.get("metrics", {}).items()})
    return row


def plan_table(spec: Spec, cells: list[Cell], store: Path) -> Table:
    """The cells of a dry run, with what the store already says about each."""
    latest = S.load_cells(store) if store.exists() else None
    status = {} if latest is None or latest.empty else dict(zip(latest[C.CONFIG_HASH], latest[C.STATUS]))
    table = Table(title=f"{spec.name}: {len(cells)} cell(s), store {store}")
    for col in ("#", C.CONFIG_HASH, C.LABEL, "state"):
        table.add_column(col)
    for i, cell in enumerate(cells, 1):
        state = status.get(cell.config_hash)
        shown = "done" if state == C.STATUS_OK else (f"pending (last: {state})" if state else "pending")
        table.add_row(str(i), cell.config_hash, cell.label, shown)
    return table


def run_grid(spec: str | Path | Spec, *, store: str | Path | None = None, force: bool = False,
             only: list[str] | tuple[str, ...] = (), dry_run: bool = False, device: str = "auto",
             timeout_per_cell: float | None = None, console: Console | None = None,
             show_progress: bool = True, out: Console | None = None, plan: bool = True,
             jobs: int | None = 1) -> GridResult:
    """Run (or with dry_run, list) the cells of a spec into its store; see the module docstring.
    Progress and log lines go to `console`, the results (plan, summary table) to `out` (default: the
    same console; the CLI passes stderr and stdout).

    plan: for `step` cells, predict each cell's peak memory and FLOPs first (bench.plan.planner, seconds on the
    CPU): on a GPU a cell predicted not to fit is recorded as predicted-oom, with the prediction, instead
    of being run; every row gets metric_plan_peak_bytes and metric_plan_flops. plan=False runs every cell.

    jobs: cells run at once, each in its own process with cores // jobs torch threads (None: one per core
    on a CPU, as many as memory allows; 1 on a GPU). Small models on a CPU run faster as several
    one-thread processes than as one process whose threads wait for each other.

    A spec with quality-neutral axes (bench.shared) ends with a check that every cost cell's probe agrees
    with its quality cell's; a disagreement raises SharedQualityError after the rows are written."""
    console = console or Console()
    out = out or console
    if not isinstance(spec, Spec):
        spec = load_spec(spec, store=store)
    elif store is not None:
        spec.store = Path(store)
    cells = select(spec, only)
    result = GridResult(spec=spec, store=spec.store, selected=cells)
    # everything a cell needs is checked before the first one runs (and before a dry run says "pending")
    check_cells(spec, cells)
    timeout = timeout_per_cell if timeout_per_cell is not None else spec.timeout_per_cell
    if timeout is not None and not timeout > 0:
        raise ConfigError(f"--timeout-per-cell {timeout!r} is not accepted: a number of seconds > 0")
    resolved = resolve_device(device)
    jobs = _jobs(jobs, resolved, len(cells))
    if dry_run:
        out.print(plan_table(spec, cells, spec.store))
        return result
    kind = get_cell(spec.kind)

    with _Signals() as signals:
        try:
            with S.locked(spec.store) as store_path:
                _run_cells(spec, cells, result, store_path, signals=signals, force=force, kind_module=kind.module,
                           device=resolved, timeout=timeout, console=console, show_progress=show_progress,
                           plan=plan and spec.kind == "step", jobs=jobs)
        except KeyboardInterrupt as e:
            result.interrupted_by = e.signum if isinstance(e, GridInterrupted) else signal.SIGINT
            console.print(f"[yellow]stopped by {signal.Signals(result.interrupted_by).name}[/]: "
                          f"{len(result.ran)} cell(s) recorded, {len(result.pending)} pending; "
                          "run the same command again to resume")

    _print_summary(out, result)
    _check_shared(spec, result, console)
    return result


class SharedQualityError(DCTError):
    """A cell of a quality-neutral axis did not train the token its quality cell trained."""


def _check_shared(spec: Spec, result: GridResult, console: Console) -> None:
    if not spec.quality_neutral or not result.store.exists():
        return
    from bench.shared import mismatches

    cells = S.load_cells(result.store)
    bad = mismatches(cells[cells[C.CONFIG_HASH].isin({c.config_hash for c in result.selected})])
    if bad:
        for line in bad:
            console.print(f"[red]shared quality refused[/] {line}", highlight=False)
        raise SharedQualityError(f"{len(bad)} cell(s) of the quality-neutral axes {spec.quality_neutral} did not "
                                 f"reproduce their quality cell's training (first: {bad[0]}); their quality columns "
                                 "are not shared. Remove that axis from quality_neutral.")


def _jobs(jobs: int | None, device: str, n_cells: int) -> int:
    if jobs is not None:
        if not isinstance(jobs, int) or jobs < 1:
            raise ConfigError(f"--jobs {jobs!r} is not accepted: an integer >= 1")
        return jobs
    if device != "cpu":
        return 1
    import os

    try:  # a small-model cell holds ~1.5 GiB; leave room for the runner and the system
        memory = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        by_memory = max(1, int(memory // (2 * 2**30)))
    except (ValueError, OSError, AttributeError):
        by_memory = 1
    return max(1, min(_cores(), by_memory, n_cells))


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _run_cells(spec: Spec, cells: list[Cell], result: GridResult, store_path: Path, *, signals: _Signals,
               force: bool, kind_module: str, device: str, timeout: float | None, console: Console,
               show_progress: bool, plan: bool = False, jobs: int = 1) -> None:
    done = S.done_hashes(store_path)
    todo = [c for c in cells if force or c.config_hash not in done]
    result.skipped = [c for c in cells if c not in todo]
    # the cells that train go first (they take longest, and cost cells are checked against them), the
    # heaviest of them first when several run at once, so that the longest cell does not start last
    weight = get_cell(spec.kind).weight
    todo.sort(key=lambda c: (c.config.get("measure") == "cost", -(weight(c.config) if weight and jobs > 1 else 0)))
    if spec.path is not None and spec.spec_hash is not None:
        S.save_spec(store_path, spec.path, spec.spec_hash)
    run_id = S.new_attempt_id()
    spec_file = _spec_file_name(spec)
    threads = max(1, _cores() // jobs) if jobs > 1 else None
    console.print(f"[bold]{spec.name}[/]: {len(cells)} cell(s), {len(result.skipped)} already done, "
                  f"{len(todo)} to run on {device}" + (f", {jobs} at a time ({threads} thread(s) each)"
                                                       if jobs > 1 else "") + f" -> {store_path}")
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console, disable=not show_progress, transient=False)
    cancel = threading.Event()

    def run_one(cell: Cell) -> tuple:
        current = progress.add_task(f"  {cell.label}", total=None)

        def on_progress(message: dict, task=current, label=cell.label) -> None:
            info = " ".join(f"{k}={v}" for k, v in message.get("info", {}).items())
            progress.update(task, completed=message.get("done"), total=message.get("total"),
                            description=f"  {label} {info}".rstrip())

        attempt_id = S.new_attempt_id()
        job = {"module": kind_module, "kind": spec.kind, "config": cell.config, "config_hash": cell.config_hash,
               "label": cell.label, "device": device, "warmup_steps": spec.warmup_steps, "threads": threads,
               "out_dir": str(S.artifacts_dir(store_path, cell.config_hash, attempt_id))}
        prov = provenance(spec_file=spec_file, spec_hash=spec.spec_hash)
        started = now_iso()
        planned = _plan_cell(cell, device, console) if plan else None
        if planned is not None and not planned["fits"]:
            outcome = {C.STATUS: C.STATUS_PREDICTED_OOM, C.TRACEBACK: None, "metrics": planned["metrics"],
                       C.ERROR: f"not run: predicted peak {planned['peak_gib']:.2f} GiB > {planned['capacity_gib']:.2f}"
                                " GiB of device memory (--no-plan runs it anyway)"}
        else:
            outcome = _worker().run_in_child(job, timeout=timeout, on_progress=on_progress, cancel=cancel)
            if planned is not None:
                outcome["metrics"] = {**outcome.get("metrics", {}), **planned["metrics"]}
        return cell, attempt_id, started, prov, outcome, current

    def record(cell: Cell, attempt_id: str, started: str, prov: dict, outcome: dict, current) -> None:
        with signals.deferred():
            row = _row(spec, cell, run_id=run_id, attempt_id=attempt_id, store=store_path, started=started,
                       finished=now_iso(), result=outcome, prov=prov)
            row[C.JOBS] = jobs
            S.write_attempt(store_path, row, outcome.get("curves", []))
            result.ran.append((cell, outcome[C.STATUS]))
        progress.remove_task(current)
        progress.advance(overall)
        _print_outcome(console, cell, row)

    with progress:
        overall = progress.add_task("cells", total=len(todo))
        if jobs == 1:
            for cell in todo:
                record(*run_one(cell))
            return
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        queue = iter(todo)
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            running = {pool.submit(run_one, c) for c in [c for _, c in zip(range(jobs), queue)]}
            try:
                while running:
                    # a timeout, so that Ctrl-C reaches this thread while cells run
                    finished, running = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
                    for future in finished:
                        record(*future.result())
                        following = next(queue, None)
                        if following is not None:
                            running.add(pool.submit(run_one, following))
            except BaseException:
                cancel.set()  # the other threads kill their children; the pool waits for them
                raise


def _cuda_device(device: str) -> tuple[str, int] | None:
    """(name, total memory in bytes) of a CUDA device; None for the CPU."""
    if not device.startswith("cuda"):
        return None
    import torch

    props = torch.cuda.get_device_properties(torch.device(device))
    return props.name, props.total_memory


def _plan_cell(cell: Cell, device: str, console: Console) -> dict | None:
    """The planner's prediction of a step cell on `device` (bench.plan.planner), or None when it cannot plan it
    (the cell then runs as without planning). On the CPU every cell 'fits': only its FLOPs are used."""
    try:
        from bench.plan import planner as P

        cuda = _cuda_device(device)
        if cuda is not None:
            p = P.plan(cell.config, gpu=P.gpu_for(*cuda), capacity=cuda[1])
        else:
            p = P.plan(cell.config, device="cpu")
    except Exception as e:  # a planner bug must not stop a grid: say so and run the cell
        console.print(f"[yellow]could not plan {cell.label}[/]: {type(e).__name__}: {e}", highlight=False)
        return None
    return {"fits": p.fits or cuda is None, "peak_gib": p.peak_bytes / 2**30,
            "capacity_gib": p.capacity_bytes / 2**30,
            "metrics": {"plan_peak_bytes": p.peak_bytes, "plan_flops": p.flops, "plan_seconds": p.seconds,
                        "plan_gpu": p.gpu if cuda else None, "plan_device": "cuda" if cuda else "cpu"}}


def _worker():
    from bench import child as worker  # imported late: the spawn machinery is only needed when cells run

    return worker


def _print_outcome(console: Console, cell: Cell, row: dict) -> None:
    status = row[C.STATUS]
    style = "green" if status == C.STATUS_OK else "red"
    peak = row.get(C.PEAK_MEM_BYTES)
    peak_text = f", peak {peak / 2**20:.0f} MiB" if isinstance(peak, (int, float)) else ""
    wall = row.get(C.WALL_S, row.get(C.PROCESS_WALL_S))
    wall_text = f" in {wall:.2f} s" if isinstance(wall, (int, float)) else ""
    line = f"[{style}]{status}[/] {cell.config_hash} {cell.label}{wall_text}{peak_text}"
    console.print(line, highlight=False)
    if status != C.STATUS_OK and row.get(C.ERROR):
        console.print(f"    {row[C.ERROR]}", markup=False, highlight=False)


def print_contrasts(console: Console, cells) -> None:
    """The paired contrasts of the cells (bench.contrasts), when they have any, with what their CIs cover."""
    from bench import contrasts as K

    frame = K.contrasts(cells)
    if frame.empty:
        return
    console.print(K.render(frame, title="paired contrasts (judge accuracy, points)"))
    console.print(K.caption(frame), highlight=False)


def _print_summary(console: Console, result: GridResult) -> None:
    if not result.store.exists():
        return
    cells = S.load_cells(result.store)
    if cells.empty:
        return
    wanted = {c.config_hash for c in result.selected}
    mine = cells[cells[C.CONFIG_HASH].isin(wanted)]
    console.print(render_summary(mine, title=f"{result.spec.name} ({result.store})"))
    print_contrasts(console, mine)
    counts: dict[str, int] = {}
    for _, status in result.ran:
        counts[status] = counts.get(status, 0) + 1
    text = ", ".join(f"{n} {s}" for s, n in counts.items()) or "nothing run"
    console.print(f"this run: {text}; skipped (done before): {len(result.skipped)}; pending: {len(result.pending)}")

