"""The classifier comparison: judge accuracy per guiding classifier, one panel per judge, bars with
bootstrap 95% CIs (from the stored _lo/_hi columns), the plain prompt's accuracy as a dashed reference."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from bench.figures import data as D
from bench.figures.panel import DrawOptions, Panel, Skip, plain_baseline_x, range_text, require_columns, wrap
from bench.figures.style import HATCHES, style_of


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
        style = style_of(h)
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
            n = range_text(D.n_eval_images(r) for _, r in sub.iterrows())
            runs = f" x {len(sub)} runs" if len(sub) > 1 else ""
            ax.annotate(f"{mean:.0f}%  (n={n}{runs})", (end, ypos), xytext=(5, 0), textcoords="offset points",
                        va="center", fontsize=8.5)
    names = {D._hashable(v): D.short_spec(v) for v in frame[group_col]}
    ax.set_yticks(range(len(groups)))
    ax.set_yticklabels([wrap(names.get(g, g)) for g in groups])
    ax.set_ylim(len(groups) - 0.5, -0.5)


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
        _hbars(ax, sub, D.CLASSIFIER, D.group_key(sub, hue_cols))
        base = plain_baseline_x(ax, sub)
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


