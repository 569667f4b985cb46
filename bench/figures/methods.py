"""The figure and table of the methods experiment (bench.cells.methods, ablations/methods.toml): judge
accuracy against the cost of producing N images of a class, one point per method, the Pareto front joined.

    python -m bench.figures.methods results/reference/methods      # the README table (markdown) on stdout
    dct figures --results results/reference/methods                # -> figures/methods-accuracy-vs-cost.png

Panels: rows N = 100 and N = 10,000 images per class; columns: each domain over all classes, then the
world's ambiguous pair of classes (whose plain names share a word) in each domain. x: seconds to produce N
images of one class (one-time selection or training per class + N x seconds per image; log scale), y:
judge top-1 accuracy with its hierarchical 95% CI. The front: no other method is cheaper AND at least as
accurate. Drawn with matplotlib's object API and seaborn's colour-blind palette; a marker per method.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from bench import columns as C

STEM = "methods-accuracy-vs-cost"
METHOD, DOMAIN = C.config_col("method"), C.config_col("domain")
M = C.metric_col
NEEDS = f"{METHOD}, {M('acc')} (+_lo/_hi), {M('cost_100_s')}, {M('cost_10000_s')} (the methods cell)"
ORDER = ("plain", "prompt-search", "textual-inversion-k1", "textual-inversion-k5", "textual-inversion-k10",
         "classifier-guidance", "dct-fast", "dct-paper", "dct+prompt")
MARKERS = ("o", "s", "v", "^", "<", "D", "P", "X", "*", "h", "p")
NS = (100, 10_000)
DCT_METHODS = ("dct-fast", "dct-paper", "dct+prompt")
SAMPLING = "_s_per_image"  # seconds per image used for the cost of N (see methods_rows)


def methods_rows(cells: pd.DataFrame) -> pd.DataFrame:
    """Ok, current methods cells in the canonical method order."""
    need = [METHOD, DOMAIN, M("acc"), M("cost_100_s")]
    if cells.empty or any(c not in cells.columns for c in need):
        raise ValueError(f"not a methods store: needs columns {need}")
    ok = cells[(cells[C.STATUS] == C.STATUS_OK) & cells[M("acc")].notna()].copy()
    if ok.empty:
        raise ValueError("no finished methods cell")
    rank = {m: i for i, m in enumerate(ORDER)}
    ok["_order"] = [rank.get(m, len(ORDER)) for m in ok[METHOD]]
    # Sampling from a prompt, with or without a token, is the same computation: its seconds per image
    # differ between cells only by what else ran on the shared cores. Those cells get the median of all of
    # them; classifier guidance (a decode and a classifier backward per step) keeps its own measurement.
    guided = ok[M("method_kind")] == "guidance" if M("method_kind") in ok.columns else ok[METHOD] == "classifier-guidance"
    ok[SAMPLING] = ok[M("s_per_image")]
    if (~guided).any():
        ok.loc[~guided, SAMPLING] = float(ok.loc[~guided, M("s_per_image")].median())
    for n in NS:
        ok[f"_cost_{n}"] = ok[M("one_time_s_per_class")] + n * ok[SAMPLING]
    return ok.sort_values(["_order", DOMAIN]).drop(columns="_order")


def pareto(x, y) -> np.ndarray:
    """Points no other point beats: lower-or-equal cost and higher-or-equal accuracy, one strictly."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    beaten = [((x <= xi) & (y >= yi) & ((x < xi) | (y > yi))).any() for xi, yi in zip(x, y)]
    return ~np.array(beaten, dtype=bool)


def _panel_data(rows: pd.DataFrame, domain: str, pair: bool, n: int) -> pd.DataFrame:
    sub = rows[rows[DOMAIN] == domain]
    col = "pair_acc" if pair else "acc"
    if M(col) not in sub.columns:
        return sub.iloc[0:0]
    sub = sub[sub[M(col)].notna()]
    return pd.DataFrame({"method": sub[METHOD].to_numpy(), "x": sub[f"_cost_{n}"].to_numpy(),
                         "y": sub[M(col)].to_numpy() * 100, "lo": sub[M(f"{col}_lo")].to_numpy() * 100,
                         "hi": sub[M(f"{col}_hi")].to_numpy() * 100})


def draw_methods(cells: pd.DataFrame) -> tuple[Figure, str, list[str]]:
    """(figure, caption, marks: the front of each panel)."""
    rows = methods_rows(cells)
    domains = [d for d in ("handwritten", "printed") if d in set(rows[DOMAIN])] + \
        sorted(set(rows[DOMAIN]) - {"handwritten", "printed"})
    has_pair = M("pair_acc") in rows.columns and rows[M("pair_acc")].notna().any()
    columns = [(d, False) for d in domains] + ([(d, True) for d in domains] if has_pair else [])
    methods = list(dict.fromkeys(rows[METHOD]))
    palette = sns.color_palette("colorblind", len(methods))
    style = {m: dict(color=palette[i], marker=MARKERS[i % len(MARKERS)]) for i, m in enumerate(methods)}
    fig = Figure(figsize=(4.6 * len(columns), 8.4), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(NS), len(columns), squeeze=False))
    marks = []
    pair_name = ""
    if has_pair:
        pair = json.loads(rows[M("pair_classes")].dropna().iloc[0])
        pair_name = " and ".join(str(c) for c in pair)
    for r, n in enumerate(NS):
        for c, (domain, pair) in enumerate(columns):
            ax = axes[r, c]
            d = _panel_data(rows, domain, pair, n)
            for _, p in d.iterrows():
                ax.errorbar([p.x], [p.y], yerr=[[p.y - p.lo], [p.hi - p.y]], ls="", ms=8, capsize=2, lw=0.9,
                            label=p.method, zorder=3, **style[p.method])
            if len(d):
                front = pareto(d.x, d.y)
                order = np.flatnonzero(front)[np.argsort(d.x.to_numpy()[front])]
                ax.step(d.x.to_numpy()[order], d.y.to_numpy()[order], where="post", color="black", lw=1.6, zorder=2)
                ax.plot(d.x.to_numpy()[order], d.y.to_numpy()[order], ls="", marker="o", ms=15, mfc="none",
                        mec="black", mew=1.5, zorder=4)
                what = f"pair {pair_name}, {domain}" if pair else domain
                marks.append(f"N={n} {what}: front " + ", ".join(d.method.iloc[i] for i in order))
            ax.set_xscale("log")
            ax.set_ylim(0, 105)
            ax.set_title(f"{'ambiguous pair ' + pair_name + ', ' if pair else ''}{domain}, N = {n:,}", fontsize=10)
            if r == len(NS) - 1:
                ax.set_xlabel("seconds for N images of one class (log)")
            if c == 0:
                ax.set_ylabel("judge top-1 accuracy (%)")
    handles = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles.keys()), loc="outside right center", frameon=False)
    fig.suptitle("DCT against its alternatives: judge accuracy vs the cost of N class images "
                 "(ringed and joined: the Pareto front)")
    first = rows.iloc[0]
    caption = (f"One point per method and domain; y: judge top-1 accuracy with a hierarchical bootstrap 95% CI over "
               f"{first.get(M('acc_ci'), 'classes, runs and images')} ({int(first[M('n_classes')])} classes x "
               f"{int(first[M('n_runs')])} runs x {int(first[M('eval_images_per_class')])} unseen seeds); x: one-time "
               "seconds per class (selection / training) + N x seconds per image on the CPU the store ran on (the "
               "median over every unguided cell: sampling with or without a token is the same work; classifier "
               "guidance its own). Ringed and joined: methods no other method beats on both." +
               (f" Right columns: the ambiguous pair (classes {pair_name})." if has_pair else ""))
    return fig, caption, marks


def methods_panels(data, opts) -> list:
    """The FIGURES entry (bench.figures.draw): one Panel, or Skip when the store is not a methods store."""
    from bench.figures.panel import Panel, Skip

    try:
        fig, caption, marks = draw_methods(data.cells)
    except ValueError as e:
        raise Skip(str(e)) from None
    return [Panel(STEM, fig, "DCT against its alternatives: accuracy vs cost", caption, marks)]


# --- the table ----------------------------------------------------------------------------------------


def _mib(v) -> str:
    return "-" if v is None or pd.isna(v) else f"{v / 2**20:.0f}"


def _s(v) -> str:
    if v is None or pd.isna(v):
        return "-"
    return f"{v:,.0f}" if v >= 100 else (f"{v:.1f}" if v >= 1 else f"{v:.3f}")


def _ci(row, col: str) -> str:
    return f"{100 * row[M(col)]:.1f} [{100 * row[M(col + '_lo')]:.1f}, {100 * row[M(col + '_hi')]:.1f}]"


def table_markdown(cells: pd.DataFrame, contrasts: pd.DataFrame | None = None) -> str:
    """The README table: one row per method and domain."""
    rows = methods_rows(cells)
    diff = {}
    if contrasts is not None:
        for _, r in contrasts.iterrows():
            diff[(r["level"], r["others"])] = f"{100 * r['diff']:+.1f} [{100 * r['lo']:+.1f}, {100 * r['hi']:+.1f}]"
    head = ("| domain | method | judge acc % [95% CI] | minus dct-fast (paired) | ambiguous pair % | n | labelled "
            "images / class | images generated before use / class | one-time s / class | s / image (measured; used) | "
            "peak RSS MiB | "
            "cost of 100 images (s) | cost of 10,000 images (s) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for _, r in rows.iterrows():
        n = f"{int(r[M('n_classes')])}x{int(r[M('n_runs')])}x{int(r[M('eval_images_per_class')])}"
        if int(r[M("runs_trained")]) == 1 and int(r[M("n_runs")]) > 1:
            n = f"{int(r[M('n_classes')])}x1x{int(r[M('eval_images_per_class')])} (no training)"
        pair = _ci(r, "pair_acc") if M("pair_acc") in r and pd.notna(r.get(M("pair_acc"))) else "-"
        lines.append(f"| {r[DOMAIN]} | {r[METHOD]} | {_ci(r, 'acc')} | {diff.get((r[METHOD], f'domain={r[DOMAIN]}'), '(baseline)' if r[METHOD] == 'dct-fast' else '-')} "
                     f"| {pair} | {n} | {r[M('labelled_images_per_class')]:.0f} | {r[M('images_consumed_per_class')]:.0f} "
                     f"| {_s(r[M('one_time_s_per_class')])} | {_s(r[M('s_per_image')])}; {_s(r[SAMPLING])} "
                     f"| {_mib(r.get(C.PEAK_MEM_BYTES))} | {_s(r['_cost_100'])} | {_s(r['_cost_10000'])} |")
    return "\n".join(lines)


def fronts(cells: pd.DataFrame) -> dict[str, list[str]]:
    """{"<domain> N=<n>" (and "pair ..."): methods on the accuracy-cost front}."""
    rows = methods_rows(cells)
    out = {}
    for domain in dict.fromkeys(rows[DOMAIN]):
        for pair in (False, True):
            for n in NS:
                d = _panel_data(rows, domain, pair, n)
                if len(d):
                    f = pareto(d.x, d.y)
                    out[f"{'pair ' if pair else ''}{domain} N={n}"] = list(d.method[f])
    return out


def main(argv: list[str]) -> int:
    from bench.contrasts import contrasts
    from bench.store import load_cells

    if len(argv) != 1:
        print("usage: python -m bench.figures.methods <store>", file=sys.stderr)
        return 2
    cells = load_cells(argv[0])
    print(table_markdown(cells, contrasts(cells)))
    print()
    for key, methods in fronts(cells).items():
        print(f"- front {key}: {', '.join(methods)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
