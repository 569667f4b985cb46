"""Rich tables of store rows: the runner's end-of-grid summary and `dct results show`."""

from __future__ import annotations

import math
from typing import Iterable

import pandas as pd
from rich.table import Table
from rich.text import Text

from dct.errors import ConfigError

from bench import columns as C

SUMMARY_COLUMNS = (C.CONFIG_HASH, C.LABEL, C.STATUS, C.WALL_S, C.STEP_TIME_MEDIAN_S, C.COST_PEAK_BYTES)
_LONG_TEXT = {C.ERROR, C.TRACEBACK, C.CONFIG_JSON, C.STEP_TIMES_S}
_STATUS_STYLE = {C.STATUS_OK: "green", C.STATUS_ERROR: "red", C.STATUS_OOM: "magenta",
                 C.STATUS_KILLED: "red", C.STATUS_TIMEOUT: "yellow",
                 C.STATUS_PREDICTED_OOM: "magenta"}


def default_columns(frame: pd.DataFrame) -> list[str]:
    """The summary columns, then every metric, then the error (when some row has one)."""
    cols = [c for c in SUMMARY_COLUMNS if c in frame.columns]
    cols += [c for c in frame.columns if c.startswith(C.METRIC_PREFIX)]
    if C.ERROR in frame.columns and frame[C.ERROR].notna().any():
        cols.append(C.ERROR)
    return cols


# The summary a terminal shows by default: what a reader compares across cells, in 80 columns. Each
# entry is (heading, formatter of one row or None when the store lacks its columns).
def _mib(row, col=C.COST_PEAK_BYTES) -> str:
    v = row.get(col)
    return "-" if _missing(v) else (f"{v / 2**30:.1f} GiB" if v >= 10 * 2**30 else f"{v / 2**20:.0f} MiB")


def _num(v, fmt: str = "{:.2f}") -> str:
    return "-" if _missing(v) else fmt.format(v)


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _acc_ci(row) -> str:
    acc, lo, hi = (row.get(C.metric_col(k)) for k in ("acc", "acc_lo", "acc_hi"))
    if _missing(acc):
        return "-"
    return f"{acc:.2f}" if _missing(lo) or _missing(hi) else f"{acc:.2f} [{lo:.2f}, {hi:.2f}]"


SUMMARY_VIEW = (
    ("label", C.LABEL, lambda r: str(r.get(C.LABEL, ""))),
    ("status", C.STATUS, lambda r: str(r.get(C.STATUS, ""))),
    ("peak mem", C.COST_PEAK_BYTES, _mib),
    ("s/step", C.STEP_TIME_MEDIAN_S, lambda r: _num(r.get(C.STEP_TIME_MEDIAN_S))),
    ("acc [95% CI]", C.metric_col("acc"), _acc_ci),
    ("plain", C.metric_col("plain_acc"), lambda r: _num(r.get(C.metric_col("plain_acc")))),
    ("FID", C.metric_col("fid"), lambda r: _num(r.get(C.metric_col("fid")), "{:.1f}")),
)
SUMMARY_WIDTH = 80


def render_summary(frame: pd.DataFrame, *, title: str | None = None, extra: tuple[str, ...] = ()) -> Table:
    """The curated view (label, status, peak memory, s/step, accuracy [CI], plain, FID), made to fit 80
    columns: only the label wraps (at spaces), the numbers never do. `dct results show --all` has every
    column, `--json` everything. A kind without accuracy shows its first few numeric metrics instead."""
    from rich import box

    view = [(h, f) for h, col, f in SUMMARY_VIEW if col in frame.columns]
    if C.metric_col("acc") not in frame.columns:  # another cell kind: its own headline numbers
        numeric = [c for c in frame.columns if c.startswith(C.METRIC_PREFIX)
                   and pd.api.types.is_numeric_dtype(frame[c]) and frame[c].dtype != bool][:3]
        view += [(c[len(C.METRIC_PREFIX):], lambda r, c=c: _num(r.get(c), "{:.4g}")) for c in numeric]
    if C.SUPERSEDED in extra and C.SUPERSEDED in frame.columns:
        view.append(("old", lambda r: "yes" if r.get(C.SUPERSEDED) is True else ""))
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, show_edge=False,
                  collapse_padding=True)
    for heading, _ in view:
        if heading == "label":
            table.add_column(heading, ratio=1, overflow="fold", min_width=12)
        else:
            table.add_column(heading, no_wrap=True, justify="left" if heading == "status" else "right")
    for _, row in frame.iterrows():
        cells = []
        for heading, fmt in view:
            text = fmt(row)
            cells.append(Text(text, style=_STATUS_STYLE.get(text, "")) if heading == "status" else Text(text))
        table.add_row(*cells)
    return table


def render_records(frame: pd.DataFrame, *, title: str | None = None) -> Table:
    """Every column of every row, one row after another as `column  value` lines: all of it, readable in
    any width (a table of ~100 columns is not)."""
    from rich import box

    table = Table(title=title, box=box.SIMPLE_HEAD, show_header=False, pad_edge=False, show_edge=False)
    table.add_column("column", no_wrap=True, style="bold")
    table.add_column("value", overflow="fold")
    for i, (_, row) in enumerate(frame.iterrows()):
        if i:
            table.add_section()
        for col in frame.columns:
            if not _missing(row[col]):
                table.add_row(col, Text(str(row[col])))
    return table


def resolve_columns(frame: pd.DataFrame, wanted: Iterable[str]) -> list[str]:
    """Names as given, or without their prefix (`accuracy` -> metric_accuracy, `depth` -> cfg_depth)."""
    out = []
    for name in wanted:
        for candidate in (name, C.metric_col(name), C.config_col(name), C.version_col(name)):
            if candidate in frame.columns:
                out.append(candidate)
                break
        else:
            raise ConfigError(f"--columns: no column {name!r} in this store; columns: {sorted(frame.columns)}")
    return out


def _format(column: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if column.endswith("_bytes") and isinstance(value, (int, float)):
        return f"{value / 2**30:.2f} GiB" if value >= 2**30 else f"{value / 2**20:.0f} MiB"
    if column.endswith("_s") and isinstance(value, (int, float)):
        return f"{value:.3g} s"
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    limit = 40 if column in _LONG_TEXT else 80  # --json shows them whole
    return text if len(text) <= limit else text[:limit - 1] + "…"


def render(frame: pd.DataFrame, columns: list[str] | None = None, *, title: str | None = None) -> Table:
    columns = columns or default_columns(frame)
    table = Table(title=title, show_lines=False)
    for col in columns:
        justify = "right" if pd.api.types.is_numeric_dtype(frame[col]) and frame[col].dtype != bool else "left"
        if col in (C.CONFIG_HASH, C.STATUS):
            table.add_column(col, justify=justify, no_wrap=True)
        else:
            table.add_column(col, justify=justify, overflow="fold", min_width=9)
    for _, row in frame.iterrows():
        # Text, not markup: an error message like "[Errno 12]" must print as it is.
        table.add_row(*(Text(_format(col, row[col]), style=_STATUS_STYLE.get(row[col], "") if col == C.STATUS else "")
                        for col in columns))
    return table
