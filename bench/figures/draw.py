"""Figures of a result store, as PNG and SVG (or PDF), each drawn only when the store has what it needs.

    dct figures --results results/depth                  # -> results/depth/figures/*.png, *.svg
    from bench.figures.draw import draw_figures
    done = draw_figures("results/depth", formats=("png",))
    done.drawn      # DrawnFigure: stem, title, caption, files, marks (e.g. which cells ran out of memory)
    done.skipped    # Skipped: figure name and why (a missing column, a single depth, ...)

The figures (FIGURES, in this order):
    memory-vs-depth         peak memory vs backprop depth, a line per checkpointing mode, failed cells as x "OOM"
    step-time-vs-depth      median seconds per optimisation step, bars = min-max of the timed steps
    accuracy-vs-depth       judge top-1 accuracy with its bootstrap 95% CI band; plain prompt dashed with its CI
    effort-vs-depth         optimiser steps per class, and images generated until the accuracy threshold
    pareto-memory-accuracy  every ok cell: peak memory vs judge accuracy (CI bars), the non-dominated front joined
    paired-contrasts        forest plot: each axis level minus its baseline level, paired hierarchical 95% CI
    classifier-comparison   judge accuracy per guiding classifier (bars with CIs), the judge fixed per panel
    transfer-matrix         accuracy of each guide's tokens under every evaluating classifier (heatmap, CI text)
    training-curves         loss and training accuracy per epoch, mean over classes, band = range over classes
    examples-<hash>         plain prompt vs learned token on the same seeds, per class, one grid per cell
    accuracy-vs-k           the augment experiment's figure (bench.figures.augment), when the store is one

Settings other than the plotted ones (precision, arch, batch, ...) that vary in the store become facets,
so two configurations are never averaged into one line; repeats (seeds) are averaged and shown as dots.
Figures are drawn with matplotlib's object API (no pyplot state), seaborn's colour-blind palette, and
markers that differ per line, so that they survive grey-scale printing.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import (FixedLocator, FuncFormatter, LogLocator, MaxNLocator, NullLocator,
                               PercentFormatter)

from bench import columns as C
from bench.figures import data as D

FORMATS = ("png", "svg", "pdf")
DEFAULT_FORMATS = ("png", "svg")
INDEX_FILE = "figures.json"
PALETTE = sns.color_palette("colorblind")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<")
HATCHES = ("", "//", "..", "xx", "\\\\", "++")  # bars of different hue differ in grey-scale too
FAIL_COLOR = "#333333"
PLAIN_COLOR = "#555555"
HIGHLIGHT = "black"  # front, diagonal, token rows: never one of the palette's line colours
CURVES_PER_PAGE = 8
EXAMPLE_SEEDS = 8
EXAMPLE_CLASSES = 10
_PANEL = (5.6, 4.0)  # inches per facet panel
FACET_COLS = 3
_RC = {
    **sns.axes_style("whitegrid"),
    **sns.plotting_context("notebook", font_scale=0.95),
    "svg.fonttype": "none",  # text stays text in SVG: searchable, smaller, selectable
    "svg.hashsalt": "dct",  # stable ids, so that an unchanged figure gives an unchanged file
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "axes.titlesize": 11,
    "figure.titlesize": 13,
    "legend.fontsize": 9,
    "legend.title_fontsize": 9,
}


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


@dataclass
class DrawnFigure:
    kind: str
    stem: str
    title: str
    caption: str
    files: dict[str, Path]
    marks: list[str] = field(default_factory=list)


@dataclass
class Skipped:
    kind: str
    reason: str


@dataclass
class FigureSet:
    store: Path
    out: Path
    drawn: list[DrawnFigure] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


@dataclass(frozen=True)
class DrawOptions:
    # Image grids for at most this many cells (None: all), spread over the accuracy range: a report with
    # a grid for every cell of a large grid would weigh hundreds of megabytes.
    example_cells: int | None = None


@dataclass(frozen=True)
class FigureKind:
    name: str
    needs: str  # what the store must hold, in words (shown by `dct figures --list`)
    draw: Callable[[D.StoreData, DrawOptions], list[Panel]]


# --- shared pieces ------------------------------------------------------------------------------------


def _need(cells: pd.DataFrame, *cols: str) -> None:
    missing = [c for c in cols if c not in cells.columns or cells[c].isna().all()]
    if missing:
        raise Skip(f"no {', '.join(missing)} column in the store" if len(missing) == 1
                   else f"no {', '.join(missing)} columns in the store")


def _depth_cells(data: D.StoreData, *need: str, predicted: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cells with a depth, the ok ones among them that have every `need` column). With `predicted` (a
    column of the planner's predictions), a store of predicted rows alone is drawn too."""
    _need(data.cells, D.DEPTH)
    cells = data.cells[data.cells[D.DEPTH_X].notna()]
    has_predictions = predicted is not None and predicted in cells.columns and cells[predicted].notna().any()
    if not has_predictions:
        _need(cells, *need)
    present = [c for c in need if c in cells.columns]
    ok = cells[(cells[C.STATUS] == C.STATUS_OK) & cells[present].notna().all(axis=1)] if len(present) == len(need) \
        else cells.iloc[0:0]
    if ok.empty and not has_predictions:
        raise Skip(f"no ok cell has {', '.join(need)}")
    depths = sorted(cells[D.DEPTH_X].unique())
    if len(depths) < 2:
        raise Skip(f"only one depth in the store ({cells[D.DEPTH_TEXT].iloc[0]}): nothing to plot against depth")
    return cells, ok


def _hue(cells: pd.DataFrame) -> tuple[str | None, list[str]]:
    if D.CHECKPOINTING in cells.columns and cells[D.CHECKPOINTING].notna().any():
        return D.CHECKPOINTING, D.checkpointing_order(cells[D.CHECKPOINTING].dropna().astype(str))
    return None, [""]


def _hue_values(frame: pd.DataFrame, hue_col: str | None) -> pd.Series:
    if hue_col is None:
        return pd.Series([""] * len(frame), index=frame.index)
    return frame[hue_col].astype(str)


def _style(i: int) -> dict:
    return dict(color=PALETTE[i % len(PALETTE)], marker=MARKERS[i % len(MARKERS)])


def _bottom_facets(keys: list[str], max_cols: int = FACET_COLS) -> set[str]:
    """Facets with no panel below them: the ones that carry the x-axis label."""
    ncols = min(max(1, len(keys)), max_cols)
    return {k for i, k in enumerate(keys) if i + ncols >= len(keys)}


def _facet_layout(keys: list[str], rows_per_facet: int = 1, max_cols: int = FACET_COLS, panel=_PANEL):
    """A figure with one column (or block of rows) per facet key; returns (figure, {key: [axes...]}).
    All panels of one quantity share their y axis, so that facets compare at a glance."""
    n = max(1, len(keys))
    ncols = min(n, max_cols)
    nblocks = math.ceil(n / ncols)
    fig = Figure(figsize=(panel[0] * ncols, panel[1] * rows_per_facet * nblocks + 0.9), layout="constrained")
    grid = fig.subplots(nblocks * rows_per_facet, ncols, squeeze=False)
    out = {}
    for i, key in enumerate(keys or [""]):
        block, col = divmod(i, ncols)
        out[key] = [grid[block * rows_per_facet + r][col] for r in range(rows_per_facet)]
    first = out[(keys or [""])[0]]
    for i, key in enumerate(keys[1:], 1):  # one y scale per measured quantity, across all facets
        for r, ax in enumerate(out[key]):
            ax.sharey(first[r])
            if i % ncols:
                ax.tick_params(labelleft=False)
    for i in range(n, nblocks * ncols):
        block, col = divmod(i, ncols)
        for r in range(rows_per_facet):
            grid[block * rows_per_facet + r][col].set_visible(False)
    return fig, out


def _depth_label(log: bool) -> str:
    return "backprop depth (final UNet calls with gradient" + (", log scale)" if log else ")")


def _depth_axis(ax, cells: pd.DataFrame) -> bool:
    """Ticks at the depths that were run, labelled as written ('full (20)'); log2 when they span 8x or more."""
    ticks = cells.drop_duplicates(D.DEPTH_X).sort_values(D.DEPTH_X)
    xs = list(ticks[D.DEPTH_X])
    log = min(xs) > 0 and max(xs) / min(xs) >= 8
    if log:
        ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(xs))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels(list(ticks[D.DEPTH_TEXT]))
    lo, hi = min(xs), max(xs)
    if log:
        ax.set_xlim(lo / 1.4, hi * 1.4)
    else:
        pad = max((hi - lo) * 0.08, 0.5)
        ax.set_xlim(lo - pad, hi + pad)
    return log


def _dodge(x: float, i: int, k: int, log: bool, span: float) -> float:
    # Lines with equal values (accuracy does not depend on checkpointing) would hide each other.
    if k <= 1:
        return x
    off = i - (k - 1) / 2
    return x * 2 ** (0.07 * off) if log else x + 0.015 * span * off


def _mark_failed(ax, failed: pd.DataFrame, hue_col, hues, marks: list[str], facet: str, on_line: pd.Series) -> bool:
    """An x at the top of the axis for each cell that did not finish, labelled with its status (OOM)."""
    if failed.empty:
        return False
    stack: dict[float, int] = {}
    for _, row in failed.sort_values(D.DEPTH_X).iterrows():
        hue = str(row[hue_col]) if hue_col else ""
        i = hues.index(hue) if hue in hues else len(hues)
        level = stack.get(row[D.DEPTH_X], 0)
        stack[row[D.DEPTH_X]] = level + 1
        y = 0.94 - 0.075 * level
        color = PALETTE[i % len(PALETTE)] if hue_col else FAIL_COLOR
        text = D.failed_status_text(row[C.STATUS])
        if not on_line.get(row.name, True):  # an [[include]] cell: say which
            text += f" ({D.short_label(row[C.LABEL])})"
        ax.plot([row[D.DEPTH_X]], [y], transform=ax.get_xaxis_transform(), marker="x", ms=10, mew=2.5,
                color=color, ls="", clip_on=False, zorder=5)
        ax.annotate(text, (row[D.DEPTH_X], y), xycoords=ax.get_xaxis_transform(), xytext=(7, 0),
                    textcoords="offset points", va="center", ha="left", fontsize=9, fontweight="bold", color=color)
        where = ", ".join(p for p in (facet, f"{D.setting_name(hue_col)}={hue}" if hue_col else "") if p)
        marks.append(f"{text} at depth {row[D.DEPTH_TEXT]}" + (f" ({where})" if where else ""))
    return True


def _fail_handle() -> Line2D:
    return Line2D([], [], marker="x", ls="", ms=9, mew=2.5, color=FAIL_COLOR,
                  label="did not finish (status written next to it)")


def _legend(fig: Figure, hue_col, hues, extra=()) -> None:
    """One legend for the whole figure, below the panels: the lines (a style per checkpointing mode) and
    the other marks (CI band, plain-prompt baseline, failed cells)."""
    handles = []
    if hue_col:
        handles = [Line2D([], [], lw=2, ms=7, **_style(i), label=h) for i, h in enumerate(hues)]
    handles += list(extra)
    if handles:
        fig.legend(handles=handles, title=D.setting_name(hue_col) if hue_col else None, loc="outside lower center",
                   ncols=min(len(handles), 4), frameon=False)


def _num(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _range_text(values) -> str:
    values = sorted({int(v) for v in values if v is not None and not pd.isna(v)})
    if not values:
        return "?"
    return str(values[0]) if len(values) == 1 else f"{values[0]}–{values[-1]}"


def _plain_baseline(ax, sub: pd.DataFrame, scale: float = 100.0) -> Line2D | None:
    """The plain prompt's accuracy (same seeds, same judge) as a dashed line with its CI as a band."""
    if D.PLAIN_ACC not in sub.columns or sub[D.PLAIN_ACC].isna().all():
        return None
    y = sub[D.PLAIN_ACC].mean() * scale
    lo_col, hi_col = f"{D.PLAIN_ACC}_lo", f"{D.PLAIN_ACC}_hi"
    if lo_col in sub.columns and hi_col in sub.columns and sub[lo_col].notna().any():
        ax.axhspan(sub[lo_col].mean() * scale, sub[hi_col].mean() * scale, color=PLAIN_COLOR, alpha=0.12, lw=0,
                   zorder=0)
    ax.axhline(y, color=PLAIN_COLOR, ls="--", lw=1.6, zorder=1)
    return Line2D([], [], color=PLAIN_COLOR, ls="--", lw=1.6, label=f"plain prompt: {y:.0f}%, band = 95% CI")


def _plain_baseline_x(ax, sub: pd.DataFrame) -> Line2D | None:
    """_plain_baseline for horizontal bars: a vertical dashed line and band."""
    if D.PLAIN_ACC not in sub.columns or sub[D.PLAIN_ACC].isna().all():
        return None
    x = sub[D.PLAIN_ACC].mean() * 100
    lo_col, hi_col = f"{D.PLAIN_ACC}_lo", f"{D.PLAIN_ACC}_hi"
    if lo_col in sub.columns and sub[lo_col].notna().any():
        ax.axvspan(sub[lo_col].mean() * 100, sub[hi_col].mean() * 100, color=PLAIN_COLOR, alpha=0.12, lw=0, zorder=0)
    ax.axvline(x, color=PLAIN_COLOR, ls="--", lw=1.6, zorder=5)
    return Line2D([], [], color=PLAIN_COLOR, ls="--", lw=1.6, label=f"plain prompt: {x:.0f}%, band = 95% CI")


def _percent_axis(ax, label: str) -> None:
    ax.set_ylim(0, 105)
    ax.yaxis.set_major_formatter(PercentFormatter(100, decimals=0))
    ax.set_ylabel(label)


def _on_lines(cells: pd.DataFrame) -> pd.Series:
    """Cells of the spec's [axes] product: they form the lines. [[include]] cells (a reference setting, a
    one-off) differ in settings the lines hold fixed, so they are drawn as single labelled stars."""
    if C.ORIGIN in cells.columns:
        include = cells[C.ORIGIN].astype(str) == "include"
        if (~include).any():
            return ~include
    return pd.Series(True, index=cells.index)


def _depth_facets(cells: pd.DataFrame) -> tuple[list[str], pd.Series, pd.Series]:
    """(facet names in the spec's order, the facet of each cell, which cells are on lines). Facets are the
    settings other than depth and checkpointing that vary among the line cells (precision, arch, batch...)."""
    on_line = _on_lines(cells)
    facet_cols = D.varying_settings(cells[on_line], exclude=(D.DEPTH, D.CHECKPOINTING))
    key = D.group_key(cells, facet_cols)
    return list(dict.fromkeys(list(key[on_line]) + list(key[~on_line]))), key, on_line


def _include_points(ax, inc: pd.DataFrame, spec: dict, hue_col, hues) -> bool:
    ys = spec["y"](inc)
    err = spec["err"](inc) if "err" in spec else None
    drawn = False
    for n, (idx, row) in enumerate(inc.sort_values(D.DEPTH_X).iterrows()):
        y = ys.loc[idx]
        if pd.isna(y):
            continue
        hue = str(row[hue_col]) if hue_col else ""
        color = PALETTE[hues.index(hue) % len(PALETTE)] if hue_col and hue in hues else FAIL_COLOR
        if err is not None and pd.notna(err[0].loc[idx]):
            ax.errorbar([row[D.DEPTH_X]], [y], yerr=[[y - err[0].loc[idx]], [err[1].loc[idx] - y]], color=color,
                        capsize=4, lw=1.3, zorder=4, ls="")
        ax.plot([row[D.DEPTH_X]], [y], ls="", marker="*", ms=15, color=color, mec="black", mew=0.8, zorder=5)
        # x and colour already say depth and checkpointing; the label says the rest
        text = D.short_label(row[C.LABEL], drop=(D.DEPTH, D.CHECKPOINTING))
        if text:
            ax.annotate(text, (row[D.DEPTH_X], y), xytext=(8, 7 if n % 2 == 0 else -9), textcoords="offset points",
                        fontsize=8, color="#333333", va="bottom" if n % 2 == 0 else "top")
        drawn = True
    return drawn


def _depth_figure(data: D.StoreData, *, need: tuple[str, ...], title: str, rows: list[dict], dodge: bool,
                  mark_failed: bool, panel=_PANEL) -> tuple[Figure, list[str], pd.DataFrame]:
    """The shared frame of the *-vs-depth figures: facets x rows of axes, one line per checkpointing mode.
    Each row dict: y(frame) -> Series, optional err(frame) -> (lo, hi) Series, band (bool), ylabel,
    setup(ax, ok cells of the panel) -> extra legend handles or None, predicted (a column of predictions,
    drawn dashed with hollow markers for every cell that has one, run or not) and predicted_y(frame)."""
    predicted = next((r["predicted"] for r in rows if r.get("predicted")), None)
    cells, ok = _depth_cells(data, *need, predicted=predicted)
    hue_col, hues = _hue(cells)
    keys, key, on_line = _depth_facets(cells)
    fig, axes_of = _facet_layout(keys, rows_per_facet=len(rows), panel=panel)
    marks: list[str] = []
    extra: dict[str, object] = {}  # legend entries besides the lines, one of each across panels
    span = cells[D.DEPTH_X].max() - cells[D.DEPTH_X].min()
    bottom = _bottom_facets(keys)
    for facet in keys:
        in_facet = key == facet
        sub_all = cells[in_facet]
        sub_ok = ok[in_facet[ok.index]]
        lines_ok = sub_ok[on_line[sub_ok.index]]
        for r, spec in enumerate(rows):
            ax = axes_of[facet][r]
            log = _depth_axis(ax, cells)
            present = [h for h in hues if (_hue_values(lines_ok, hue_col) == h).any()]
            for i, hue in enumerate(hues):
                line = lines_ok[_hue_values(lines_ok, hue_col) == hue]
                if line.empty:
                    continue
                ys = spec["y"](line)
                keep = ys.notna()
                line, ys = line[keep], ys[keep]
                if line.empty:
                    continue
                j = present.index(hue)
                xs = line[D.DEPTH_X].map(lambda x: _dodge(x, j, len(present), log, span) if dodge else x)
                means = ys.groupby(xs).mean().sort_index()
                style = _style(i)
                ax.plot(means.index, means.values, lw=2, ms=7, zorder=3, **style)
                if (xs.value_counts() > 1).any():  # repeats: every run as a dot
                    ax.plot(xs, ys, ls="", marker=style["marker"], color=style["color"], alpha=0.35, ms=4)
                if "err" in spec:
                    lo, hi = spec["err"](line)
                    lo, hi = lo.groupby(xs).mean().sort_index(), hi.groupby(xs).mean().sort_index()
                    if spec.get("band"):
                        ax.fill_between(means.index, lo.values, hi.values, color=style["color"], alpha=0.15, lw=0)
                    else:
                        yerr = [means.values - lo.values, hi.values - means.values]
                        ax.errorbar(means.index, means.values, yerr=yerr, ls="", color=style["color"], capsize=4,
                                    lw=1.3, zorder=2)
            if spec.get("predicted") and _predicted_lines(ax, sub_all[on_line[sub_all.index]], spec, hue_col, hues):
                extra.setdefault("predicted", Line2D([], [], color="grey", ls="--", marker="o", mfc="none",
                                                     label="predicted (dct bench plan)"))
            if _include_points(ax, sub_ok[~on_line[sub_ok.index]], spec, hue_col, hues):
                extra.setdefault("include", Line2D([], [], ls="", marker="*", ms=13, color="grey", mec="black",
                                                   mew=0.8, label="single cell of the spec's [[include]], labelled"))
            for handle in (spec["setup"](ax, sub_ok) or []) if "setup" in spec else []:
                extra.setdefault(handle.get_label(), handle)
            if mark_failed and r == 0:
                failed = sub_all[sub_all[C.STATUS] != C.STATUS_OK]
                if _mark_failed(ax, failed, hue_col, hues, marks, facet, on_line):
                    extra.setdefault("failed", _fail_handle())
            ax.set_ylabel(spec["ylabel"] if ax.get_subplotspec().is_first_col() else "")
            ax.set_xlabel(_depth_label(log) if r == len(rows) - 1 and facet in bottom else "")
            ax.set_title((facet or None) if r == 0 else None, loc="left")
    _legend(fig, hue_col, hues, extra.values())
    fig.suptitle(title)
    return fig, marks, ok


def _predicted_lines(ax, cells: pd.DataFrame, spec: dict, hue_col, hues) -> bool:
    """The planner's predictions, one dashed line of hollow markers per checkpointing mode, for every
    cell that has one (run, predicted-oom or not yet run): measured lines are drawn over them."""
    if spec["predicted"] not in cells.columns:
        return False
    drawn = False
    for i, hue in enumerate(hues):
        line = cells[(_hue_values(cells, hue_col) == hue) & cells[spec["predicted"]].notna()]
        if line.empty:
            continue
        ys = spec["predicted_y"](line).groupby(line[D.DEPTH_X]).mean().sort_index()
        style = _style(i)
        ax.plot(ys.index, ys.values, ls="--", lw=1.3, ms=8, mfc="none", mew=1.4, zorder=2, **style)
        drawn = True
    return drawn


def _ylim_room_for_marks(ax, top: float, bottom: float = 0.0, log: bool = False) -> None:
    # Failure marks sit in the top fifth of the axis; data stays below them.
    if log:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_locator(NullLocator())
        lb, lt = math.log10(bottom), math.log10(max(top, bottom * 1.01))
        ax.set_ylim(bottom, 10 ** (lb + (lt - lb) / 0.78))
        return
    if top <= bottom:
        top = bottom + 1
    ax.set_ylim(bottom, bottom + (top - bottom) / 0.78)


# --- the figures -----------------------------------------------------------------------------------


def memory_vs_depth(data: D.StoreData, opts: DrawOptions) -> list[Panel]:
    cells, ok = _depth_cells(data, C.COST_PEAK_BYTES, predicted=C.PLAN_PEAK_BYTES)
    kind = D.memory_kind(cells)
    capacity = D.device_memory_bytes(cells)
    # a CPU grid's predictions are saved bytes, not its RSS: only a GPU grid draws them on this axis
    planned = cells[C.PLAN_PEAK_BYTES] if C.PLAN_PEAK_BYTES in cells.columns and (kind == "CUDA allocated" or ok.empty) \
        else pd.Series(dtype=float)
    values = pd.concat([ok[C.COST_PEAK_BYTES] if C.COST_PEAK_BYTES in ok.columns else pd.Series(dtype=float),
                        planned]).dropna()
    high, low = max(values.max(), capacity or 0), values.min()
    # A fixed base (the CPU process with torch loaded, or the weights) can dwarf what depth adds; then the
    # axis starts near the smallest peak, and says so, instead of drawing flat lines from zero.
    zoom = capacity is None and high > 0 and (high - low) / high < 0.2
    scale, unit = D.memory_unit(high - low if zoom else high)
    top, low = high / scale, low / scale
    bottom = max(0.0, low - (top - low) * 0.15 - top * 0.005) if zoom else 0.0

    def setup(ax, sub):
        _ylim_room_for_marks(ax, top, bottom)
        if capacity:
            ax.axhline(capacity / scale, color=PLAIN_COLOR, ls=":", lw=1.8, zorder=1)
            return [Line2D([], [], color=PLAIN_COLOR, ls=":", lw=1.8,
                           label=f"device memory ({capacity / scale:.0f} {unit})")]
        return None

    ylabel = f"peak memory ({unit}{', ' + kind if kind else ''})" + ("\naxis not from 0" if zoom else "")
    rows = [dict(y=lambda f: f[C.COST_PEAK_BYTES] / scale, ylabel=ylabel, setup=setup,
                 predicted=C.PLAN_PEAK_BYTES if not planned.empty else None,
                 predicted_y=lambda f: f[C.PLAN_PEAK_BYTES] / scale)]
    fig, marks, ok = _depth_figure(data, need=(C.COST_PEAK_BYTES,), rows=rows, dodge=True, mark_failed=True,
                                   title="Peak memory vs backprop depth, per checkpointing mode")
    caption = (f"Peak memory ({kind or 'as measured'}) of the probe steps (the first training steps of one "
               f"class, the same work in every cell; else of the whole cell process), {len(ok)} finished cell(s); "
               "one line per checkpointing mode; x at the top: cells that did not finish "
               "(OOM = out of memory), at the depth they were asked for."
               + (f" The y axis starts at {_num(bottom)} {unit}, not 0: the peaks differ by less than a fifth."
                  if zoom else ""))
    return [Panel("memory-vs-depth", fig, "Peak memory vs depth", caption, marks)]


def step_time_vs_depth(data: D.StoreData, opts: DrawOptions) -> list[Panel]:
    cells, ok = _depth_cells(data, C.STEP_TIME_MEDIAN_S)
    spread = {i: D.timed_steps(r) for i, r in ok.iterrows()}
    ms = ok[C.STEP_TIME_MEDIAN_S].max() < 1.0
    scale, unit = (1000.0, "ms") if ms else (1.0, "s")
    top = max([ok[C.STEP_TIME_MEDIAN_S].max()] + [max(t) for t in spread.values() if t]) * scale
    low = min([ok[C.STEP_TIME_MEDIAN_S].min()] + [min(t) for t in spread.values() if t]) * scale
    have_spread = any(len(t) > 1 for t in spread.values())
    # Step times of a grid span batch sizes and architectures: beyond 10x, a log axis keeps the fast
    # cells' lines readable next to the slow ones on the shared scale.
    log = low > 0 and top / low > 10

    def err(f):
        lo = pd.Series([min(spread[i]) * scale if spread.get(i) else np.nan for i in f.index], index=f.index)
        hi = pd.Series([max(spread[i]) * scale if spread.get(i) else np.nan for i in f.index], index=f.index)
        med = f[C.STEP_TIME_MEDIAN_S] * scale
        return lo.fillna(med), hi.fillna(med)

    def setup(ax, sub):
        _ylim_room_for_marks(ax, top, low / 1.3 if log else 0.0, log=log)
        if have_spread:
            return [Line2D([], [], color="grey", marker="_", ms=10, lw=1.3,
                           label="bar: fastest to slowest timed step")]
        return None

    row = dict(y=lambda f: f[C.STEP_TIME_MEDIAN_S] * scale, setup=setup,
               ylabel=f"time per optimisation step\n({unit}, median" + (", log scale)" if log else ")"))
    if have_spread:
        row["err"] = err
    fig, marks, ok = _depth_figure(data, need=(C.STEP_TIME_MEDIAN_S,), rows=[row], dodge=True, mark_failed=True,
                                   title="Time per optimisation step vs backprop depth, per checkpointing mode")
    n = _range_text(len(t) for t in spread.values())
    caption = (f"Median wall time of one optimisation step over the timed steps after warm-up (n = {n} per cell)"
               + ("; bars span the fastest to the slowest step" if have_spread else "")
               + "; x at the top: cells that did not finish.")
    return [Panel("step-time-vs-depth", fig, "Time per step vs depth", caption, marks)]


def accuracy_vs_depth(data: D.StoreData, opts: DrawOptions) -> list[Panel]:
    # metric_judge marks an accuracy measured by a judge on generated images (other cells' acc is not)
    cells, ok = _depth_cells(data, D.ACC, D.METRIC_JUDGE)
    lo_col, hi_col = f"{D.ACC}_lo", f"{D.ACC}_hi"
    has_ci = lo_col in ok.columns and ok[lo_col].notna().any()

    hue_col, _ = _hue(cells)
    _, key, on_line = _depth_facets(cells)
    lines = ok[on_line[ok.index]]
    # A CI band per line reads well alone; overlapping bands of several lines turn to mud, so then every
    # panel gets (sideways-shifted) error bars instead.
    band = hue_col is None or lines.empty or lines.groupby(key[lines.index])[hue_col].nunique().max() <= 1

    def setup(ax, sub):
        _percent_axis(ax, "judge top-1 accuracy (%)")
        base = _plain_baseline(ax, sub)
        ci = (Patch(color="grey", alpha=0.25, label="learned token: band = 95% CI") if band else
              Line2D([], [], color="grey", marker="|", ms=10, lw=1.3, label="learned token: bar = 95% CI"))
        return [ci] + ([base] if base else [])

    row = dict(y=lambda f: f[D.ACC] * 100, ylabel="judge top-1 accuracy (%)", setup=setup, band=band)
    if has_ci:
        row["err"] = lambda f: (f[lo_col] * 100, f[hi_col] * 100)
    judge = D.judge_name(ok)
    fig, marks, ok = _depth_figure(data, need=(D.ACC,), rows=[row], dodge=True, mark_failed=False,
                                   title="Judge accuracy of images from the learned token vs backprop depth"
                                   + (f"\njudge: {judge}" if judge else ""))
    n = _range_text(D.n_eval_images(r) for _, r in ok.iterrows())
    caption = (f"Top-1 accuracy of an independent judge on images generated with the learned token, n = {n} images "
               "per cell (classes x unseen seeds); band or bars: bootstrap 95% CI; dashed: the plain class prompt "
               "on the same seeds, grey band its CI. Lines of equal value are shifted sideways a little to stay "
               "visible.")
    return [Panel("accuracy-vs-depth", fig, "Judge accuracy vs depth", caption, marks)]


def effort_vs_depth(data: D.StoreData, opts: DrawOptions) -> list[Panel]:
    wanted = (D.EPOCHS_MEAN, D.IMAGES_TO_THRESHOLD, D.THRESHOLD_REACHED)
    _need(data.cells, D.DEPTH)
    have = [c for c in wanted if c in data.cells.columns and data.cells[c].notna().any()]
    if not have:
        raise Skip(f"none of the columns {', '.join(wanted)} in the store")
    cells, ok = _depth_cells(data, have[0])

    def column(col):
        return lambda f: f[col] if col in f.columns else pd.Series(np.nan, index=f.index)

    def from_zero(col):
        def setup(ax, sub):
            top = sub[col].max() if col in sub.columns else np.nan
            ax.set_ylim(0, top * 1.15 if top > 0 else 1)
            if pd.isna(top):
                ax.text(0.5, 0.5, "no class reached the accuracy threshold", transform=ax.transAxes,
                        ha="center", va="center", color=PLAIN_COLOR)
        return setup

    rows = []
    if D.EPOCHS_MEAN in have:
        rows.append(dict(y=column(D.EPOCHS_MEAN), ylabel="optimiser steps\nper class (mean)",
                         setup=from_zero(D.EPOCHS_MEAN)))
    if D.IMAGES_TO_THRESHOLD in data.cells.columns:
        rows.append(dict(y=column(D.IMAGES_TO_THRESHOLD), ylabel="images generated\nuntil threshold (mean)",
                         setup=from_zero(D.IMAGES_TO_THRESHOLD)))
    if D.THRESHOLD_REACHED in have:
        rows.append(dict(y=lambda f: f[D.THRESHOLD_REACHED] * 100, ylabel="classes that reached\nthreshold (%)",
                         setup=lambda ax, sub: _percent_axis(ax, "")))
    fig, marks, ok = _depth_figure(data, need=(have[0],), rows=rows, dodge=True, mark_failed=False,
                                   title="Training effort vs backprop depth", panel=(_PANEL[0], 2.8))
    stop = C.config_col("stop_accuracy")
    threshold = (f" (training accuracy above {_range_text(ok[stop] * 100)}%)" if stop in ok.columns
                 and ok[stop].notna().any() else "")
    n = _range_text(ok[D.N_CLASSES]) if D.N_CLASSES in ok.columns else "?"
    caption = ("Per cell, over its classes (n = " + n + " per cell): optimiser steps (epochs) until a stopping rule "
               "fired (threshold, patience or the epoch limit); images generated until the threshold" + threshold +
               " was passed, mean over the classes that passed it; and the share of classes that passed it.")
    return [Panel("effort-vs-depth", fig, "Training effort vs depth", caption, marks)]


def pareto_memory_accuracy(data: D.StoreData, opts: DrawOptions) -> list[Panel]:
    _need(data.cells, C.COST_PEAK_BYTES, D.ACC, D.METRIC_JUDGE)
    ok = data.ok[data.ok[[C.COST_PEAK_BYTES, D.ACC, D.METRIC_JUDGE]].notna().all(axis=1)]
    if len(ok) < 2:
        raise Skip(f"needs at least two ok cells with {C.COST_PEAK_BYTES} and a judge's {D.ACC}; found {len(ok)}")
    scale, unit = D.memory_unit(ok[C.COST_PEAK_BYTES].max())
    x = (ok[C.COST_PEAK_BYTES] / scale).to_numpy()
    y = (ok[D.ACC] * 100).to_numpy()
    lo_col, hi_col = f"{D.ACC}_lo", f"{D.ACC}_hi"
    has_ci = lo_col in ok.columns and ok[lo_col].notna().all()
    yerr = np.vstack([y - ok[lo_col].to_numpy() * 100, ok[hi_col].to_numpy() * 100 - y]) if has_ci else None
    front = np.array(D.pareto_front(x, y))
    label_cols = D.varying_settings(ok)
    labels = [D.compact_settings(r, label_cols) if label_cols else str(r[C.LABEL]) for _, r in ok.iterrows()]
    hue_col, hues = _hue(ok)
    hue_of = _hue_values(ok, hue_col).to_numpy()

    fig = Figure(figsize=(12, 6.4), layout="constrained")
    ax, side = fig.subplots(1, 2, width_ratios=[2.6, 1])
    for i, hue in enumerate(hues):  # every cell, coloured by checkpointing mode
        m = hue_of == hue
        if m.any():
            ax.errorbar(x[m], y[m], yerr=None if yerr is None else yerr[:, m], ls="", ms=7, capsize=2, lw=0.8,
                        alpha=0.75, zorder=2, label=f"{D.setting_name(hue_col)}={hue}" if hue_col else "cell",
                        **_style(i))
    order = np.flatnonzero(front)[np.argsort(x[front])]
    ax.step(x[order], y[order], where="post", color=HIGHLIGHT, lw=2, zorder=1, label="Pareto front")
    ax.plot(x[order], y[order], ls="", marker="o", ms=17, mfc="none", mec=HIGHLIGHT, mew=2, zorder=4)
    # The front is numbered on the plot and named in the side panel: labels of many cells would overlap.
    lines = []
    for k, i in enumerate(order, 1):
        ax.annotate(str(k), (x[i], y[i]), xytext=(-11, 9), textcoords="offset points", ha="right", va="bottom",
                    fontsize=10, fontweight="bold", color=HIGHLIGHT)
        ci = f" [{ok[lo_col].iloc[i] * 100:.0f}, {ok[hi_col].iloc[i] * 100:.0f}]" if has_ci else ""
        lines.append(f"{k}. {labels[i]}\n    {x[i]:.3g} {unit}, {y[i]:.0f}%{ci}")
    side.axis("off")
    side.set_title("Pareto front, by memory", loc="left")
    side.text(0, 1, "\n".join(lines), va="top", ha="left", fontsize=9, family="monospace", transform=side.transAxes)
    kind = D.memory_kind(ok)
    ax.set_xlabel(f"peak memory ({unit}{', ' + kind if kind else ''})")
    _percent_axis(ax, "judge top-1 accuracy (%)")
    ax.set_xlim(0, x.max() * 1.08)
    ax.legend(loc="lower right", frameon=True)
    judge = D.judge_name(ok)
    fig.suptitle("Memory vs quality: every finished cell of the store" + (f"\njudge: {judge}" if judge else ""))
    n = _range_text(D.n_eval_images(r) for _, r in ok.iterrows())
    caption = (f"{len(ok)} finished cell(s); x: peak memory, y: judge top-1 accuracy with bootstrap 95% CI bars "
               f"(n = {n} images per cell). Ringed and joined: the Pareto front (no other cell has less memory and "
               "more accuracy), numbered by memory and listed on the right.")
    marks = [f"front: {labels[i]}" for i in order]
    return [Panel("pareto-memory-accuracy", fig, "Memory-quality Pareto front", caption, marks)]


def paired_contrasts(data: D.StoreData, opts: DrawOptions) -> list[Panel]:
    """A forest plot of bench.contrasts: each level of each axis minus the baseline level, paired."""
    from bench import contrasts as K

    frame = K.contrasts(data.cells)
    if frame.empty:
        raise Skip("needs two or more ok cells with stored outcomes that differ in one axis (bench.contrasts)")
    frame = frame.iloc[::-1].reset_index(drop=True)  # first contrast at the top
    names = [f"{r['axis']} {r['level']} \u2212 {r['baseline']}" + (f"\n({r['others']})" if r["others"] else "")
             for _, r in frame.iterrows()]
    fig = Figure(figsize=(9, 1.6 + 0.75 * len(frame)), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(frame))
    diff, lo, hi = (frame[k].to_numpy(dtype=float) * 100 for k in ("diff", "lo", "hi"))
    colours = [HIGHLIGHT if l > 0 or h < 0 else "0.35" for l, h in zip(lo, hi)]
    for i in range(len(frame)):
        ax.errorbar(diff[i], y[i], xerr=[[diff[i] - lo[i]], [hi[i] - diff[i]]], fmt="o", ms=8, capsize=4,
                    color=colours[i], lw=1.6)
        ax.annotate(f"{diff[i]:+.1f} [{lo[i]:+.1f}, {hi[i]:+.1f}]", (hi[i], y[i]), xytext=(8, 0),
                    textcoords="offset points", va="center", fontsize=9)
    ax.axvline(0, color="0.5", lw=1, ls="--")
    ax.set_yticks(y, names)
    span = max(abs(lo).max(), abs(hi).max(), 1.0)
    ax.set_xlim(-span * 1.15, span * 1.6)
    ax.set_xlabel("difference in judge top-1 accuracy (points), level minus baseline")
    fig.suptitle("Paired contrasts against the baseline level")
    caption = K.caption(frame.iloc[::-1]) + (" Filled in the highlight colour: the interval excludes 0. ")
    marks = [f"{n.replace(chr(10), ' ')}: {d:+.1f} [{a:+.1f}, {b:+.1f}]" for n, d, a, b in zip(names, diff, lo, hi)]
    return [Panel("paired-contrasts", fig, "Paired contrasts", caption, marks[::-1])]


def _wrap(name: str, width: int = 36) -> str:
    import textwrap

    if len(name) <= width:
        return name
    if name.startswith("ensemble(") and " + " in name:  # one member per line
        members = name[len("ensemble("):-1].split(" + ")
        return "ensemble of\n" + "\n".join("  " + m for m in members)
    return "\n".join(textwrap.wrap(name, width, break_on_hyphens=False)) or name


def _hbars(ax, frame: pd.DataFrame, group_col: str, hue_keys: pd.Series) -> None:
    """Horizontal bars of judge accuracy per group (best on top), one bar per hue within a group, CI
    whiskers, every run as a dot when a bar averages repeats, and the sample count at the end of each bar."""
    group = frame[group_col].map(D._hashable)
    groups = list(frame.assign(_g=group).groupby("_g", sort=False)[D.ACC].mean().sort_values(ascending=False).index)
    hues = list(dict.fromkeys(hue_keys))
    height = 0.8 / max(1, len(hues))
    lo_col, hi_col = f"{D.ACC}_lo", f"{D.ACC}_hi"
    labelled: set[str] = set()
    for h, hue in enumerate(hues):
        style = _style(h)
        for g, name in enumerate(groups):
            sub = frame[(group == name) & (hue_keys == hue)]
            if sub.empty:
                continue
            ypos = g - 0.4 + height * (h + 0.5)
            mean = sub[D.ACC].mean() * 100
            ax.barh(ypos, mean, height=height * 0.9, color=style["color"], edgecolor="black", lw=0.6,
                    hatch=HATCHES[h % len(HATCHES)], label=hue if hue and hue not in labelled else None)
            labelled.add(hue)
            end = mean
            if lo_col in sub.columns and sub[lo_col].notna().any():
                lo, hi = sub[lo_col].mean() * 100, sub[hi_col].mean() * 100
                ax.errorbar(mean, ypos, xerr=[[mean - lo], [hi - mean]], color="black", capsize=4, lw=1.3)
                end = hi
            if len(sub) > 1:
                ax.plot(sub[D.ACC] * 100, [ypos] * len(sub), ls="", marker="o", ms=5, mfc="white", mec="black",
                        zorder=4)
            n = _range_text(D.n_eval_images(r) for _, r in sub.iterrows())
            runs = f" x {len(sub)} runs" if len(sub) > 1 else ""
            ax.annotate(f"{mean:.0f}%  (n={n}{runs})", (end, ypos), xytext=(5, 0), textcoords="offset points",
                        va="center", fontsize=8.5)
    names = {D._hashable(v): D.short_spec(v) for v in frame[group_col]}
    ax.set_yticks(range(len(groups)))
    ax.set_yticklabels([_wrap(names.get(g, g)) for g in groups])
    ax.set_ylim(len(groups) - 0.5, -0.5)


def classifier_comparison(data: D.StoreData, opts: DrawOptions) -> list[Panel]:
    _need(data.cells, D.CLASSIFIER, D.ACC, D.METRIC_JUDGE)
    ok = data.ok[data.ok[[D.ACC, D.METRIC_JUDGE]].notna().all(axis=1)]
    classifiers = ok[D.CLASSIFIER].map(D._hashable).unique()
    if len(classifiers) < 2:
        only = D.short_spec(ok[D.CLASSIFIER].iloc[0]) if len(ok) else "none"
        raise Skip(f"only one guiding classifier among the ok cells ({only})")
    judges = list(dict.fromkeys(ok[D.METRIC_JUDGE].map(D._hashable)))
    hue_cols = D.varying_settings(ok, exclude=(D.CLASSIFIER, D.JUDGE, D.EVAL_CLASSIFIERS))
    n_bars = len(classifiers) * max(1, D.group_key(ok, hue_cols).nunique())
    fig = Figure(figsize=(11, (0.45 * n_bars + 1.2) * len(judges) + 1.2), layout="constrained")
    axes = fig.subplots(len(judges), 1, squeeze=False)[:, 0]
    for ax, judge in zip(axes, judges):
        sub = ok[ok[D.METRIC_JUDGE].map(D._hashable) == judge]
        _hbars(ax, sub, D.CLASSIFIER, D.group_key(sub, hue_cols))
        base = _plain_baseline_x(ax, sub)
        ax.set_xlim(0, 118)  # room for the labels at the end of the bars
        ax.set_xticks(range(0, 101, 20))
        ax.xaxis.set_major_formatter(PercentFormatter(100, decimals=0))
        ax.set_xlabel("judge top-1 accuracy (%)")
        ax.set_ylabel("classifier that guided training")
        ax.set_title(f"judge: {D.short_spec(judge)}", loc="left")
        handles, _ = ax.get_legend_handles_labels()
        ax.legend(handles=handles + ([base] if base else []), loc="lower right",
                  frameon=True, title=", ".join(D.setting_name(c) for c in hue_cols) or None, fontsize=8.5)
    fig.suptitle("Which classifier should guide the token? Judge accuracy per guiding classifier")
    caption = ("Judge top-1 accuracy of images generated with tokens trained under each guiding classifier, best on "
               "top; whiskers: bootstrap 95% CI; n: images behind a bar (dots: single runs when a bar averages "
               "repeats); dashed: the plain prompt with its CI. The judge is the same within a panel.")
    return [Panel("classifier-comparison", fig, "Classifier comparison", caption)]


def transfer_matrix(data: D.StoreData, opts: DrawOptions) -> list[Panel]:
    ok = data.ok
    keys = D.eval_keys(ok)
    if not keys:
        raise Skip("no metric_acc[<classifier>] columns: no cell was scored by extra eval_classifiers")
    ok = ok[ok[[C.metric_col(f"acc[{k}]") for k in keys]].notna().any(axis=1)]
    if ok.empty:
        raise Skip("no ok cell has an eval-classifier accuracy")
    names = D.eval_key_names(ok)
    guide = ok[D.CLASSIFIER] if D.CLASSIFIER in ok.columns else pd.Series([None] * len(ok), index=ok.index)
    other = D.varying_settings(ok, exclude=(D.CLASSIFIER, D.EVAL_CLASSIFIERS))
    row_keys = [(D._hashable(g), D.settings_text(r, other) if other else "") for g, (_, r) in zip(guide, ok.iterrows())]
    guides = list(dict.fromkeys(guide.map(D._hashable)))  # in the spec's order
    row_order = sorted(dict.fromkeys(row_keys), key=lambda k: (guides.index(k[0]), k[1]))
    guide_keys = {g: D.eval_key(g) for g, _ in row_order}
    # Evaluators in the order of the guides (so that "guided and evaluated by the same" is the diagonal), then the rest.
    cols = [guide_keys[g] for g, _ in dict.fromkeys((g, "") for g, _ in row_order) if guide_keys[g] in keys]
    cols = list(dict.fromkeys(cols + keys))
    judge = D.judge_name(ok)
    has_judge = D.ACC in ok.columns

    def cell(frame: pd.DataFrame, metric: str) -> tuple[float, float, float]:
        col = C.metric_col(metric)
        if col not in frame.columns or frame[col].isna().all():
            return (np.nan, np.nan, np.nan)
        lo, hi = frame.get(f"{col}_lo"), frame.get(f"{col}_hi")
        return (frame[col].mean() * 100, lo.mean() * 100 if lo is not None else np.nan,
                hi.mean() * 100 if hi is not None else np.nan)

    table, labels = [], []
    key_series = pd.Series(row_keys, index=ok.index)
    for g, setting in row_order:
        frame = ok[key_series.map(lambda k: k == (g, setting))]
        table.append([cell(frame, f"acc[{k}]") for k in cols] + ([cell(frame, "acc")] if has_judge else []))
        labels.append(D.short_spec(None if g == "None" else g) + (f"\n({setting})" if setting else ""))
    table.append([cell(ok, f"plain_acc[{k}]") for k in cols] + ([cell(ok, "plain_acc")] if has_judge else []))
    labels.append("plain prompt\n(no token)")
    judge_label = "judge" if not judge or judge == "judge" else f"judge\n({judge})"
    col_labels = [names.get(k, k) for k in cols] + ([judge_label] if has_judge else [])

    values = np.array([[v[0] for v in row] for row in table], dtype=float)
    text = [[("–" if np.isnan(v[0]) else f"{v[0]:.0f}%" + ("" if np.isnan(v[1]) else f"\n[{v[1]:.0f}, {v[2]:.0f}]"))
             for v in row] for row in table]
    fig = Figure(figsize=(2.0 * len(col_labels) + 3.5, 1.05 * len(labels) + 2.2), layout="constrained")
    ax = fig.subplots()
    sns.heatmap(values, ax=ax, annot=np.array(text, dtype=object), fmt="", cmap="viridis", vmin=0, vmax=100,
                linewidths=1, linecolor="white", cbar_kws={"label": "top-1 accuracy (%)"},
                annot_kws={"fontsize": 10}, xticklabels=col_labels, yticklabels=labels)
    ax.axhline(len(labels) - 1, color="white", lw=5)  # the plain-prompt row is a reference, not a guide
    if has_judge:
        ax.axvline(len(cols), color="white", lw=5)  # the judge is no guide either
    diagonal = 0
    for r, (g, _) in enumerate(row_order):
        k = guide_keys[g]
        if k in cols:
            # white under black: the outline shows on the darkest and the lightest colours of the map
            for color, lw in (("white", 6), (HIGHLIGHT, 3)):
                ax.add_patch(Rectangle((cols.index(k), r), 1, 1, fill=False, edgecolor=color, lw=lw, zorder=4))
            diagonal += 1
    ax.set_xlabel("classifier that evaluated the images")
    ax.set_ylabel("classifier that guided training")
    ax.tick_params(axis="y", rotation=0)
    ax.tick_params(axis="x", rotation=0)
    fig.suptitle("Do tokens transfer? Accuracy of each guide's tokens under every evaluator\n"
                 "(outlined: scored by the classifier that guided training)")
    n = _range_text(D.n_eval_images(r) for _, r in ok.iterrows())
    caption = (f"Rows: the classifier that guided training (and the plain prompt, for reference); columns: the "
               f"classifier that scored the images, the judge last. Cell text: top-1 accuracy and its bootstrap "
               f"95% CI, n = {n} images per cell. Outlined: evaluated by the guide itself ({diagonal} cell(s)); the "
               "other cells of a row show how far the token's effect transfers.")
    return [Panel("transfer-matrix", fig, "Token transfer matrix", caption)]


def _cell_order(cells: pd.DataFrame) -> list[str]:
    frame = cells.copy()
    sort = []
    if D.DEPTH_X in frame.columns:
        sort.append(D.DEPTH_X)
    if D.CHECKPOINTING in frame.columns:
        order = D.checkpointing_order(frame[D.CHECKPOINTING].dropna().astype(str))
        frame["_ck"] = frame[D.CHECKPOINTING].astype(str).map(lambda v: order.index(v) if v in order else 99)
        sort.append("_ck")
    sort.append(C.LABEL)
    return list(frame.sort_values(sort, kind="stable")[C.CONFIG_HASH])


def training_curves(data: D.StoreData, opts: DrawOptions) -> list[Panel]:
    curves = data.curves
    if curves.empty:
        raise Skip("no curves in the store (no cell recorded per-epoch rows)")
    _need(curves, C.EPOCH, C.LOSS)
    metrics = [m for m in (C.LOSS, C.ACCURACY) if m in curves.columns and curves[m].notna().any()]
    cells = data.cells.set_index(C.CONFIG_HASH)
    label_cols = D.varying_settings(data.cells)
    hashes = [h for h in _cell_order(data.cells) if h in set(curves[C.CONFIG_HASH])]
    per_class = "class_id" in curves.columns
    pages = [hashes[i:i + CURVES_PER_PAGE] for i in range(0, len(hashes), CURVES_PER_PAGE)]
    ylabels = {C.LOSS: "training loss\n(cross-entropy)", C.ACCURACY: "training\naccuracy (%)"}
    colors = {C.LOSS: PALETTE[0], C.ACCURACY: PALETTE[2]}
    top = {m: curves[m].max() * (100.0 if m == C.ACCURACY else 1.0) for m in metrics}
    last_epoch = curves[C.EPOCH].max()
    panels = []
    for p, page in enumerate(pages):
        # Small multiples, one column per cell with loss above accuracy: a band per cell stays readable,
        # and shared axes keep the cells comparable.
        fig, axes_of = _facet_layout(page, rows_per_facet=len(metrics), max_cols=4, panel=(3.6, 2.3))
        n_classes = []
        for h in page:
            rows = curves[curves[C.CONFIG_HASH] == h]
            row = cells.loc[h]
            if per_class:
                n_classes.append(rows["class_id"].nunique())
            for r, (ax, metric) in enumerate(zip(axes_of[h], metrics)):
                scale = 100.0 if metric == C.ACCURACY else 1.0
                g = rows.groupby(C.EPOCH)[metric].agg(["mean", "min", "max"]).sort_index() * scale
                ax.plot(g.index, g["mean"], lw=2, color=colors[metric])
                if per_class and rows["class_id"].nunique() > 1:
                    ax.fill_between(g.index, g["min"], g["max"], color=colors[metric], alpha=0.2, lw=0)
                if metric == C.ACCURACY:
                    _percent_axis(ax, "")
                else:
                    ax.set_ylim(0, top[metric] * 1.05 if top[metric] > 0 else 1)
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.set_xlim(-0.5, last_epoch + 0.5)
                ax.set_ylabel(ylabels[metric] if ax.get_subplotspec().is_first_col() else "")
                ax.set_xlabel("optimiser step (epoch)" if r == len(metrics) - 1 else "")
                if r == 0:
                    label = D.compact_settings(row, label_cols) if label_cols else str(row[C.LABEL])
                    ax.set_title(_wrap(label, 34), loc="left", fontsize=9.5)
        suffix = f" ({p + 1}/{len(pages)})" if len(pages) > 1 else ""
        fig.suptitle("Training curves per cell: loss and training accuracy per epoch, mean over classes" + suffix)
        caption = ("One column per cell: mean over classes per epoch" + (
            f" (n = {_range_text(n_classes)} classes per cell)" if per_class else "") + "; band: range over "
                   "classes. A class that stopped early (threshold or patience) leaves the mean from then on.")
        stem = "training-curves" + (f"-{p + 1}" if len(pages) > 1 else "")
        panels.append(Panel(stem, fig, "Training curves" + suffix, caption))
    return panels


def _examples(folder: Path) -> dict[str, dict[tuple[int, int], Path]]:
    out: dict[str, dict[tuple[int, int], Path]] = {}
    for kind in ("plain", "token"):
        for path in sorted((folder / kind).glob("class*-seed*.png")):
            stem = path.stem[len("class"):]
            cls, _, seed = stem.partition("-seed")
            try:
                out.setdefault(kind, {})[(int(cls), int(seed))] = path
            except ValueError:
                continue
    return out


def _spread_by_accuracy(ok: pd.DataFrame, hashes: list[str], k: int) -> list[str]:
    """k of the cells, from the least to the most accurate, evenly spaced in that order (kept in `hashes` order)."""
    if k <= 0:
        return []
    acc = ok.set_index(C.CONFIG_HASH)[D.ACC] if D.ACC in ok.columns else pd.Series(0.0, index=ok[C.CONFIG_HASH])
    ranked = sorted(hashes, key=lambda h: (acc.get(h) if pd.notna(acc.get(h)) else -1.0))
    picks = {ranked[round(i * (len(ranked) - 1) / max(1, k - 1))] for i in range(k)} if k > 1 else {ranked[-1]}
    return [h for h in hashes if h in picks]


def image_grids(data: D.StoreData, opts: DrawOptions) -> list[Panel]:
    from PIL import Image

    _need(data.cells, C.ARTIFACTS_DIR)
    panels = []
    label_cols = D.varying_settings(data.cells)
    hashes = _cell_order(data.ok)
    if opts.example_cells is not None and len(hashes) > opts.example_cells:
        hashes = _spread_by_accuracy(data.ok, hashes, opts.example_cells)
    for h in hashes:
        row = data.ok[data.ok[C.CONFIG_HASH] == h].iloc[0]
        found = _examples(data.path / str(row[C.ARTIFACTS_DIR]) / "examples")
        shared = sorted(set(found.get("plain", {})) & set(found.get("token", {})))
        if not shared:
            continue
        classes = sorted({c for c, _ in shared})[:EXAMPLE_CLASSES]
        seeds = sorted({s for _, s in shared})[:EXAMPLE_SEEDS]
        per_class = {}
        for kind, col in (("token", C.metric_col("acc_per_class")), ("plain", C.metric_col("plain_acc_per_class"))):
            try:
                per_class[kind] = json.loads(row[col]) if col in row.index and isinstance(row[col], str) else {}
            except ValueError:
                per_class[kind] = {}
        fig = Figure(figsize=(1.15 * len(seeds) + 2.2, 1.2 * 2 * len(classes) + 1.1), layout="constrained")
        axes = fig.subplots(2 * len(classes), len(seeds), squeeze=False)
        for ci, c in enumerate(classes):
            for ki, kind in enumerate(("plain", "token")):
                r = 2 * ci + ki
                for si, s in enumerate(seeds):
                    ax = axes[r][si]
                    path = found[kind].get((c, s))
                    if path is not None:
                        with Image.open(path) as im:
                            ax.imshow(np.asarray(im.convert("RGB")), interpolation="nearest")
                    ax.set_xticks([])
                    ax.set_yticks([])
                    for spine in ax.spines.values():
                        spine.set_visible(kind == "token")
                        spine.set_edgecolor(HIGHLIGHT)
                        spine.set_linewidth(2)
                    if r == 0:
                        ax.set_title(f"seed {s}", fontsize=8)
                acc = per_class[kind].get(str(c))
                name = "plain prompt" if kind == "plain" else "learned token"
                axes[r][0].set_ylabel(f"class {c}\n{name}" + (f"\njudge {acc * 100:.0f}%" if acc is not None else ""),
                                      rotation=0, ha="right", va="center", fontsize=9)
        label = D.settings_text(row, label_cols) if label_cols else str(row[C.LABEL])
        fig.suptitle(f"Plain prompt vs learned token on the same seeds: {label}")
        caption = (f"Cell {h} ({label}). For each class, the top row is the plain class prompt and the outlined "
                   "row the prompt with the learned token, rendered from the same seeds; the percentage is the "
                   "judge's accuracy on all evaluation images of that class and prompt.")
        panels.append(Panel(f"examples-{h}", fig, f"Examples: {label}", caption))
    if not panels:
        raise Skip("no ok cell has example images (artifacts/<hash>/<attempt>/examples/plain and token)")
    return panels


def augment_accuracy(data: D.StoreData, opts: DrawOptions) -> list[Panel]:
    from bench.figures import augment as A

    _need(data.cells, A.K, A.SOURCE)
    try:
        fig = A.draw_augment(data.cells)
    except ValueError as e:  # the augment module's own check of its columns and cells
        raise Skip(str(e)) from None
    caption = ("Held-out top-1 accuracy of a classifier trained on k real images per class, alone or with images "
               "generated from the plain prompt or the learned token; lines: mean over seeds, dots: seeds, "
               "bands: mean bootstrap 95% CI (bench.figures.augment).")
    return [Panel(A.STEM, fig, "Low-resource training with generated images", caption)]


FIGURES: tuple[FigureKind, ...] = (
    FigureKind("memory-vs-depth", f"{D.DEPTH}, {C.COST_PEAK_BYTES} (checkpointing, status optional)", memory_vs_depth),
    FigureKind("step-time-vs-depth", f"{D.DEPTH}, {C.STEP_TIME_MEDIAN_S} ({C.STEP_TIMES_S} for the spread)",
               step_time_vs_depth),
    FigureKind("accuracy-vs-depth", f"{D.DEPTH}, {D.ACC} (+_lo/_hi; {D.PLAIN_ACC} for the baseline)",
               accuracy_vs_depth),
    FigureKind("effort-vs-depth", f"{D.DEPTH}, {D.EPOCHS_MEAN} and/or {D.IMAGES_TO_THRESHOLD}", effort_vs_depth),
    FigureKind("pareto-memory-accuracy", f"{C.COST_PEAK_BYTES}, {D.ACC} on at least two ok cells",
               pareto_memory_accuracy),
    FigureKind("paired-contrasts", "metric_outcomes of cells that differ in one axis (bench.contrasts)",
               paired_contrasts),
    FigureKind("classifier-comparison", f"{D.CLASSIFIER} with two or more values, {D.ACC}", classifier_comparison),
    FigureKind("transfer-matrix", "metric_acc[<classifier>] columns (the cell's eval_classifiers)", transfer_matrix),
    FigureKind("training-curves", f"curves with {C.EPOCH} and {C.LOSS} ({C.ACCURACY}, class_id optional)",
               training_curves),
    FigureKind("examples", "artifacts/<hash>/<attempt>/examples/{plain,token}/class<c>-seed<s>.png", image_grids),
    FigureKind("augment-accuracy-vs-k", "the augment cell's cfg_k, cfg_source, cfg_n_generated, metric_acc (+_lo/_hi)",
               augment_accuracy),
)


# --- drawing and saving --------------------------------------------------------------------------------


def parse_formats(text: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    from dct.errors import ConfigError

    items = [t.strip().lower().lstrip(".") for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    bad = [t for t in items if t not in FORMATS]
    if bad or not items:
        raise ConfigError(f"--format {text!r} is not accepted: a comma-separated list of {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(items))


def _save(figure: Figure, out: Path, stem: str, formats) -> dict[str, Path]:
    files = {}
    for fmt in formats:
        path = out / f"{stem}.{fmt}"
        metadata = {"Date": None} if fmt in ("svg", "pdf") else {"Software": None}
        if fmt == "pdf":
            metadata["CreationDate"] = None
            del metadata["Date"]
        figure.savefig(path, format=fmt, bbox_inches="tight", metadata=metadata, facecolor="white")
        files[fmt] = path
    return files


def _clear_previous(out: Path, kinds: set[str]) -> dict:
    """Delete the files an earlier run wrote for these figure kinds (a figure now skipped, a cell gone, would
    otherwise linger); return the earlier index's entries of the other kinds, which stay."""
    index = out / INDEX_FILE
    try:
        old = json.loads(index.read_text()) if index.is_file() else {}
    except ValueError:
        old = {}
    for fig in old.get("drawn", []):
        if fig.get("kind") in kinds:
            for name in fig.get("files", {}).values():
                (out / Path(name).name).unlink(missing_ok=True)
    return {"drawn": [f for f in old.get("drawn", []) if f.get("kind") not in kinds],
            "skipped": [f for f in old.get("skipped", []) if f.get("kind") not in kinds]}


def draw_figures(store, *, out: str | Path | None = None, formats=DEFAULT_FORMATS,
                 only: list[str] | tuple[str, ...] | None = None, example_cells: int | None = None) -> FigureSet:
    """Draw every figure the store supports into `out` (default <store>/figures); see the module docstring.
    `store` is a folder (or an experiment name under ./results) or an already loaded StoreData; `only`
    names figure kinds (FIGURES); `example_cells` caps the image grids (None: one per finished cell)."""
    options = DrawOptions(example_cells=example_cells)
    data = store if isinstance(store, D.StoreData) else D.load_store(store)
    out = Path(out) if out is not None else data.path / "figures"
    formats = parse_formats(formats)
    kinds = [k for k in FIGURES if not only or k.name in only]
    if only:
        from dct.errors import ConfigError

        unknown = sorted(set(only) - {k.name for k in FIGURES})
        if unknown:
            raise ConfigError(f"unknown figure(s) {unknown}; figures: {[k.name for k in FIGURES]}")
    out.mkdir(parents=True, exist_ok=True)
    kept = _clear_previous(out, {k.name for k in kinds})
    result = FigureSet(store=data.path, out=out)
    if data.cells.empty:
        result.skipped = [Skipped(k.name, "the store has no cells") for k in kinds]
    else:
        with matplotlib.rc_context(_RC):
            for kind in kinds:
                try:
                    panels = kind.draw(data, options)
                except Skip as e:
                    result.skipped.append(Skipped(kind.name, str(e)))
                    continue
                for panel in panels:
                    files = _save(panel.figure, out, panel.stem, formats)
                    result.drawn.append(DrawnFigure(kind.name, panel.stem, panel.title, panel.caption, files,
                                                    panel.marks))
    index = {"store": str(data.path),
             "drawn": kept["drawn"] + [{"kind": d.kind, "stem": d.stem, "title": d.title, "caption": d.caption,
                                        "marks": d.marks, "files": {f: p.name for f, p in d.files.items()}}
                                       for d in result.drawn],
             "skipped": kept["skipped"] + [{"kind": s.kind, "reason": s.reason} for s in result.skipped]}
    (out / INDEX_FILE).write_text(json.dumps(index, indent=1))
    return result
