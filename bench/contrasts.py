"""Paired contrasts between the cells of a grid: each level of an axis against the axis's baseline level.

"Does full-depth backprop beat depth 1?" is a question about a difference, and the two cells share
almost everything: the classes, the training seeds of their runs and the evaluation seeds. The
difference is therefore computed image by image from the stored outcomes (metric `outcomes` of the dct
cell), with one hierarchical bootstrap draw applied to both cells (dct.eval.hierarchical), which is
far tighter than comparing two separate intervals. A level is contrasted with the cell that has the
baseline level (the spec's `baseline`, else the axis's first value) and equal values on every other
axis. Quality-neutral axes are not contrasted (their cells share one training by construction).
"""

from __future__ import annotations

import json

import pandas as pd

from bench import columns as C
from bench.shared import MEASURE, json_or

OUTCOMES = C.metric_col("outcomes")
COLUMNS = ("axis", "level", "baseline", "others", "diff", "lo", "hi", "level_acc", "baseline_acc", "n_classes",
           "n_runs", "n_images_per_run", "covers", "cell", "baseline_cell")


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def quality_rows(cells: pd.DataFrame) -> pd.DataFrame:
    """The ok rows that trained (not cost rows, whose joined outcomes are their quality cell's)."""
    if cells.empty or OUTCOMES not in cells.columns:
        return cells.iloc[0:0]
    rows = cells[(cells[C.STATUS] == C.STATUS_OK) & cells[OUTCOMES].notna()]
    if MEASURE in rows.columns:
        rows = rows[rows[MEASURE] != "cost"]
    return rows


def contrasts(cells: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per (axis, level, setting of the other axes): the paired difference level - baseline."""
    from dct.eval.hierarchical import paired_difference

    rows = quality_rows(cells)
    out = []
    if rows.empty or C.SPEC_AXES not in rows.columns:
        return pd.DataFrame(columns=COLUMNS)
    first = rows.iloc[0]
    axes = json_or(first.get(C.SPEC_AXES), {})
    baseline = json_or(first.get(C.SPEC_BASELINE), {})
    neutral = set(json_or(first.get(C.SPEC_QUALITY_NEUTRAL), []))
    configs = [json_or(v, {}) for v in rows[C.CONFIG_JSON]]
    stored = [json_or(v, {}) for v in rows[OUTCOMES]]
    for axis, values in axes.items():
        if axis in neutral or len(values) < 2 or axis not in baseline:
            continue
        others = [a for a in axes if a != axis and a not in neutral]
        for i, cfg in enumerate(configs):
            if _same(cfg.get(axis), baseline[axis]):
                continue
            match = [j for j, other in enumerate(configs) if _same(other.get(axis), baseline[axis])
                     and all(_same(other.get(a), cfg.get(a)) for a in others)]
            if not match:
                continue
            j = match[0]
            a, b = stored[i], stored[j]
            if not all(_same(a.get(k), b.get(k)) for k in ("classes", "eval_seeds", "train_seeds")):
                continue  # not the same classes, runs and images: no paired contrast
            r = paired_difference(unpack(a["token"]), unpack(b["token"]), n_boot=n_boot, seed=seed)
            out.append({"axis": axis, "level": cfg.get(axis), "baseline": baseline[axis],
                        "others": ", ".join(f"{o}={cfg.get(o)}" for o in others),
                        "diff": r["diff"], "lo": r["lo"], "hi": r["hi"], "level_acc": r["a"], "baseline_acc": r["b"],
                        "n_classes": r["n_classes"], "n_runs": r["n_runs"], "n_images_per_run": r["n_images_per_run"],
                        "covers": r["covers"], "cell": rows.iloc[i][C.CONFIG_HASH],
                        "baseline_cell": rows.iloc[j][C.CONFIG_HASH]})
    return pd.DataFrame(out, columns=COLUMNS)


def verdict(row) -> str:
    if row["lo"] > 0:
        return "higher"
    if row["hi"] < 0:
        return "lower"
    return "no difference shown"


def render(frame: pd.DataFrame, *, title: str | None = None):
    """The contrasts as an 80-column rich table."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, show_edge=False,
                  collapse_padding=True)
    table.add_column("contrast", ratio=1, overflow="fold", min_width=16)
    for heading in ("diff [95% CI]", "n", "reads"):
        table.add_column(heading, no_wrap=True, justify="right" if heading != "reads" else "left")
    for _, r in frame.iterrows():
        name = f"{r['axis']} {r['level']} - {r['baseline']}" + (f" ({r['others']})" if r["others"] else "")
        table.add_row(name, f"{100 * r['diff']:+.1f} [{100 * r['lo']:+.1f}, {100 * r['hi']:+.1f}]",
                      f"{r['n_classes']}x{r['n_runs']}x{r['n_images_per_run']}", verdict(r))
    return table


def caption(frame: pd.DataFrame) -> str:
    if frame.empty:
        return ""
    r = frame.iloc[0]
    return (f"Paired differences in judge accuracy (points), level minus baseline, on the same "
            f"{r['n_classes']} classes x {r['n_runs']} training runs x {r['n_images_per_run']} evaluation "
            f"seeds; 95% CI by a hierarchical bootstrap over {r['covers']}.")


def pack(outcomes) -> list[list[str]]:
    """(C, R, S) 0/1 as C lists of R strings of S characters: compact in a store column, exact."""
    return [["".join("1" if v else "0" for v in run) for run in cls] for cls in outcomes]


def unpack(packed) -> "np.ndarray":
    import numpy as np

    return np.array([[[c == "1" for c in run] for run in cls] for cls in packed], dtype=np.float64)
