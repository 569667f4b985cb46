"""Figures of single cells: training curves (loss and training accuracy per epoch, small multiples) and
image grids (plain prompt vs learned token on the same seeds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bench import columns as C
from bench.figures import data as D
from bench.figures.panel import (FACET, ROW, DrawOptions, Panel, Skip, facet_grid, finish_grid, percent_axis,
                                 range_text, require_columns, wrap)
from bench.figures.style import HIGHLIGHT, PALETTE

CURVES_PER_PAGE = 8
EXAMPLE_SEEDS = 8
EXAMPLE_CLASSES = 10


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


METRIC, VALUE = "_metric", "_value"  # training_curves' tidy frame


def _class_range(values: pd.Series) -> tuple[float, float]:
    """seaborn's errorbar for the curves: the band spans the classes, lowest to highest."""
    return values.min(), values.max()


def training_curves(data: D.StoreData, opts: DrawOptions) -> list[Panel]:
    curves = data.curves
    if curves.empty:
        raise Skip("no curves in the store (no cell recorded per-epoch rows)")
    require_columns(curves, C.EPOCH, C.LOSS)
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
    # One tidy frame of every plotted value: the facet (cell) and row (metric) for facet_grid, the value scaled.
    tidy = pd.concat([pd.DataFrame({FACET: curves[C.CONFIG_HASH], ROW: r, METRIC: metric, C.EPOCH: curves[C.EPOCH],
                                    VALUE: curves[metric] * (100.0 if metric == C.ACCURACY else 1.0)})
                      for r, metric in enumerate(metrics)], ignore_index=True)
    panels = []
    for p, page in enumerate(pages):
        # Small multiples, one column per cell with loss above accuracy: a band per cell stays readable,
        # and shared axes keep the cells comparable.
        grid, axes_of = facet_grid(tidy[tidy[FACET].isin(page)], page, rows_per_facet=len(metrics), max_cols=4,
                                   panel=(3.6, 2.3))
        grid.map_dataframe(sns.lineplot, x=C.EPOCH, y=VALUE, hue=METRIC, palette=colors, estimator="mean",
                           errorbar=_class_range if per_class else None, err_kws={"lw": 0}, legend=False, lw=2)
        finish_grid(grid)
        fig = grid.figure
        n_classes = []
        for h in page:
            rows = curves[curves[C.CONFIG_HASH] == h]
            row = cells.loc[h]
            if per_class:
                n_classes.append(rows["class_id"].nunique())
            for r, (ax, metric) in enumerate(zip(axes_of[h], metrics)):
                if metric == C.ACCURACY:
                    percent_axis(ax, "")
                else:
                    ax.set_ylim(0, top[metric] * 1.05 if top[metric] > 0 else 1)
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.set_xlim(-0.5, last_epoch + 0.5)
                ax.set_ylabel(ylabels[metric] if ax.get_subplotspec().is_first_col() else "")
                ax.set_xlabel("optimiser step (epoch)" if r == len(metrics) - 1 else "")
                if r == 0:
                    label = D.compact_settings(row, label_cols) if label_cols else str(row[C.LABEL])
                    ax.set_title(wrap(label, 34), loc="left", fontsize=9.5)
        suffix = f" ({p + 1}/{len(pages)})" if len(pages) > 1 else ""
        fig.suptitle("Training curves per cell: loss and training accuracy per epoch, mean over classes" + suffix)
        caption = ("One column per cell: mean over classes per epoch" + (
            f" (n = {range_text(n_classes)} classes per cell)" if per_class else "") + "; band: range over "
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

    require_columns(data.cells, C.ARTIFACTS_DIR)
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


