"""Command-line entry points of the grid runner, as Typer apps that the root cli.py mounts:

    bench_app.command("depth")(make_bench_command("depth"))     # -> dct bench depth [--spec ...] ...
    app.add_typer(bench_app, name="bench")
    app.add_typer(results_app, name="results")                  # -> dct results show results/depth

`dct bench run --spec FILE` runs any spec. A named command reads ablations/<name>.toml, found by
find_spec (below) in a checkout, an editable install, or a package that ships the specs.

Without the root CLI: python -m bench.cli bench run --spec ablations/depth.toml
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer
from rich.console import Console

from dct.clikit import DEVICE_HELP, JSON_HELP, fail
from dct.errors import DCTError

from bench import columns as C

SPEC_DIR_ENV = "DCT_ABLATIONS"

bench_app = typer.Typer(help="Benchmark grids: one spec (ablations/<name>.toml), many cells, one result store.",
                        no_args_is_help=True)
results_app = typer.Typer(help="Inspect result stores (results/<experiment>/).", no_args_is_help=True)


# A Typer app with one command and no callback collapses into that command; these keep `run`/`show`
# as named subcommands however many commands the root CLI adds.
@bench_app.callback()
def _bench_group() -> None:
    """Benchmark grids: one spec (ablations/<name>.toml), many cells, one result store."""


@results_app.callback()
def _results_group() -> None:
    """Inspect result stores (results/<experiment>/)."""


def spec_dirs() -> list[Path]:
    """Where named specs are looked for, in order: $DCT_ABLATIONS, ./ablations, the checkout's ablations/
    (next to the bench package: a clone or an editable install), then bench/ablations inside an installed
    package (present only if the build copies the specs there)."""
    dirs = []
    if os.environ.get(SPEC_DIR_ENV):
        dirs.append(Path(os.environ[SPEC_DIR_ENV]))
    dirs.append(Path.cwd() / "ablations")
    dirs.append(Path(__file__).resolve().parent.parent / "ablations")
    try:
        dirs.append(Path(str(resources.files("bench") / "ablations")))
    except (ModuleNotFoundError, TypeError):
        pass
    return list(dict.fromkeys(dirs))


def find_spec(name: str) -> Path:
    searched = spec_dirs()
    for folder in searched:
        candidate = folder / f"{name}.toml"
        if candidate.is_file():
            return candidate
    known = sorted({p.stem for d in searched if d.is_dir() for p in d.glob("*.toml")})
    raise DCTError(f"no spec {name}.toml in {[str(d) for d in searched]}; specs found: {known or 'none'}; "
                   f"pass --spec FILE or set ${SPEC_DIR_ENV}")


SpecOpt = Annotated[Optional[Path], typer.Option("--spec", help="Spec file (TOML).")]
StoreOpt = Annotated[Optional[Path], typer.Option("--store", help="Result folder; default: the spec's, "
                                                  "results/<experiment name>.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Run done cells again; the new row supersedes the old "
                                        "one, which is kept.")]
OnlyOpt = Annotated[Optional[list[str]], typer.Option("--only", help="Only cells whose config hash starts with "
                                                      "this (4+ characters) or whose label contains it; repeatable.")]
DryOpt = Annotated[bool, typer.Option("--dry-run", help="List the cells and whether each is done; run nothing.")]
DeviceOpt = Annotated[str, typer.Option("--device", help=DEVICE_HELP)]
TimeoutOpt = Annotated[Optional[float], typer.Option("--timeout-per-cell", help="Kill a cell after this many "
                                                     "seconds (status timeout); default: the spec's, or none.")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Live progress bar.")]
PlanOpt = Annotated[bool, typer.Option("--plan/--no-plan", help="Step grids: predict each cell's memory first "
                                       "and record cells predicted not to fit the GPU as predicted-oom "
                                       "instead of running them (dct bench plan).")]


JobsOpt = Annotated[Optional[int], typer.Option(
    "--jobs", help="Cells run at once, each with cores/jobs threads (default: one per core on a CPU, as "
                   "memory allows; 1 on a GPU).", show_default=False)]


def _run(spec: Path, store, force, only, dry_run, device, timeout_per_cell, progress, as_json=False,
         plan=True, jobs=None) -> None:
    import io

    from bench.grid import run_grid

    try:
        result = run_grid(spec, store=store, force=force, only=only or (), dry_run=dry_run, device=device,
                          timeout_per_cell=timeout_per_cell, console=Console(stderr=True), show_progress=progress,
                          out=Console(file=io.StringIO()) if as_json else Console(), plan=plan, jobs=jobs)
    except DCTError as e:
        fail(e)
    if as_json:
        _print_json(result, dry_run)
    if result.interrupted_by is not None:
        raise typer.Exit(128 + result.interrupted_by)
    if any(status != C.STATUS_OK for _, status in result.ran):
        raise typer.Exit(1)


def _print_json(result, dry_run: bool) -> None:
    """The selected cells as JSON records: their store rows (every column), or with --dry-run their plan."""
    import json

    from bench.store import load_cells

    wanted = [c.config_hash for c in result.selected]
    frame = load_cells(result.store) if result.store.exists() else None
    if dry_run or frame is None or frame.empty:
        done = set() if frame is None or frame.empty else set(frame.loc[frame[C.STATUS] == C.STATUS_OK, C.CONFIG_HASH])
        print(json.dumps([{C.CONFIG_HASH: c.config_hash, C.LABEL: c.label,
                           "state": "done" if c.config_hash in done else "pending"} for c in result.selected],
                         indent=1))
        return
    print(frame[frame[C.CONFIG_HASH].isin(wanted)].to_json(orient="records", indent=1))


JsonOpt = Annotated[bool, typer.Option("--json", help=JSON_HELP + " (the cells' store rows; with --dry-run, "
                                       "the plan)")]


def make_bench_command(name: str, *, help: str | None = None) -> Callable[..., None]:
    """A Typer command running ablations/<name>.toml (or --spec FILE). Exit code 0 when every cell run
    now ended ok, 1 when one did not (the grid still ran the rest), 2 for a bad spec or option,
    128+signal when stopped by Ctrl-C/SIGTERM."""

    def command(spec: SpecOpt = None, store: StoreOpt = None, force: ForceOpt = False, only: OnlyOpt = None,
                dry_run: DryOpt = False, device: DeviceOpt = "auto", timeout_per_cell: TimeoutOpt = None,
                progress: ProgressOpt = True, as_json: JsonOpt = False, plan: PlanOpt = True,
                jobs: JobsOpt = None) -> None:
        try:
            path = spec if spec is not None else find_spec(name)
        except DCTError as e:
            fail(e)
        _run(path, store, force, only, dry_run, device, timeout_per_cell, progress, as_json, plan, jobs)

    command.__name__ = f"bench_{name}"
    command.__doc__ = help or f"Run the {name} grid (ablations/{name}.toml), resuming where it stopped."
    return command


@bench_app.command("run")
def run_command(spec: Annotated[Path, typer.Option("--spec", help="Spec file (TOML).")],
                store: StoreOpt = None, force: ForceOpt = False, only: OnlyOpt = None, dry_run: DryOpt = False,
                device: DeviceOpt = "auto", timeout_per_cell: TimeoutOpt = None, progress: ProgressOpt = True,
                as_json: JsonOpt = False, plan: PlanOpt = True, jobs: JobsOpt = None) -> None:
    """Run any spec file, resuming where it stopped."""
    _run(spec, store, force, only, dry_run, device, timeout_per_cell, progress, as_json, plan, jobs)


@results_app.command("show")
def show_command(store: Annotated[Path, typer.Argument(help="A store folder, or an experiment name under results/.")],
                 as_json: Annotated[bool, typer.Option("--json", help="Print every column of every row as JSON "
                                                       "records.")] = False,
                 columns: Annotated[Optional[str], typer.Option("--columns", help="Comma-separated columns; "
                                    "metric_/cfg_ prefixes may be left out.")] = None,
                 every_column: Annotated[bool, typer.Option("--all", help="Every column, as one "
                                                            "'column value' line each, instead of the 80-column summary.")] = False,
                 attempts: Annotated[bool, typer.Option("--attempts", help="Include superseded attempts.")] = False) -> None:
    """Show the cells of a result store: a summary that fits 80 columns (label, status, peak memory,
    s/step, accuracy [CI], plain, FID) and the paired contrasts of each axis against its baseline;
    --all for every column, --json for everything."""
    from bench.store import CELLS_DIR, load_cells
    from bench.table import render, render_records, render_summary, resolve_columns

    if not (store / CELLS_DIR).is_dir() and (Path("results") / store / CELLS_DIR).is_dir():
        store = Path("results") / store
    if not (store / CELLS_DIR).is_dir():
        fail(DCTError(f"{store} is not a result store (no {CELLS_DIR}/ folder in it)"))
    frame = load_cells(store, all_rows=attempts)
    try:
        cols = resolve_columns(frame, [c.strip() for c in columns.split(",") if c.strip()]) if columns else None
    except DCTError as e:
        fail(e)
    if as_json:
        print(frame[cols or list(frame.columns)].to_json(orient="records", indent=1))
        return
    title = f"{store} ({len(frame)} row(s))"
    if cols is not None:
        Console().print(render(frame, cols, title=title))
    elif every_column:
        Console().print(render_records(frame, title=title))
    else:
        from bench.grid import print_contrasts

        Console().print(render_summary(frame, title=title, extra=(C.SUPERSEDED,) if attempts else ()))
        if not attempts:
            print_contrasts(Console(), frame)


if __name__ == "__main__":
    main = typer.Typer(no_args_is_help=True)
    main.add_typer(bench_app, name="bench")
    main.add_typer(results_app, name="results")
    main()
