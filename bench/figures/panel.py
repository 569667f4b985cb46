"""What every figure function shares: the Panel it returns, Skip (raised when a store cannot support it),
DrawOptions, the facet grid (a seaborn FacetGrid, one column or block of rows per facet) and the small
axis and text helpers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import PercentFormatter

from bench.figures import data as D
from bench.figures.style import FACET_COLS, PANEL, PLAIN_COLOR

FACET = "_facet"  # facet_grid's frame: the facet key
ROW = "_row"  # and the row (measured quantity) within the facet


class Skip(Exception):
    """A figure that this store cannot support; the message says which columns or values are missing."""


@dataclass
class Panel:
    """One drawn figure before saving."""

    stem: str
    figure: Figure
    title: str
    caption: str
    marks: list[str] = field(default_factory=list)



@dataclass(frozen=True)
class DrawOptions:
    # Image grids for at most this many cells (None: all), spread over the accuracy range: a report with
    # a grid for every cell of a large grid would weigh hundreds of megabytes.
    example_cells: int | None = None



def require_columns(cells: pd.DataFrame, *cols: str) -> None:
    missing = [c for c in cols if c not in cells.columns or cells[c].isna().all()]
    if missing:
        raise Skip(f"no {', '.join(missing)} column in the store" if len(missing) == 1
                   else f"no {', '.join(missing)} columns in the store")



def bottom_facets(keys: list[str], max_cols: int = FACET_COLS) -> set[str]:
    """Facets with no panel below them: the ones that carry the x-axis label."""
    ncols = min(max(1, len(keys)), max_cols)
    return {k for i, k in enumerate(keys) if i + ncols >= len(keys)}


def facet_grid(frame: pd.DataFrame, keys: list[str], rows_per_facet: int = 1, max_cols: int = FACET_COLS,
               panel=PANEL) -> tuple[sns.FacetGrid, dict]:
    """A seaborn FacetGrid over `frame` (columns FACET: the facet key, ROW: which measured quantity) with
    one column, or block of `rows_per_facet` rows, per key in `keys`, wrapped after `max_cols` facets;
    returns (grid, {key: [axes, one per row]}). FacetGrid cannot wrap a grid that has rows, so the frame
    gets the panel's position (_prow, _pcol) and the grid facets on that. All panels of one quantity
    share their y axis, so that facets compare at a glance. The figure is pyplot's (FacetGrid makes it
    so): draw_figures closes it once saved."""
    n = max(1, len(keys))
    ncols = min(n, max_cols)
    nblocks = math.ceil(n / ncols)
    position = {key: divmod(i, ncols) for i, key in enumerate(keys or [""])}
    frame = frame.assign(_prow=[position[k][0] * rows_per_facet + r for k, r in zip(frame[FACET], frame[ROW])],
                         _pcol=[position[k][1] for k in frame[FACET]])
    grid = sns.FacetGrid(frame, row="_prow", col="_pcol", row_order=range(nblocks * rows_per_facet),
                         col_order=range(ncols), height=panel[1], aspect=panel[0] / panel[1], sharex=False,
                         sharey=False, despine=False, margin_titles=False)
    grid.figure.set_size_inches(panel[0] * ncols, panel[1] * rows_per_facet * nblocks + 0.9)
    out = {key: [grid.axes[block * rows_per_facet + r][col] for r in range(rows_per_facet)]
           for key, (block, col) in position.items()}
    first = out[(keys or [""])[0]]
    for i, key in enumerate(keys[1:], 1):  # one y scale per measured quantity, across all facets
        for r, ax in enumerate(out[key]):
            ax.sharey(first[r])
            if i % ncols:
                ax.tick_params(labelleft=False)
    for i in range(n, nblocks * ncols):
        block, col = divmod(i, ncols)
        for r in range(rows_per_facet):
            grid.axes[block * rows_per_facet + r][col].set_visible(False)
    return grid, out


def finish_grid(grid: sns.FacetGrid) -> None:
    """After mapping: FacetGrid's own titles and tight layout give way to the figure's constrained layout
    (room for the legend below the panels and the suptitle)."""
    for ax in grid.axes.flat:
        ax.set_title("")
    grid.figure.set_layout_engine("constrained")


def num(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def range_text(values) -> str:
    values = sorted({int(v) for v in values if v is not None and not pd.isna(v)})
    if not values:
        return "?"
    return str(values[0]) if len(values) == 1 else f"{values[0]}–{values[-1]}"


def plain_baseline(ax, sub: pd.DataFrame, *, vertical: bool = False) -> Line2D | None:
    """The plain prompt's accuracy (same seeds, same judge, in %) as a dashed line with its CI (the stored
    _lo/_hi columns) as a band: horizontal across a y-accuracy axis, vertical across bars (`vertical`)."""
    if D.PLAIN_ACC not in sub.columns or sub[D.PLAIN_ACC].isna().all():
        return None
    value = sub[D.PLAIN_ACC].mean() * 100
    lo_col, hi_col = f"{D.PLAIN_ACC}_lo", f"{D.PLAIN_ACC}_hi"
    span, line = (ax.axvspan, ax.axvline) if vertical else (ax.axhspan, ax.axhline)
    if lo_col in sub.columns and hi_col in sub.columns and sub[lo_col].notna().any():
        span(sub[lo_col].mean() * 100, sub[hi_col].mean() * 100, color=PLAIN_COLOR, alpha=0.12, lw=0, zorder=0)
    line(value, color=PLAIN_COLOR, ls="--", lw=1.6, zorder=5 if vertical else 1)  # over the bars, under lines
    return Line2D([], [], color=PLAIN_COLOR, ls="--", lw=1.6, label=f"plain prompt: {value:.0f}%, band = 95% CI")


def percent_axis(ax, label: str) -> None:
    ax.set_ylim(0, 105)
    ax.yaxis.set_major_formatter(PercentFormatter(100, decimals=0))
    ax.set_ylabel(label)


def wrap(name: str, width: int = 36) -> str:
    import textwrap

    if len(name) <= width:
        return name
    if name.startswith("ensemble(") and " + " in name:  # one member per line
        members = name[len("ensemble("):-1].split(" + ")
        return "ensemble of\n" + "\n".join("  " + m for m in members)
    return "\n".join(textwrap.wrap(name, width, break_on_hyphens=False)) or name
