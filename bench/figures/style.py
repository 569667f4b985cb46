"""The look shared by every figure: the theme (rc parameters), seaborn's colour-blind palette, and the
colour and marker of each hue level (a checkpointing mode, a guiding-classifier setting), so that lines
differ in grey-scale print too."""

from __future__ import annotations

import pandas as pd
import seaborn as sns

from bench.figures import data as D

PALETTE = sns.color_palette("colorblind")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<")
HATCHES = ("", "//", "..", "xx", "\\\\", "++")  # bars of different hue differ in grey-scale too
FAIL_COLOR = "#333333"
PLAIN_COLOR = "#555555"
HIGHLIGHT = "black"  # front, diagonal, token rows: never one of the palette's line colours
PANEL = (5.6, 4.0)  # inches per facet panel
FACET_COLS = 3
RC = {
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


def hue_order(cells: pd.DataFrame) -> tuple[str | None, list[str]]:
    if D.CHECKPOINTING in cells.columns and cells[D.CHECKPOINTING].notna().any():
        return D.CHECKPOINTING, D.checkpointing_order(cells[D.CHECKPOINTING].dropna().astype(str))
    return None, [""]


def hue_values(frame: pd.DataFrame, hue_col: str | None) -> pd.Series:
    if hue_col is None:
        return pd.Series([""] * len(frame), index=frame.index)
    return frame[hue_col].astype(str)


def hue_styles(levels: list[str]) -> tuple[dict, dict]:
    """(palette, markers): level -> colour and level -> marker, in the order given, for seaborn's
    hue= and style= (palette=, markers=) and for the marks drawn by hand beside them (CIs, legends),
    so that a level has one look in every panel even where some levels are missing."""
    palette = dict(zip(levels, sns.color_palette(PALETTE, len(levels))))
    markers = {level: MARKERS[i % len(MARKERS)] for i, level in enumerate(levels)}
    return palette, markers

