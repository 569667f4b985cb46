"""Rich tables of store rows: the runner's end-of-grid summary and `dct results show`."""

from __future__ import annotations

import math
from typing import Iterable

import pandas as pd
from rich.table import Table
from rich.text import Text

from dct.errors import ConfigError

from . import columns as C

SUMMARY_COLUMNS = (C.CONFIG_HASH, C.LABEL, C.STATUS, C.WALL_S, C.STEP_TIME_MEDIAN_S, C.PEAK_MEM_BYTES)
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
