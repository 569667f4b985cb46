"""The figure of the augmentation experiment (bench.cells.augment): held-out accuracy vs real images per
class, one line per source of extra training images.

    from bench.store import load_cells
    from bench.figures.augment import plot_augment
    plot_augment(load_cells("results/augment"), "results/augment/figures")   # -> accuracy-vs-k.png/.svg

Each line is the mean over repeats (seeds) of a (source, generated images per class) pair; dots are the
repeats themselves; the band is the mean of the cells' bootstrap 95% CIs (the test-set uncertainty of
one cell), so where dots spread wider than the band, the real-image draw matters more than the test set.
Drawn with matplotlib's object API (no pyplot state); colours and markers differ per line.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench import columns as C
from bench.figures import data as D
from bench.figures.panel import DrawOptions, Panel, Skip, require_columns

K = C.config_col("k")
SOURCE = C.config_col("source")
N_GEN = C.config_col("n_generated")
ACC = C.metric_col("acc")
ACC_LO = C.metric_col("acc_lo")
ACC_HI = C.metric_col("acc_hi")
N_TEST = C.metric_col("n_test")
SOURCE_ORDER = ("real", "plain", "dct")
SOURCE_NAMES = {"real": "real only", "plain": "+ plain prompt", "dct": "+ DCT token"}
# Okabe-Ito colours: distinct for colour-blind readers; markers keep lines apart in grey-scale.
COLOURS = {"real": "#000000", "plain": "#0072B2", "dct": "#D55E00"}
MARKERS = {"real": "o", "plain": "s", "dct": "^"}
STEM = "accuracy-vs-k"


def augment_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Ok, current augment cells reduced to one row per (source, n_generated, k): mean acc, mean CI, the
    repeats' accuracies and their count."""
    need = [K, SOURCE, N_GEN, ACC, ACC_LO, ACC_HI]
    missing = [c for c in need if c not in cells.columns]
    if missing:
        raise ValueError(f"not an augment store: no column(s) {missing}")
    ok = cells
    if C.STATUS in ok.columns:
        ok = ok[ok[C.STATUS] == C.STATUS_OK]
    if C.SUPERSEDED in ok.columns:
        ok = ok[~ok[C.SUPERSEDED].astype(bool)]
    if ok.empty:
        raise ValueError("no ok augment cells to plot")
    ok = ok.assign(**{N_GEN: ok[N_GEN].fillna(0).astype(int), K: ok[K].astype(int)})
    grouped = ok.groupby([SOURCE, N_GEN, K], sort=True)
    table = grouped.agg(acc=(ACC, "mean"), lo=(ACC_LO, "mean"), hi=(ACC_HI, "mean"), n=(ACC, "size")).reset_index()
    table["accs"] = grouped[ACC].apply(list).to_numpy()
    rank = {s: i for i, s in enumerate(SOURCE_ORDER)}
    return table.sort_values([SOURCE, N_GEN, K], key=lambda s: s.map(rank) if s.name == SOURCE else s,
                             ignore_index=True)


def draw_augment(cells: pd.DataFrame):
    """The matplotlib Figure (for callers that save it their own way, e.g. augment_accuracy's Panel)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, NullLocator

    table = augment_table(cells)
    fig = Figure(figsize=(6.0, 4.2))
    ax = fig.add_subplot()
    for (source, n_gen), line in table.groupby([SOURCE, N_GEN], sort=False):
        colour, marker = COLOURS.get(source, "#777777"), MARKERS.get(source, "D")
        name = SOURCE_NAMES.get(source, source)
        if source != "real":
            name += f" ({n_gen}/class)"
        x = line[K].to_numpy()
        ax.fill_between(x, line["lo"] * 100, line["hi"] * 100, color=colour, alpha=0.15, linewidth=0)
        ax.plot(x, line["acc"] * 100, color=colour, marker=marker, label=name, linewidth=1.8)
        for k, accs in zip(x, line["accs"]):
            ax.scatter([k] * len(accs), [a * 100 for a in accs], color=colour, marker=marker, s=12, alpha=0.45,
                       linewidths=0)
    ks = sorted(table[K].unique())
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(ks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(k) for k in ks])
    ax.set_xlabel("real training images per class (k)")
    ax.set_ylabel("held-out top-1 accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, alpha=0.3)
    n_test = int(cells[N_TEST].dropna().iloc[0]) if N_TEST in cells.columns and cells[N_TEST].notna().any() else None
    reps = f"{table['n'].min()}" if table["n"].min() == table["n"].max() else f"{table['n'].min()}-{table['n'].max()}"
    ax.axhline(100 / 10, color="#777777", linestyle=":", linewidth=1)  # ten classes: chance is 10%
    ax.set_title("Low-resource training with generated images", fontsize=11)
    # Below the axes: high-accuracy lines would run under a legend drawn inside.
    ax.legend(title=f"lines: mean of {reps} seeds; dots: seeds; bands: mean 95% CI"
              + (f" (n = {n_test} held-out)" if n_test else "") + "; dotted: chance",
              fontsize=9, title_fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    fig.tight_layout()
    return fig



def augment_accuracy(data: D.StoreData, opts: DrawOptions) -> list[Panel]:
    """The figure kind of bench.figures.draw.FIGURES: this module's figure as a Panel, or Skip."""
    require_columns(data.cells, K, SOURCE)
    try:
        fig = draw_augment(data.cells)
    except ValueError as e:  # augment_table's own check of its columns and cells
        raise Skip(str(e)) from None
    caption = ("Held-out top-1 accuracy of a classifier trained on k real images per class, alone or with images "
               "generated from the plain prompt or the learned token; lines: mean over seeds, dots: seeds, "
               "bands: mean bootstrap 95% CI (bench.figures.augment).")
    return [Panel(STEM, fig, "Low-resource training with generated images", caption)]


def plot_augment(cells_df: pd.DataFrame, out_dir: str | Path, formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    """Draw accuracy vs k from `bench.store.load_cells(store)` into `out_dir/accuracy-vs-k.<fmt>`; returns the files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig = draw_augment(cells_df)
    files = []
    for fmt in formats:
        path = out / f"{STEM}.{fmt}"
        fig.savefig(path, format=fmt, dpi=150, bbox_inches="tight", facecolor="white",
                    metadata={"Software": None} if fmt == "png" else {"Date": None})
        files.append(path)
    return files
