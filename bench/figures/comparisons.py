"""The transfer matrix: accuracy of each guide's tokens under every evaluating classifier, as a seaborn
heatmap with the bootstrap 95% CI written in each cell."""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from bench import columns as C
from bench.figures import data as D
from bench.figures.panel import DrawOptions, Panel, Skip, range_text
from bench.figures.style import HIGHLIGHT


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
    n = range_text(D.n_eval_images(r) for _, r in ok.iterrows())
    caption = (f"Rows: the classifier that guided training (and the plain prompt, for reference); columns: the "
               f"classifier that scored the images, the judge last. Cell text: top-1 accuracy and its bootstrap "
               f"95% CI, n = {n} images per cell. Outlined: evaluated by the guide itself ({diagonal} cell(s)); the "
               "other cells of a row show how far the token's effect transfers.")
    return [Panel("transfer-matrix", fig, "Token transfer matrix", caption)]


