"""Tidy views of a result store for the figures and the report: which settings vary, depth as a number,
classifier names a reader can read, the accuracy-by-evaluator table of the transfer experiment.

Nothing here draws; everything takes the frames of `bench.store.load_cells` / `load_curves`, so the
figures can be checked on any store, including ones whose cells never ran the DCT cell.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from dct.errors import DCTError

from bench import columns as C
from bench.columns import eval_key  # noqa: F401  (re-exported: figures use it by this name)
from bench.store import CELLS_DIR, load_cells, load_curves

DEPTH = C.config_col("depth")
CHECKPOINTING = C.config_col("checkpointing")
CLASSIFIER = C.config_col("classifier")
JUDGE = C.config_col("judge")
EVAL_CLASSIFIERS = C.config_col("eval_classifiers")
SEED_COLS = (C.config_col("seed"),)
# Order of the checkpointing modes in legends: from no recomputation to the most (dct.rollout).
CHECKPOINTING_ORDER = ("none", "block", "step", "both")

ACC = C.metric_col("acc")
PLAIN_ACC = C.metric_col("plain_acc")
METRIC_JUDGE = C.metric_col("judge")
N_CLASSES = C.metric_col("n_classes")
EVAL_PER_CLASS = C.metric_col("eval_images_per_class")
EVAL_IMAGES = C.metric_col("eval_images")
UNET_CALLS = C.metric_col("unet_calls")
GRAD_CALLS = C.metric_col("grad_calls")
EPOCHS_MEAN = C.metric_col("epochs_mean")
IMAGES_TO_THRESHOLD = C.metric_col("images_to_threshold_mean")
THRESHOLD_REACHED = C.metric_col("threshold_reached")

# Derived columns (never in a store): depth as a number ("full" resolved to its UNet-call count) and as tick text.
DEPTH_X = "_depth_x"
DEPTH_TEXT = "_depth_text"
FULL_DEPTHS = ("full", "all")
# Eval-classifier accuracy columns: metric_acc[<key>], metric_acc[<key>]_lo/_hi, metric_plain_acc[<key>] ...
_EVAL_COL = re.compile(r"^metric_acc\[(?P<key>.+)\]$")


@dataclass
class StoreData:
    path: Path
    name: str
    cells: pd.DataFrame  # current row of every cell (all statuses), with DEPTH_X / DEPTH_TEXT when there is a depth
    curves: pd.DataFrame  # per-epoch rows of the current attempts

    def __post_init__(self):
        from bench.store import with_cost_peak

        self.cells = with_cost_peak(self.cells)

    @property
    def ok(self) -> pd.DataFrame:
        return self.cells[self.cells[C.STATUS] == C.STATUS_OK]


def resolve_store(store: str | Path) -> Path:
    """A store folder, or an experiment name under ./results (as `dct results show` accepts)."""
    store = Path(store)
    if not (store / CELLS_DIR).is_dir() and (Path("results") / store / CELLS_DIR).is_dir():
        store = Path("results") / store
    if not (store / CELLS_DIR).is_dir():
        raise DCTError(f"{store} is not a result store (no {CELLS_DIR}/ folder in it)")
    return store


def load_store(store: str | Path) -> StoreData:
    path = resolve_store(store)
    cells = load_cells(path)
    if not cells.empty and DEPTH in cells.columns:
        cells = add_depth(cells)
    return StoreData(path=path, name=path.resolve().name, cells=cells, curves=load_curves(path))


# --- depth -------------------------------------------------------------------------------------------


def _is_full(value) -> bool:
    return isinstance(value, str) and value.strip().lower() in FULL_DEPTHS


def _as_number(value) -> float | None:
    if value is None or _is_full(value):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def add_depth(cells: pd.DataFrame) -> pd.DataFrame:
    """DEPTH_X and DEPTH_TEXT. "full" means every UNet call of the rollout, so it is placed at that count
    (metric grad_calls of the cell, else its unet_calls, else the largest count any cell reported); a
    failed "full" cell with no count anywhere goes one step past the deepest numeric depth."""
    cells = cells.copy()
    counts = []
    for col in (GRAD_CALLS, UNET_CALLS):
        if col in cells.columns:
            counts.append(pd.to_numeric(cells[col], errors="coerce"))
    own = counts[0].fillna(counts[1]) if len(counts) == 2 else (counts[0] if counts else None)
    known_full = own[cells[DEPTH].map(_is_full)].dropna() if own is not None else pd.Series(dtype=float)
    numeric = [n for n in cells[DEPTH].map(_as_number) if n is not None]
    fallback = (known_full.max() if not known_full.empty
                else (max(own.dropna()) if own is not None and own.notna().any() else None))
    if fallback is None or (numeric and fallback <= max(numeric)):
        fallback = (max(numeric) * 2 if numeric else 1.0) if fallback is None else fallback

    xs, texts = [], []
    for i, value in enumerate(cells[DEPTH]):
        if _is_full(value):
            n = own.iloc[i] if own is not None and not pd.isna(own.iloc[i]) else fallback
            xs.append(float(n))
            texts.append(f"full ({n:g})")
        else:
            n = _as_number(value)
            xs.append(n if n is not None else math.nan)
            texts.append(f"{n:g}" if n is not None else str(value))
    cells[DEPTH_X] = xs
    cells[DEPTH_TEXT] = texts
    return cells


# --- settings that vary ------------------------------------------------------------------------------


def _hashable(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "None"
    return str(value)


def varying_settings(cells: pd.DataFrame, *, exclude=()) -> list[str]:
    """cfg_* columns with more than one value among these rows (seeds left out: repeats are not settings;
    `measure` too: a cost cell of a quality-neutral axis shows the quality of the cell it shares)."""
    skip = set(exclude) | set(SEED_COLS) | {C.config_col("measure")}
    out = []
    for col in cells.columns:
        if col.startswith(C.CONFIG_PREFIX) and col not in skip:
            if cells[col].map(_hashable).nunique() > 1:
                out.append(col)
    return out


def setting_name(col: str) -> str:
    return col[len(C.CONFIG_PREFIX):] if col.startswith(C.CONFIG_PREFIX) else col


def short_value(col: str, value) -> str:
    if col in (CLASSIFIER, JUDGE) or (isinstance(value, str) and ":" in value and "/" in value):
        return short_spec(value)
    if isinstance(value, float) and value.is_integer():
        return f"{value:g}"
    text = _hashable(value)
    return text if len(text) <= 40 else text[:39] + "…"


def short_label(label, drop=()) -> str:
    """A cell label with classifier folders shortened ('classifier=timm:/a/b/clf1' -> 'classifier=timm:clf1')
    and the settings in `drop` (cfg_ columns) left out."""
    dropped = {setting_name(c) for c in drop}
    parts = []
    for part in str(label).split(" "):
        name, sep, value = part.partition("=")
        if sep and name in dropped:
            continue
        parts.append(f"{name}={short_spec(value)}" if sep and "/" in value else part)
    return " ".join(parts)


def settings_text(row, cols, sep: str = ", ") -> str:
    """'precision=fp16, arch=sd15' for the given cfg_ columns of one row."""
    return sep.join(f"{setting_name(c)}={short_value(c, row[c])}" for c in cols)


# Short names for the settings that label points, so that a label fits on one line.
_ABBREV = {"depth": "d", "checkpointing": "ckpt", "precision": "", "classifier": "", "batch": "b",
           "rollout_batch": "b", "arch": "", "resolution": "res"}


def compact_settings(row, cols) -> str:
    """'d=4 ckpt=block fp16': settings_text for labels next to points."""
    parts = []
    for c in cols:
        name = setting_name(c)
        short = _ABBREV.get(name, name)
        value = short_value(c, row[c])
        parts.append(f"{short}={value}" if short else value)
    return " ".join(parts)


def group_key(frame: pd.DataFrame, cols) -> pd.Series:
    if not cols:
        return pd.Series([""] * len(frame), index=frame.index)
    return frame.apply(lambda r: settings_text(r, cols), axis=1)


def checkpointing_order(values) -> list[str]:
    values = [str(v) for v in dict.fromkeys(values)]
    known = [m for m in CHECKPOINTING_ORDER if m in values]
    return known + sorted(v for v in values if v not in known)


# --- classifiers -------------------------------------------------------------------------------------


def _short_target(target: str) -> str:
    # Local folders and files are named by their last path parts; hub ids ("google/vit-...") stay whole.
    if target.startswith(("/", "./", "../", "~")) or "\\" in target:
        parts = [p for p in re.split(r"[\\/]", target) if p]
        return parts[-1] if parts else target
    return target


def short_spec(spec) -> str:
    """A classifier spec as a reader wants it: 'timm:/runs/x/clf0' -> 'timm:clf0', an ensemble as
    'ensemble(a + b)', the default of the tiny world (None) as 'default guide'."""
    if spec is None or (isinstance(spec, float) and math.isnan(spec)):
        return "default guide"
    spec = str(spec)
    family, sep, target = spec.partition(":")
    if not sep:
        return _short_target(spec)
    if family == "ensemble":
        members = re.split(r",\s*(?=[A-Za-z][\w-]*:)", target)
        return "ensemble(" + " + ".join(short_spec(m) for m in members) + ")"
    if family == "world":
        return target
    weights = ""
    if "@" in target:
        target, _, w = target.partition("@")
        weights = "@" + _short_target(w)
    return f"{family}:{_short_target(target)}{weights}"


def eval_keys(cells: pd.DataFrame) -> list[str]:
    return [m["key"] for col in cells.columns if (m := _EVAL_COL.match(col))]


def eval_key_names(cells: pd.DataFrame) -> dict[str, str]:
    """key -> short classifier name, from the cells' eval_classifiers settings (the key alone loses '/')."""
    names: dict[str, str] = {}
    if EVAL_CLASSIFIERS in cells.columns:
        for value in cells[EVAL_CLASSIFIERS].dropna():
            try:
                specs = json.loads(value) if isinstance(value, str) else list(value)
            except (TypeError, ValueError):
                continue
            for spec in specs:
                names.setdefault(eval_key(str(spec)), short_spec(spec))
    for key in eval_keys(cells):
        names.setdefault(key, key)
    return names


def judge_name(cells: pd.DataFrame) -> str | None:
    for col in (METRIC_JUDGE, JUDGE):
        if col in cells.columns and cells[col].notna().any():
            values = sorted({short_spec(v) for v in cells[col].dropna()})
            return " / ".join(values)
    return None


# --- other helpers -----------------------------------------------------------------------------------


def pareto_front(x, y) -> list[bool]:
    """Points no other point beats: lower-or-equal x (memory) and higher-or-equal y (accuracy), one strictly."""
    pts = list(zip(x, y))
    front = []
    for i, (xi, yi) in enumerate(pts):
        dominated = any((xj <= xi and yj >= yi) and (xj < xi or yj > yi) for j, (xj, yj) in enumerate(pts) if j != i)
        front.append(not dominated)
    return front


def timed_steps(row) -> list[float]:
    """The step times after the warm-up steps (those the median is taken over)."""
    raw = row.get(C.STEP_TIMES_S) if hasattr(row, "get") else None
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return []
    try:
        times = json.loads(raw) if isinstance(raw, str) else list(raw)
    except (TypeError, ValueError):
        return []
    warm = row.get(C.WARMUP_STEPS)
    warm = int(warm) if warm is not None and not pd.isna(warm) else 0
    return [float(t) for t in (times[warm:] if len(times) > warm else times)]


def n_eval_images(row) -> int | None:
    """Generated images behind one accuracy value (classes x images per class)."""
    for col in (EVAL_IMAGES,):
        v = row.get(col)
        if v is not None and not pd.isna(v):
            return int(v)
    per, n = row.get(EVAL_PER_CLASS), row.get(N_CLASSES)
    if per is not None and n is not None and not pd.isna(per) and not pd.isna(n):
        return int(per) * int(n)
    return None


def memory_unit(max_bytes: float) -> tuple[float, str]:
    return (2.0**30, "GiB") if max_bytes >= 2**30 else (2.0**20, "MiB")


def memory_kind(cells: pd.DataFrame) -> str:
    """What the peak-memory column measured on these rows (bench.measure)."""
    devices = set(cells[C.DEVICE].dropna().astype(str)) if C.DEVICE in cells.columns else set()
    cuda = any(d.startswith("cuda") for d in devices)
    cpu = any(d == "cpu" for d in devices)
    if cuda and cpu:
        return "CUDA allocated / CPU RSS"
    return "CUDA allocated" if cuda else ("CPU RSS" if cpu else "")


def device_memory_bytes(cells: pd.DataFrame) -> float | None:
    """Total memory of the GPU the cells ran on, read from DEVICE_NAME ('NVIDIA H100 ..., 79.1 GiB, CUDA
    12.8'); None on CPU or when the cells ran on GPUs of different sizes."""
    if C.DEVICE_NAME not in cells.columns or C.DEVICE not in cells.columns:
        return None
    cuda = cells[cells[C.DEVICE].astype(str).str.startswith("cuda")]
    sizes = {float(m.group(1)) for name in cuda[C.DEVICE_NAME].dropna().astype(str)
             if (m := re.search(r"([\d.]+) GiB", name))}
    return sizes.pop() * 2**30 if len(sizes) == 1 else None


def failed_status_text(status: str) -> str:
    return {C.STATUS_OOM: "OOM", C.STATUS_PREDICTED_OOM: "OOM (predicted)"}.get(status, str(status))
