"""Workers for shared studies and grids, and launching N of them through submitit (SLURM, or local
processes with submitit's LocalExecutor).

    dct worker --storage postgresql://dct@db-host/dct --study dct-search
    dct worker --storage postgresql://dct@db-host/dct --grid ablations/depth.toml
    dct worker --storage journal:///shared/dct.log --grid ablations/depth.toml   # a shared file, no server
    dct launch --slurm --workers 8 --storage postgresql://dct@db-host/dct --study dct-search --partition gpu
    dct launch --slurm --workers 8 --storage journal:///shared/dct.log --grid ablations/depth.toml
    dct launch --local --workers 2 --storage ... --grid ablations/depth.toml --wait

Grids and studies share one engine: Optuna's storage (bench.search.storage: SQLite, a journal file, or
PostgreSQL) and one worker loop (bench.search.worker); a grid is a study of enqueued cells
(bench.scale.shared_grid).

Passwords: a URL on a command line is visible to `ps` and lands in shell history; give the password as
$DCT_DB_PASSWORD (or libpq's $PGPASSWORD / ~/.pgpass) and a URL without it. `dct launch` never puts a
password in what submitit writes (pickled job arguments, sbatch scripts, logs): it passes the jobs the
URL without the password and the password through the environment, which local jobs inherit and sbatch
exports by default (--export=ALL). Printed URLs are redacted.

`dct launch` prepares the study (created from --space, presets enqueued) or the grid's enqueued cells before
it submits, so that workers starting together never race to create them. Workers run in the folder
`dct launch` was started from (results paths are relative to it): on a cluster, a shared file system.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Iterator, Optional

import typer
from rich.console import Console

from dct.clikit import DEVICE_HELP, JSON_HELP, fail
from dct.errors import ConfigError, DCTError

from bench.provenance import redact

worker_app = typer.Typer(help="Run trials of a shared study, or cells of a shared grid, until none is left.",
                         add_completion=False)
launch_app = typer.Typer(help="Start N workers through submitit: SLURM jobs (--slurm) or local processes (--local).",
                         add_completion=False)

StorageOpt = Annotated[Optional[str], typer.Option(
    "--storage", help="Storage shared by the workers: postgresql://user@host/db, journal:///shared/file.log (a file "
                      "on a shared file system, no server) or sqlite:///file.db (one machine); default $DCT_STORAGE. "
                      "The password from $DCT_DB_PASSWORD, $PGPASSWORD or ~/.pgpass.", show_default=False)]
StudyOpt = Annotated[Optional[str], typer.Option("--study", help="The Optuna study to work on.")]
GridOpt = Annotated[Optional[Path], typer.Option("--grid", help="The grid spec (TOML) to work on.")]
StoreOpt = Annotated[Optional[Path], typer.Option("--store", help="Grid: the store folder (default: the spec's).")]
ResultsOpt = Annotated[Path, typer.Option("--results", help="Study: results root (store <results>/search/<study>).")]
DeviceOpt = Annotated[str, typer.Option("--device", help=DEVICE_HELP)]
TimeoutOpt = Annotated[Optional[float], typer.Option("--timeout-per-cell", help="Seconds before a cell (trial) "
                                                     "is killed.")]
HeartbeatOpt = Annotated[int, typer.Option("--heartbeat", help="Seconds between heartbeats of a running cell/trial.")]
GraceOpt = Annotated[Optional[int], typer.Option("--grace", help="Seconds without a heartbeat after which another "
                                                 "worker takes the cell/trial over (default 4 x heartbeat).")]
RetryOpt = Annotated[int, typer.Option("--max-retry", help="How often a cell/trial whose worker died is run again.")]


def _target(study: str | None, grid: Path | None) -> tuple[str, str]:
    if (study is None) == (grid is None):
        raise ConfigError("give exactly one of --study NAME and --grid SPEC")
    return ("study", study) if study is not None else ("grid", str(grid))


def _storage(url: str | None) -> str:
    from bench.search.storage import STORAGE_ENV, resolve_storage_url

    if not (url or os.environ.get(STORAGE_ENV)):
        raise ConfigError(f"workers share a storage: give --storage URL (or set ${STORAGE_ENV})")
    return resolve_storage_url(url)


def run_worker(kind: str, target: str, *, storage: str, store: str | None = None, results: str = "results",
               device: str = "auto", timeout: float | None = None, heartbeat: int = 30, grace: int | None = None,
               max_retry: int = 3, retry_failed: bool = False, console: Console | None = None) -> dict[str, Any]:
    """One worker on a study (kind "study") or a grid (kind "grid"); returns a summary without secrets."""
    console = console or Console(stderr=True)
    url = _storage(storage)
    if kind == "study":
        from bench.search.study import run_search

        result = run_search(None, study_name=target, storage=url, results=results, device=device,
                            timeout_per_trial=timeout, heartbeat=heartbeat, grace=grace, max_retry=max_retry,
                            figures=False, worker=True, console=console)
        return {"kind": kind, "target": target, "ran": result.ran, "interrupted_by": result.interrupted_by}
    from bench.scale.shared_grid import run_grid_worker

    result = run_grid_worker(target, storage=url, store=store, device=device, timeout_per_cell=timeout,
                             heartbeat=heartbeat, grace=grace, max_retry=max_retry, retry_failed=retry_failed,
                             console=console)
    return {"kind": kind, "target": target, "worker": result.worker, "ran": result.ran,
            "recovered": result.recovered, "lost": result.lost, "counts": result.counts,
            "interrupted_by": result.interrupted_by}


def worker_job(kind: str, target: str, storage: str, cwd: str, options: dict[str, Any], index: int = 0) -> dict:
    """What a submitit job runs: `storage` has no password (it comes from the environment)."""
    os.chdir(cwd)
    summary = run_worker(kind, target, storage=storage, **options)
    return {**summary, "index": index}


@contextmanager
def _password_in_environment(password: str | None) -> Iterator[None]:
    from bench.search.storage import PASSWORD_ENV

    if password is None:
        yield
        return
    previous = os.environ.get(PASSWORD_ENV)
    os.environ[PASSWORD_ENV] = password
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(PASSWORD_ENV, None)
        else:
            os.environ[PASSWORD_ENV] = previous


def prepare(kind: str, target: str, url: str, *, space: str | None = None, trials: int | None = None,
            store: str | None = None, results: str = "results", retry_failed: bool = False,
            console: Console | None = None) -> str:
    """Create the study (from `space`) or enqueue the grid's cells before workers start. Returns a line
    describing the state."""
    console = console or Console(stderr=True)
    if kind == "study":
        from bench.search.storage import make_storage
        from bench.search.study import budget, finished_trials, open_study

        study, sp = open_study(make_storage(url), study_name=target, space_path=space, trials=trials, create=True,
                               console=console)
        return (f"study {target}: {len(finished_trials(study.get_trials(deepcopy=False)))} of {budget(study)} "
                f"trial(s) finished")
    from bench import store as S
    from bench.scale.shared_grid import counts, grid_study, register
    from bench.search.storage import make_storage
    from bench.spec import load_spec

    spec = load_spec(target, store=store)
    study = grid_study(make_storage(url), spec.name)
    register(study, list(spec.cells.values()), S.done_hashes(spec.store) if spec.store.exists() else set(),
             retry_failed=retry_failed)
    return f"grid {spec.name}: {counts(study, set(spec.cells))}"


def launch_workers(n: int, kind: str, target: str, *, storage: str, executor: str, folder: str | Path,
                   space: str | None = None, trials: int | None = None, options: dict[str, Any] | None = None,
                   slurm: dict[str, Any] | None = None, console: Console | None = None):
    """Submit `n` worker jobs (one submitit job array); returns the jobs."""
    import submitit

    from bench.search.storage import without_password

    console = console or Console(stderr=True)
    if n < 1:
        raise ConfigError(f"--workers {n!r} is not accepted: an integer >= 1")
    if executor not in ("slurm", "local"):
        raise ConfigError(f"executor {executor!r} is not accepted: 'slurm' or 'local'")
    options = dict(options or {})
    url = _storage(storage)
    console.print(prepare(kind, target, url, space=space, trials=trials, store=options.get("store"),
                          results=options.get("results", "results"),
                          retry_failed=options.pop("retry_failed", False), console=console), highlight=False)
    public, password = without_password(url)
    folder = Path(folder)
    ex = submitit.AutoExecutor(folder=folder / "%j", cluster=executor)
    params: dict[str, Any] = {"name": f"dct-{kind}-{Path(target).stem}", "timeout_min": 24 * 60}
    params.update({k: v for k, v in (slurm or {}).items() if v is not None})
    ex.update_parameters(**params)
    cwd = str(Path.cwd())
    with _password_in_environment(password):
        jobs = ex.map_array(worker_job, [kind] * n, [target] * n, [public] * n, [cwd] * n, [options] * n, list(range(n)))
    console.print(f"submitted {n} {kind} worker(s) ({executor}) on {redact(public)}: "
                  f"{', '.join(j.job_id for j in jobs)}; logs in {folder}", highlight=False)
    return jobs


# --- CLI -----------------------------------------------------------------------------------------------------


@worker_app.callback(invoke_without_command=True)
def worker_command(
    storage: StorageOpt = None, study: StudyOpt = None, grid: GridOpt = None, store: StoreOpt = None,
    results: ResultsOpt = Path("results"), device: DeviceOpt = "auto", timeout_per_cell: TimeoutOpt = None,
    heartbeat: HeartbeatOpt = 30, grace: GraceOpt = None, max_retry: RetryOpt = 3,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Grid: run failed cells again.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP + " (what this worker did)")] = False,
) -> None:
    """Work on a shared study (--study) or grid (--grid) until nothing is left; exit 128+signal when stopped."""
    console = Console(stderr=True)
    try:
        kind, target = _target(study, grid)
        summary = run_worker(kind, target, storage=storage, store=str(store) if store else None,
                             results=str(results), device=device, timeout=timeout_per_cell, heartbeat=heartbeat,
                             grace=grace, max_retry=max_retry, retry_failed=retry_failed, console=console)
    except DCTError as e:
        fail(e)
    if as_json:
        import json

        typer.echo(json.dumps(summary, default=str))
    if summary.get("interrupted_by"):
        raise typer.Exit(128 + summary["interrupted_by"])


@launch_app.callback(invoke_without_command=True)
def launch_command(
    workers: Annotated[int, typer.Option("--workers", help="How many workers (jobs).")] = 1,
    slurm: Annotated[bool, typer.Option("--slurm", help="Submit SLURM jobs (a job array).")] = False,
    local: Annotated[bool, typer.Option("--local", help="Run the workers as local processes (submitit LocalExecutor).")] = False,
    storage: StorageOpt = None, study: StudyOpt = None, grid: GridOpt = None,
    space: Annotated[Optional[Path], typer.Option("--space", help="Study: the search space it is created from.")] = None,
    trials: Annotated[Optional[int], typer.Option("--trials", help="Study: its budget of finished trials.")] = None,
    store: StoreOpt = None, results: ResultsOpt = Path("results"), device: DeviceOpt = "auto",
    timeout_per_cell: TimeoutOpt = None, heartbeat: HeartbeatOpt = 30, grace: GraceOpt = None,
    max_retry: RetryOpt = 3,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Grid: run failed cells again.")] = False,
    folder: Annotated[Path, typer.Option("--folder", help="submitit's folder (job scripts, logs).")] = Path("results/launch"),
    partition: Annotated[Optional[str], typer.Option("--partition", help="SLURM partition.")] = None,
    time_min: Annotated[int, typer.Option("--time", help="Job time limit, minutes.")] = 24 * 60,
    gpus_per_node: Annotated[Optional[int], typer.Option("--gpus", help="GPUs per worker.")] = None,
    cpus_per_task: Annotated[Optional[int], typer.Option("--cpus", help="CPUs per worker.")] = None,
    mem_gb: Annotated[Optional[float], typer.Option("--mem-gb", help="Memory per worker, GB.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the workers and print what each did.")] = False,
) -> None:
    """Prepare a study or grid, then start N workers on it through submitit."""
    console = Console(stderr=True)
    if slurm == local:
        fail(ConfigError("give exactly one of --slurm and --local"))
    try:
        kind, target = _target(study, grid)
        options = {"store": str(store) if store else None, "results": str(results), "device": device,
                   "timeout": timeout_per_cell, "heartbeat": heartbeat, "grace": grace, "max_retry": max_retry,
                   "retry_failed": retry_failed}
        jobs = launch_workers(workers, kind, target, storage=storage, executor="slurm" if slurm else "local",
                              folder=folder, space=str(space) if space else None, trials=trials, options=options,
                              slurm={"slurm_partition": partition, "timeout_min": time_min,
                                     "gpus_per_node": gpus_per_node, "cpus_per_task": cpus_per_task,
                                     "mem_gb": mem_gb}, console=console)
    except DCTError as e:
        fail(e)
    if not wait:
        return
    failed, total = 0, 0
    what = "trial(s)" if study is not None else "cell(s)"
    for job in jobs:
        try:
            summary = job.result()
            total += len(summary.get("ran", []))
            console.print(f"job {job.job_id}: ran {len(summary.get('ran', []))} {what}", highlight=False)
        except Exception as e:  # noqa: BLE001 - a worker that failed is reported, the others still count
            failed += 1
            console.print(f"[red]job {job.job_id} failed[/]: {redact(str(e))[-2000:]}", highlight=False)
    console.print(f"{len(jobs) - failed} of {len(jobs)} worker(s) finished; ran {total} {what} in all", highlight=False)
    if failed:
        raise typer.Exit(1)
