"""Quality shared across a quality-neutral axis: one training, joined onto the cells that only measured cost.

A spec may declare axes that cannot change the trained token (`quality_neutral = ["checkpointing"]`,
bench.spec). The cell at the axis's first value trains and judges (the quality cell); the others run only
the timed probe steps (`measure = "cost"`). Loading a store joins the quality columns of the quality cell
onto each cost row with the same quality key (the config without the neutral axes and `measure`), and
names where they came from (QUALITY_FROM).

The sharing is checked, not assumed: every cell, quality or cost, runs the same probe (the first steps
of the same training run) and stores its trajectory (losses and the token's change). A cost cell whose
probe differs from its quality cell's beyond float noise did NOT train the same token: it gets no quality
columns, SHARED_CHECK says why, and the grid runner fails loudly (`mismatches`).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from dct.config import config_hash

from bench import columns as C

MEASURE = C.metric_col("measure")
PROBE_DELTA = C.metric_col("probe_delta")
PROBE_LOSSES = C.metric_col("probe_losses")
# Recomputation reorders float operations (and GPU kernels are not bitwise deterministic): the probes of
# one token agree to ~1e-6 relative on a CPU; a different token differs by O(1).
TOLERANCE = 1e-3
_OWN = {MEASURE, PROBE_DELTA, PROBE_LOSSES, C.metric_col("probe_class"), C.metric_col("probe_steps")}


def json_or(value, default):
    """JSON text parsed, or `default` when it is missing or not JSON (a store column may be empty)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return default
    return default


def quality_key(row) -> str | None:
    """The hash of a row's config without its quality-neutral axes and `measure`: equal for the cells that
    share one training."""
    neutral = json_or(row.get(C.SPEC_QUALITY_NEUTRAL), [])
    config = json_or(row.get(C.CONFIG_JSON), None)
    if not neutral or not isinstance(config, dict):
        return None
    return config_hash({k: v for k, v in config.items() if k not in neutral and k != "measure"})


def probe_difference(a, b) -> float | None:
    """Relative difference of two probes (token change and losses); None when either has none."""
    da, db = json_or(a.get(PROBE_DELTA), None), json_or(b.get(PROBE_DELTA), None)
    la, lb = json_or(a.get(PROBE_LOSSES), None), json_or(b.get(PROBE_LOSSES), None)
    if da is None or db is None or la is None or lb is None:
        return None
    if len(da) != len(db) or len(la) != len(lb):
        return float("inf")
    da, db, la, lb = (np.asarray(x, dtype=np.float64) for x in (da, db, la, lb))
    delta = np.linalg.norm(da - db) / max(np.linalg.norm(da), 1e-12)
    losses = np.max(np.abs(la - lb) / np.maximum(np.abs(la), 1e-12)) if len(la) else 0.0
    return float(max(delta, losses))


def join(cells: pd.DataFrame) -> pd.DataFrame:
    """Cost rows get their quality cell's metric columns (those they lack), QUALITY_FROM and SHARED_CHECK."""
    if cells.empty or MEASURE not in cells.columns or C.SPEC_QUALITY_NEUTRAL not in cells.columns:
        return cells
    cells = cells.copy()
    keys = cells.apply(quality_key, axis=1)
    ok = cells[C.STATUS] == C.STATUS_OK
    is_cost = cells[MEASURE] == "cost"
    sources = {k: i for i, k in keys[ok & ~is_cost].items() if k is not None}
    metric_cols = [c for c in cells.columns if c.startswith(C.METRIC_PREFIX) and c not in _OWN]
    cells[C.QUALITY_FROM] = None
    cells[C.SHARED_CHECK] = None
    cells[C.QUALITY_FROM] = cells[C.QUALITY_FROM].astype(object)
    cells[C.SHARED_CHECK] = cells[C.SHARED_CHECK].astype(object)
    for i in cells.index[ok & is_cost]:
        src = sources.get(keys[i])
        if src is None:
            cells.at[i, C.SHARED_CHECK] = "missing: the quality cell has not run (or failed)"
            continue
        diff = probe_difference(cells.loc[i], cells.loc[src])
        if diff is None or diff > TOLERANCE:
            cells.at[i, C.SHARED_CHECK] = (f"mismatch: probe differs from {cells.at[src, C.CONFIG_HASH]}'s by "
                                           f"{diff if diff is not None else 'unknown'} (> {TOLERANCE:g}): "
                                           "this axis changed the token; its quality was NOT shared")
            continue
        for col in metric_cols:
            value = cells.at[i, col]
            if value is None or (isinstance(value, float) and np.isnan(value)):
                cells.at[i, col] = cells.at[src, col]
        cells.at[i, C.QUALITY_FROM] = f"{cells.at[src, C.CONFIG_HASH]}/{cells.at[src, C.ATTEMPT_ID]}"
        cells.at[i, C.SHARED_CHECK] = f"ok (probe difference {diff:.1e})"
    return cells


def mismatches(cells: pd.DataFrame) -> list[str]:
    """One line per cost cell whose probe disagrees with its quality cell's."""
    if C.SHARED_CHECK not in cells.columns:
        return []
    bad = cells[cells[C.SHARED_CHECK].fillna("").str.startswith("mismatch")]
    return [f"{r[C.CONFIG_HASH]} {r[C.LABEL]}: {r[C.SHARED_CHECK]}" for _, r in bad.iterrows()]
