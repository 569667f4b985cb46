"""`dct figures` and `dct report`: Typer apps that the root cli.py mounts.

    from bench.figures.cli import figures_app, report_app
    app.add_typer(figures_app, name="figures")      # dct figures --results results/depth [--out DIR] [--format png,svg]
    app.add_typer(report_app, name="report")        # dct report --results results/depth [--results ...] [--out DIR]

Each app is a single callback (invoke_without_command), so the options follow the command name directly.
Plotting libraries are imported only when a command runs: mounting costs the root CLI nothing.

Without the root CLI: python -m bench.figures.cli figures --results results/depth
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from dct.clikit import fail
from dct.errors import DCTError

figures_app = typer.Typer(help="Figures of result stores (PNG, SVG or PDF).", subcommand_metavar="")
report_app = typer.Typer(help="One self-contained HTML report (and its Markdown twin) of result stores.",
                         subcommand_metavar="")

ResultsOpt = Annotated[list[Path], typer.Option("--store", "--results", help="A result store folder (or an experiment name "
                                                "under results/); repeat for several stores.")]


@figures_app.callback(invoke_without_command=True)
def figures_command(
    results: ResultsOpt,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output folder; default <store>/figures. With several "
                                                "stores, one sub-folder per store.")] = None,
    formats: Annotated[str, typer.Option("--format", help="Comma-separated: png, svg, pdf.")] = "png,svg",
    only: Annotated[Optional[list[str]], typer.Option("--only", help="Draw only this figure (repeatable); see "
                                                      "--list.")] = None,
    list_figures: Annotated[bool, typer.Option("--list", help="List the figures and what each needs, then "
                                               "exit.")] = False,
) -> None:
    """Draw every figure a store supports; say which were skipped and why."""
    from bench.figures import draw as F
    from bench.figures.data import resolve_store

    console = Console()
    if list_figures:
        table = Table(title="figures")
        table.add_column("figure")
        table.add_column("needs")
        for kind in F.FIGURES:
            table.add_row(kind.name, kind.needs)
        console.print(table)
        return
    try:
        fmt = F.parse_formats(formats)
        stores = [resolve_store(s) for s in results]
        for store in stores:
            target = None if out is None else (out if len(stores) == 1 else out / store.resolve().name)
            done = F.draw_figures(store, out=target, formats=fmt, only=only)
            _print_figures(console, done)
    except DCTError as e:
        fail(e)


def _print_figures(console: Console, done) -> None:
    table = Table(title=f"{done.store}: {len(done.drawn)} figure(s) in {done.out}", title_justify="left")
    table.add_column("figure")
    table.add_column("files")
    table.add_column("notes", overflow="fold")
    for fig in done.drawn:
        table.add_row(fig.stem, ", ".join(p.name for p in fig.files.values()), "; ".join(fig.marks))
    console.print(table)
    for skipped in done.skipped:
        console.print(f"  skipped [bold]{skipped.kind}[/]: {skipped.reason}", highlight=False)


@report_app.callback(invoke_without_command=True)
def report_command(
    results: ResultsOpt,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output folder for report.html, report.md and "
                                                "figures/; default <store>/report (required for several "
                                                "stores).")] = None,
    title: Annotated[Optional[str], typer.Option("--title", help="Page title.")] = None,
) -> None:
    """Write report.html (figures embedded, opens anywhere) and report.md (links the PNG files)."""
    from bench.figures.report import build_report

    console = Console()
    try:
        built = build_report(results, out=out, title=title)
    except DCTError as e:
        fail(e)
    for sr in built.stores:
        skipped = ", ".join(s.kind for s in sr.figures.skipped)
        console.print(f"{sr.data.path}: {len(sr.data.cells)} cell(s), {len(sr.figures.drawn)} figure(s)"
                      + (f"; skipped: {skipped}" if skipped else ""), highlight=False)
    console.print(f"wrote {built.html} and {built.markdown}", highlight=False)


if __name__ == "__main__":
    main = typer.Typer(no_args_is_help=True)
    main.add_typer(figures_app, name="figures")
    main.add_typer(report_app, name="report")
    main()
