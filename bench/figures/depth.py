"""The figures against backprop depth (memory, step time, judge accuracy, training effort), and the two
that compare the cells of a depth grid with each other (the memory-accuracy Pareto front, paired contrasts).

Settings other than depth and checkpointing that vary in the store become facets, so two configurations
are never averaged into one line; repeats (seeds) are averaged and shown as dots. The panels are a seaborn
FacetGrid, the lines seaborn lineplots (hue and style: one colour and marker per checkpointing mode); the
CIs are drawn by hand from the stored _lo/_hi columns (seaborn would bootstrap the cells instead).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator

from bench import columns as C
from bench.figures import data as D
from bench.figures.panel import (FACET, ROW, DrawOptions, Panel, Skip, bottom_facets, facet_grid, finish_grid,
                                 num, percent_axis, plain_baseline, range_text, require_columns)
from bench.figures.style import (FAIL_COLOR, HIGHLIGHT, PANEL, PLAIN_COLOR, hue_order, hue_styles,
                                 hue_values)


def _depth_cells(data: D.StoreData, *need: str, predicted: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cells with a depth, the ok ones among them that have every `need` column). With `predicted` (a
    column of the planner's predictions), a store of predicted rows alone is drawn too."""
    require_columns(data.cells, D.DEPTH)
    cells = data.cells[data.cells[D.DEPTH_X].notna()]
    has_predictions = predicted is not None and predicted in cells.columns and cells[predicted].notna().any()
    if not has_predictions:
        require_columns(cells, *need)
    present = [c for c in need if c in cells.columns]
    ok = cells[(cells[C.STATUS] == C.STATUS_OK) & cells[present].notna().all(axis=1)] if len(present) == len(need) \
        else cells.iloc[0:0]
    if ok.empty and not has_predictions:
        raise Skip(f"no ok cell has {', '.join(need)}")
    depths = sorted(cells[D.DEPTH_X].unique())
    if len(depths) < 2:
        raise Skip(f"only one depth in the store ({cells[D.DEPTH_TEXT].iloc[0]}): nothing to plot against depth")
    return cells, ok



def _depth_label(log: bool) -> str:
    return "backprop depth (final UNet calls with gradient" + (", log scale)" if log else ")")


def _log_depth(cells: pd.DataFrame) -> bool:
    xs = cells[D.DEPTH_X]
    return bool(xs.min() > 0 and xs.max() / xs.min() >= 8)


def _depth_axis(ax, cells: pd.DataFrame) -> bool:
    """Ticks at the depths that were run, labelled as written ('full (20)'); log2 when they span 8x or more."""
    ticks = cells.drop_duplicates(D.DEPTH_X).sort_values(D.DEPTH_X)
    xs = list(ticks[D.DEPTH_X])
    log = _log_depth(cells)
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


def _mark_failed(ax, failed: pd.DataFrame, hue_col, palette: dict, marks: list[str], facet: str,
                 on_line: pd.Series) -> bool:
    """An x at the top of the axis for each cell that did not finish, labelled with its status (OOM)."""
    if failed.empty:
        return False
    stack: dict[float, int] = {}
    for _, row in failed.sort_values(D.DEPTH_X).iterrows():
        hue = str(row[hue_col]) if hue_col else ""
        level = stack.get(row[D.DEPTH_X], 0)
        stack[row[D.DEPTH_X]] = level + 1
        y = 0.94 - 0.075 * level
        color = palette.get(hue, FAIL_COLOR) if hue_col else FAIL_COLOR
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


def _legend(fig: Figure, hue_col, palette: dict, markers: dict, extra=()) -> None:
    """One legend for the whole figure, below the panels: the lines (a style per checkpointing mode) and
    the other marks (CI band, plain-prompt baseline, failed cells)."""
    handles = []
    if hue_col:
        handles = [Line2D([], [], lw=2, ms=7, color=palette[h], marker=markers[h], label=h) for h in palette]
    handles += list(extra)
    if handles:
        fig.legend(handles=handles, title=D.setting_name(hue_col) if hue_col else None, loc="outside lower center",
                   ncols=min(len(handles), 4), frameon=False)


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


def _include_points(ax, inc: pd.DataFrame, spec: dict, hue_col, palette: dict) -> bool:
    ys = spec["y"](inc)
    err = spec["err"](inc) if "err" in spec else None
    drawn = False
    for n, (idx, row) in enumerate(inc.sort_values(D.DEPTH_X).iterrows()):
        y = ys.loc[idx]
        if pd.isna(y):
            continue
        hue = str(row[hue_col]) if hue_col else ""
        color = palette.get(hue, FAIL_COLOR) if hue_col else FAIL_COLOR
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
                  mark_failed: bool, panel=PANEL) -> tuple[Figure, list[str], pd.DataFrame]:
    """The shared frame of the *-vs-depth figures: facets x rows of axes (a seaborn FacetGrid), one line
    per checkpointing mode (seaborn lineplot, hue and style: colour and marker). Each row dict: y(frame)
    -> Series, optional err(frame) -> (lo, hi) Series (stored CI columns, drawn by hand as band or bars),
    band (bool), ylabel, setup(ax, ok cells of the panel) -> extra legend handles or None, predicted (a
    column of predictions, drawn dashed with hollow markers for every cell that has one, run or not) and
    predicted_y(frame)."""
    predicted = next((r["predicted"] for r in rows if r.get("predicted")), None)
    cells, ok = _depth_cells(data, *need, predicted=predicted)
    hue_col, hues = hue_order(cells)
    palette, markers = hue_styles(hues)
    keys, key, on_line = _depth_facets(cells)
    lines = _line_frame(cells, ok[on_line[ok.index]], key, rows, hue_col, dodge)
    grid, axes_of = facet_grid(lines, keys, rows_per_facet=len(rows), panel=panel)
    grid.map_dataframe(sns.lineplot, x=X, y=Y, hue=HUE, style=HUE, palette=palette, markers=markers, dashes=False,
                       estimator="mean", errorbar=None, legend=False, lw=2, ms=8, mew=0, zorder=3)  # ms 7 + edge 1
    finish_grid(grid)
    marks: list[str] = []
    extra: dict[str, object] = {}  # legend entries besides the lines, one of each across panels
    bottom = bottom_facets(keys)
    for facet in keys:
        in_facet = key == facet
        sub_all = cells[in_facet]
        sub_ok = ok[in_facet[ok.index]]
        for r, spec in enumerate(rows):
            ax = axes_of[facet][r]
            log = _depth_axis(ax, cells)
            _repeats_and_cis(ax, lines[(lines[FACET] == facet) & (lines[ROW] == r)], spec, palette, markers)
            if spec.get("predicted") and _predicted_lines(ax, sub_all[on_line[sub_all.index]], spec, hue_col,
                                                          palette, markers):
                extra.setdefault("predicted", Line2D([], [], color="grey", ls="--", marker="o", mfc="none",
                                                     label="predicted (dct bench plan)"))
            if _include_points(ax, sub_ok[~on_line[sub_ok.index]], spec, hue_col, palette):
                extra.setdefault("include", Line2D([], [], ls="", marker="*", ms=13, color="grey", mec="black",
                                                   mew=0.8, label="single cell of the spec's [[include]], labelled"))
            for handle in (spec["setup"](ax, sub_ok) or []) if "setup" in spec else []:
                extra.setdefault(handle.get_label(), handle)
            if mark_failed and r == 0:
                failed = sub_all[sub_all[C.STATUS] != C.STATUS_OK]
                if _mark_failed(ax, failed, hue_col, palette, marks, facet, on_line):
                    extra.setdefault("failed", _fail_handle())
            ax.set_ylabel(spec["ylabel"] if ax.get_subplotspec().is_first_col() else "")
            ax.set_xlabel(_depth_label(log) if r == len(rows) - 1 and facet in bottom else "")
            ax.set_title((facet or None) if r == 0 else None, loc="left")
    _legend(grid.figure, hue_col, palette, markers, extra.values())
    grid.figure.suptitle(title)
    return grid.figure, marks, ok


# The tidy frame of the lines: one row per (ok line cell, measured quantity); columns for facet_grid
# (FACET, ROW), seaborn (X: depth, shifted sideways per line when dodging; Y; HUE) and the stored CI.
X, Y, LO, HI, HUE = "_x", "_y", "_lo", "_hi", "_hue"


def _line_frame(cells: pd.DataFrame, lines_ok: pd.DataFrame, key: pd.Series, rows: list[dict], hue_col,
                dodge: bool) -> pd.DataFrame:
    log = _log_depth(cells)
    span = cells[D.DEPTH_X].max() - cells[D.DEPTH_X].min()
    hue = hue_values(lines_ok, hue_col)
    parts = [pd.DataFrame(columns=[FACET, ROW, X, Y, LO, HI, HUE])]
    for facet, sub in lines_ok.groupby(key[lines_ok.index], sort=False):
        present = [h for h in hue_order(cells)[1] if (hue[sub.index] == h).any()]
        for r, spec in enumerate(rows):
            ys = spec["y"](sub)
            line = sub[ys.notna()]
            if line.empty:
                continue
            lo, hi = spec["err"](line) if "err" in spec else (np.nan, np.nan)
            j = hue[line.index].map(present.index)
            xs = [_dodge(x, i, len(present), log, span) if dodge else x for x, i in zip(line[D.DEPTH_X], j)]
            parts.append(pd.DataFrame({FACET: facet, ROW: r, X: xs, Y: ys[line.index], LO: lo, HI: hi,
                                       HUE: hue[line.index]}, index=line.index))
    return pd.concat(parts).astype({ROW: int, X: float, Y: float, LO: float, HI: float})


def _repeats_and_cis(ax, frame: pd.DataFrame, spec: dict, palette: dict, markers: dict) -> None:
    """Beside the lines of one panel: every run as a dot where a line averages repeats, and the mean of
    the cells' stored CI columns as a band or as bars."""
    for hue, line in frame.groupby(HUE, sort=False):
        if line[X].duplicated().any():
            ax.plot(line[X], line[Y], ls="", marker=markers[hue], color=palette[hue], alpha=0.35, ms=4)
        if "err" not in spec:
            continue
        means = line.groupby(X)[[Y, LO, HI]].mean().sort_index()
        if spec.get("band"):
            ax.fill_between(means.index, means[LO], means[HI], color=palette[hue], alpha=0.15, lw=0)
        else:
            yerr = [means[Y] - means[LO], means[HI] - means[Y]]
            ax.errorbar(means.index, means[Y], yerr=yerr, ls="", color=palette[hue], capsize=4, lw=1.3, zorder=2)


def _predicted_lines(ax, cells: pd.DataFrame, spec: dict, hue_col, palette: dict, markers: dict) -> bool:
    """The planner's predictions, one dashed line of hollow markers per checkpointing mode, for every
    cell that has one (run, predicted-oom or not yet run): measured lines are drawn over them."""
    if spec["predicted"] not in cells.columns:
        return False
    drawn = False
    for hue in palette:
        line = cells[(hue_values(cells, hue_col) == hue) & cells[spec["predicted"]].notna()]
        if line.empty:
            continue
        ys = spec["predicted_y"](line).groupby(line[D.DEPTH_X]).mean().sort_index()
        ax.plot(ys.index, ys.values, ls="--", lw=1.3, ms=8, mfc="none", mew=1.4, zorder=2, color=palette[hue],
                marker=markers[hue])
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
               + (f" The y axis starts at {num(bottom)} {unit}, not 0: the peaks differ by less than a fifth."
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
    n = range_text(len(t) for t in spread.values())
    caption = (f"Median wall time of one optimisation step over the timed steps after warm-up (n = {n} per cell)"
               + ("; bars span the fastest to the slowest step" if have_spread else "")
               + "; x at the top: cells that did not finish.")
    return [Panel("step-time-vs-depth", fig, "Time per step vs depth", caption, marks)]


def accuracy_vs_depth(data: D.StoreData, opts: DrawOptions) -> list[Panel]:
    # metric_judge marks an accuracy measured by a judge on generated images (other cells' acc is not)
    cells, ok = _depth_cells(data, D.ACC, D.METRIC_JUDGE)
    lo_col, hi_col = f"{D.ACC}_lo", f"{D.ACC}_hi"
    has_ci = lo_col in ok.columns and ok[lo_col].notna().any()

    hue_col, _ = hue_order(cells)
    _, key, on_line = _depth_facets(cells)
    lines = ok[on_line[ok.index]]
    # A CI band per line reads well alone; overlapping bands of several lines turn to mud, so then every
    # panel gets (sideways-shifted) error bars instead.
    band = hue_col is None or lines.empty or lines.groupby(key[lines.index])[hue_col].nunique().max() <= 1

    def setup(ax, sub):
        percent_axis(ax, "judge top-1 accuracy (%)")
        base = plain_baseline(ax, sub)
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
    n = range_text(D.n_eval_images(r) for _, r in ok.iterrows())
    caption = (f"Top-1 accuracy of an independent judge on images generated with the learned token, n = {n} images "
               "per cell (classes x unseen seeds); band or bars: bootstrap 95% CI; dashed: the plain class prompt "
               "on the same seeds, grey band its CI. Lines of equal value are shifted sideways a little to stay "
               "visible.")
    return [Panel("accuracy-vs-depth", fig, "Judge accuracy vs depth", caption, marks)]


def effort_vs_depth(data: D.StoreData, opts: DrawOptions) -> list[Panel]:
    wanted = (D.EPOCHS_MEAN, D.IMAGES_TO_THRESHOLD, D.THRESHOLD_REACHED)
    require_columns(data.cells, D.DEPTH)
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
                         setup=lambda ax, sub: percent_axis(ax, "")))
    fig, marks, ok = _depth_figure(data, need=(have[0],), rows=rows, dodge=True, mark_failed=False,
                                   title="Training effort vs backprop depth", panel=(PANEL[0], 2.8))
    stop = C.config_col("stop_accuracy")
    threshold = (f" (training accuracy above {range_text(ok[stop] * 100)}%)" if stop in ok.columns
                 and ok[stop].notna().any() else "")
    n = range_text(ok[D.N_CLASSES]) if D.N_CLASSES in ok.columns else "?"
    caption = ("Per cell, over its classes (n = " + n + " per cell): optimiser steps (epochs) until a stopping rule "
               "fired (threshold, patience or the epoch limit); images generated until the threshold" + threshold +
               " was passed, mean over the classes that passed it; and the share of classes that passed it.")
    return [Panel("effort-vs-depth", fig, "Training effort vs depth", caption, marks)]


def pareto_memory_accuracy(data: D.StoreData, opts: DrawOptions) -> list[Panel]:
    require_columns(data.cells, C.COST_PEAK_BYTES, D.ACC, D.METRIC_JUDGE)
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
    hue_col, hues = hue_order(ok)
    name = (lambda h: f"{D.setting_name(hue_col)}={h}") if hue_col else (lambda h: "cell")
    palette, markers = hue_styles([name(h) for h in hues])  # every cell, coloured by checkpointing mode
    hue_of = hue_values(ok, hue_col).map(name).to_numpy()

    fig = Figure(figsize=(12, 6.4), layout="constrained")
    ax, side = fig.subplots(1, 2, width_ratios=[2.6, 1])
    for level in palette if yerr is not None else ():  # the stored CIs, under the points
        m = hue_of == level
        ax.errorbar(x[m], y[m], yerr=yerr[:, m], ls="", capsize=2, lw=0.8, alpha=0.75, zorder=2, color=palette[level])
    sns.scatterplot(x=x, y=y, hue=hue_of, style=hue_of, palette=palette, markers=markers, s=64, linewidth=0,
                    alpha=0.75, zorder=2, ax=ax)  # s: marker size 7 plus its edge, squared
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
    percent_axis(ax, "judge top-1 accuracy (%)")
    ax.set_xlim(0, x.max() * 1.08)
    handles, names = ax.get_legend_handles_labels()  # the front first, then seaborn's points
    first = sorted(range(len(names)), key=lambda i: names[i] != "Pareto front")
    ax.legend([handles[i] for i in first], [names[i] for i in first], loc="lower right", frameon=True)
    judge = D.judge_name(ok)
    fig.suptitle("Memory vs quality: every finished cell of the store" + (f"\njudge: {judge}" if judge else ""))
    n = range_text(D.n_eval_images(r) for _, r in ok.iterrows())
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


