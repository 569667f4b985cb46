"""`dct search`: the Typer app of bench.search (study.py, show.py) (mounted by the root cli.py as `search`).

    dct search [--space ablations/search.toml] [--trials N] [--storage URL] [--study NAME]
    dct search best [--study NAME] [--out FILE] [--trial N]
    dct search show [--study NAME]
    dct search plots [--study NAME]

Exit codes: 0 when the study ran (failed trials are part of a search), 2 for a bad space file or option,
128+signal when stopped by Ctrl-C/SIGTERM (the running trial is re-queued).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from dct.clikit import DEVICE_HELP, JSON_HELP, fail
from dct.errors import DCTError


search_app = typer.Typer(help="Optuna search over training settings; every trial is a measured cell in the "
                              "study's result store.", no_args_is_help=False, add_completion=False)

SpaceOpt = Annotated[Optional[Path], typer.Option("--space", help="Search space TOML (default ablations/search.toml; "
                                                  "an existing study keeps the space it was created with).")]
StudyOpt = Annotated[Optional[str], typer.Option("--study", help="Study name (default: the space's study name).")]
StorageOpt = Annotated[Optional[str], typer.Option(
    "--storage", help="Optuna storage URL: postgresql://user@host/db, journal:///shared/file.log (default $DCT_STORAGE, else SQLite "
                      "in results/search/<study>/study.db). Prefer $DCT_DB_PASSWORD or ~/.pgpass to a "
                      "password in the URL.", show_default=False)]
ResultsOpt = Annotated[Path, typer.Option("--results", help="Results root; the study's store is <results>/search/<study>.")]


JsonOpt = Annotated[bool, typer.Option("--json", help=JSON_HELP)]


def _trials_json(study) -> str:
    import json

    return json.dumps([{"number": t.number, "state": t.state.name.lower(), "values": t.values, "params": t.params,
                        "user_attrs": t.user_attrs} for t in study.get_trials(deepcopy=False)], indent=1, default=str)


def _study_name(study: str | None, space: Path | None) -> str:
    from bench.search.study import DEFAULT_SPACE
    from bench.search.space import load_space

    return study or load_space(space or DEFAULT_SPACE).name


def _open(study: str | None, storage: str | None, results: Path, space: Path | None = None):
    from bench.search.storage import make_storage, resolve_storage_url
    from bench.search.study import open_study

    name = _study_name(study, space)
    db = make_storage(resolve_storage_url(storage, name, results, create=False))
    return open_study(db, study_name=name, create=False)


@search_app.callback(invoke_without_command=True)
def search(
    ctx: typer.Context,
    space: SpaceOpt = None,
    trials: Annotated[Optional[int], typer.Option("--trials", help="The study's budget of finished trials "
                                                  "(default: the space's trials); re-running continues up to it.")] = None,
    storage: StorageOpt = None,
    study: StudyOpt = None,
    results: ResultsOpt = Path("results"),
    device: Annotated[str, typer.Option("--device", help=DEVICE_HELP)] = "auto",
    timeout_per_trial: Annotated[Optional[float], typer.Option("--timeout-per-trial", help="Seconds before a "
                                                               "trial's cell is killed.")] = None,
    heartbeat: Annotated[int, typer.Option("--heartbeat", help="Seconds between heartbeats of a running trial.")] = 30,
    grace: Annotated[Optional[int], typer.Option("--grace", help="Seconds without a heartbeat before a trial is "
                                                 "failed and retried (default 4 x heartbeat).")] = None,
    max_retry: Annotated[int, typer.Option("--max-retry", help="Retries of a trial whose worker died.")] = 3,
    figures: Annotated[bool, typer.Option("--figures/--no-figures", help="Draw the study's figures at the end.")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Create or resume a study and run its trials (ablations/search.toml by default)."""
    if ctx.invoked_subcommand is not None:
        return
    from bench.search.study import run_search

    console = Console(stderr=True)
    try:
        result = run_search(space, study_name=study, storage=storage, trials=trials, results=results, device=device,
                            timeout_per_trial=timeout_per_trial, heartbeat=heartbeat, grace=grace,
                            max_retry=max_retry, figures=figures, console=console)
    except DCTError as e:
        fail(e)
    if as_json:
        typer.echo(_trials_json(result.study))
    else:
        _print_summary(console, result)
    if result.interrupted_by is not None:
        raise typer.Exit(128 + result.interrupted_by)


def _print_summary(console: Console, result) -> None:
    from bench.search.show import trials_table
    from bench.search.study import budget, finished_trials

    console.print(trials_table(result.study, result.space, limit=10))
    done = len(finished_trials(result.study.get_trials(deepcopy=False)))
    console.print(f"this run: {len(result.ran)} trial(s); study: {done} of {budget(result.study)} finished; "
                  f"store {result.store}", highlight=False)
    for name, where in result.figures.items():
        console.print(f"  figure {name}: {where}", highlight=False)


@search_app.command("best")
def best_command(
    study: StudyOpt = None, storage: StorageOpt = None, results: ResultsOpt = Path("results"),
    out: Annotated[Optional[Path], typer.Option("--out", help="Preset file to write (default "
                                                "<results>/search/<study>/best.toml).")] = None,
    trial: Annotated[Optional[int], typer.Option("--trial", help="Export this trial instead of the best.")] = None,
    space: SpaceOpt = None, as_json: JsonOpt = False,
) -> None:
    """Export the best trial's configuration as a preset file for `dct train --preset FILE`."""
    from bench.search.show import export_best
    from bench.search.storage import study_store

    console = Console(stderr=True)
    try:
        found, sp = _open(study, storage, results, space)
        path = export_best(found, sp, out or study_store(found.study_name, results) / "best.toml", number=trial)
    except DCTError as e:
        fail(e)
    console.print(f"wrote {path}\n  dct train --class <c> --preset {path}", highlight=False)
    if as_json:
        import json

        typer.echo(json.dumps({"preset": str(path)}))
    else:
        typer.echo(str(path))


@search_app.command("show")
def show_command(study: StudyOpt = None, storage: StorageOpt = None, results: ResultsOpt = Path("results"),
                 space: SpaceOpt = None,
                 limit: Annotated[Optional[int], typer.Option("--limit", help="At most this many rows.")] = None,
                 as_json: JsonOpt = False) -> None:
    """The study's complete trials, best first (Pareto trials marked)."""
    from bench.search.show import trials_table
    from bench.search.study import budget, finished_trials

    console = Console()
    try:
        found, sp = _open(study, storage, results, space)
    except DCTError as e:
        fail(e)
    if as_json:
        typer.echo(_trials_json(found))
        return
    console.print(trials_table(found, sp, limit=limit))
    console.print(f"{len(finished_trials(found.get_trials(deepcopy=False)))} of {budget(found)} trial(s) finished")


@search_app.command("plots")
def plots_command(study: StudyOpt = None, storage: StorageOpt = None, results: ResultsOpt = Path("results"),
                  space: SpaceOpt = None) -> None:
    """(Re)draw the study's figures into <results>/search/<study>/figures/."""
    from bench.search.show import FIGURES_DIR, save_figures
    from bench.search.storage import study_store

    console = Console(stderr=True)
    try:
        found, sp = _open(study, storage, results, space)
    except DCTError as e:
        fail(e)
    for name, where in save_figures(found, sp, study_store(found.study_name, results) / FIGURES_DIR).items():
        console.print(f"{name}: {where}", highlight=False)
