"""The classifier comparison: judge accuracy per guiding classifier, one panel per judge, bars with
bootstrap 95% CIs (from the stored _lo/_hi columns), the plain prompt's accuracy as a dashed reference."""

from __future__ import annotations

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import PercentFormatter

from bench.figures import data as D
from bench.figures.panel import DrawOptions, Panel, Skip, plain_baseline, range_text, require_columns, wrap
from bench.figures.style import HATCHES, hue_styles


def _hbars(ax, frame: pd.DataFrame, group_col: str, hue_keys: pd.Series) -> list[Patch]:
    """Horizontal bars of judge accuracy per group (best on top), one bar per hue within a group (seaborn
    barplot: mean over the group's cells), CI whiskers from the stored _lo/_hi columns, every run as a dot
    when a bar averages repeats, and the sample count at the end of each bar. Returns the legend's
    handles: a hatched patch per hue (none for a single, unnamed hue)."""
    tidy = frame.assign(_group=frame[group_col].map(D._hashable), _hue=hue_keys, _acc=frame[D.ACC] * 100)
    groups = list(tidy.groupby("_group", sort=False)["_acc"].mean().sort_values(ascending=False).index)
    hues = list(dict.fromkeys(hue_keys))
    palette, _ = hue_styles(hues)
    sns.barplot(tidy, x="_acc", y="_group", hue="_hue", order=groups, hue_order=hues, palette=palette, orient="h",
                estimator="mean", errorbar=None, width=0.8, gap=0.1, saturation=1, edgecolor="black", linewidth=0.6,
                legend=False, ax=ax)
    for bars, hatch in zip(ax.containers, HATCHES * len(hues)):  # one container per hue, in hue_order
        for bar in bars:
            bar.set_hatch(hatch)
    height = 0.8 / max(1, len(hues))  # seaborn's dodge: the hues share 0.8 of a category, in order
    lo_col, hi_col = f"{D.ACC}_lo", f"{D.ACC}_hi"
    for (g, h), sub in tidy.groupby(["_group", "_hue"], sort=False):
        ypos = groups.index(g) - 0.4 + height * (hues.index(h) + 0.5)
        mean = sub["_acc"].mean()
        end = mean
        if lo_col in sub.columns and sub[lo_col].notna().any():
            lo, hi = sub[lo_col].mean() * 100, sub[hi_col].mean() * 100
            ax.errorbar(mean, ypos, xerr=[[mean - lo], [hi - mean]], color="black", capsize=4, lw=1.3)
            end = hi
        if len(sub) > 1:
            ax.plot(sub["_acc"], [ypos] * len(sub), ls="", marker="o", ms=5, mfc="white", mec="black", zorder=4)
        n = range_text(D.n_eval_images(r) for _, r in sub.iterrows())
        runs = f" x {len(sub)} runs" if len(sub) > 1 else ""
        ax.annotate(f"{mean:.0f}%  (n={n}{runs})", (end, ypos), xytext=(5, 0), textcoords="offset points",
                    va="center", fontsize=8.5)
    names = {D._hashable(v): D.short_spec(v) for v in frame[group_col]}
    ax.set_yticks(range(len(groups)))
    ax.set_yticklabels([wrap(names.get(g, g)) for g in groups])
    ax.set_ylim(len(groups) - 0.5, -0.5)
    return [Patch(facecolor=palette[h], edgecolor="black", lw=0.6, hatch=HATCHES[i % len(HATCHES)], label=h)
            for i, h in enumerate(hues) if h]


def classifier_comparison(data: D.StoreData, opts: DrawOptions) -> list[Panel]:
    require_columns(data.cells, D.CLASSIFIER, D.ACC, D.METRIC_JUDGE)
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
        handles = _hbars(ax, sub, D.CLASSIFIER, D.group_key(sub, hue_cols))
        base = plain_baseline(ax, sub, vertical=True)
        ax.set_xlim(0, 118)  # room for the labels at the end of the bars
        ax.set_xticks(range(0, 101, 20))
        ax.xaxis.set_major_formatter(PercentFormatter(100, decimals=0))
        ax.set_xlabel("judge top-1 accuracy (%)")
        ax.set_ylabel("classifier that guided training")
        ax.set_title(f"judge: {D.short_spec(judge)}", loc="left")
        ax.legend(handles=handles + ([base] if base else []), loc="lower right",
                  frameon=True, title=", ".join(D.setting_name(c) for c in hue_cols) or None, fontsize=8.5)
    fig.suptitle("Which classifier should guide the token? Judge accuracy per guiding classifier")
    caption = ("Judge top-1 accuracy of images generated with tokens trained under each guiding classifier, best on "
               "top; whiskers: bootstrap 95% CI; n: images behind a bar (dots: single runs when a bar averages "
               "repeats); dashed: the plain prompt with its CI. The judge is the same within a panel.")
    return [Panel("classifier-comparison", fig, "Classifier comparison", caption)]


