"""Ablation specs: TOML files that say which cells a grid has. Everything is validated when the spec is
loaded, before any cell runs, and each error names the file, the table, the bad key or value and what
is accepted.

    [experiment]
    name = "depth"                 # required; the store defaults to results/<name> (relative to the cwd)
    cell = "dct"                   # required; a registered cell kind (bench.registry)
    description = "..."
    store = "results/depth"        # optional
    repeats = 3                    # optional: seeds fixed.seed (or 0), +1, +2 ... ; or seeds = [0, 7, 9]
    warmup_steps = 1               # optional: steps left out of the step-time median (default 1)
    timeout_per_cell = 3600        # optional, seconds (--timeout-per-cell overrides)
    quality_neutral = ["checkpointing"]  # optional: axes that cannot change what is trained (see below)
    baseline = { depth = 1 }       # optional: the level each axis is contrasted with (default: its first value)

    [fixed]                        # settings of every cell
    steps = 20

    [axes]                         # lists; the cells are their cartesian product, in file order
    depth = [1, 2, 4, "full"]
    precision = ["fp32", "fp16"]

    [[include]]                    # an extra explicit cell: [fixed] + these settings (not crossed with axes)
    label = "reference"            # optional; `label` is the one key that is not a setting
    depth = 2

    [[exclude]]                    # drop the product cells whose settings equal all of these
    depth = "full"
    precision = "fp16"

Quality-neutral axes: an axis whose values change memory and time but provably not the trained token
(checkpointing: recomputation, tests/core/test_rollout.py) need not retrain. The cells at the axis's
FIRST value train and judge; the others get `measure = "cost"` (the kind must have that setting): they
run only the timed probe steps, and the store joins the quality columns of the cell that trained onto
them (bench.shared), after checking that their probe trajectories agree with it.

A cell's config is the kind's validate(fixed + axis values + seed): the full config with defaults filled
in. Its identity is dct.config.config_hash of that config (passwords in URLs redacted first), so the same
settings written differently, or reached from two specs, are one cell. Duplicates are run once.
"""

from __future__ import annotations

import difflib
import itertools
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dct.config import config_hash
from dct.errors import ConfigError

from bench.provenance import file_hash, redact
from bench.registry import CellKind, get_cell

TABLES = ("experiment", "fixed", "axes", "include", "exclude")
EXPERIMENT_KEYS: dict[str, str] = {
    "name": "a string of letters, digits, '_', '-', '.'",
    "cell": "the name of a registered cell kind",
    "description": "a string",
    "store": "a folder path (string)",
    "repeats": "an integer >= 1",
    "seeds": "a non-empty list of integers",
    "warmup_steps": "an integer >= 0",
    "timeout_per_cell": "a number of seconds > 0",
    "quality_neutral": "a list of axis names whose values do not change the trained token",
    "baseline": "a table {axis = value} naming the level each axis is contrasted with",
}
MEASURE_KEY = "measure"
SEED_KEY = "seed"
LABEL_KEY = "label"
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True)
class Cell:
    config_hash: str
    label: str
    config: dict[str, Any]  # the full, validated config (what run() gets)
    origin: str  # "axes" or "include"
    values: dict[str, Any] = field(default_factory=dict)  # the settings that vary: axis values, include, seed


@dataclass
class Spec:
    name: str
    kind: str
    description: str
    store: Path
    path: Path | None
    spec_hash: str | None
    fixed: dict[str, Any]
    axes: dict[str, list]
    include: list[dict[str, Any]]
    exclude: list[dict[str, Any]]
    seeds: list[int] | None
    warmup_steps: int
    timeout_per_cell: float | None
    cells: dict[str, Cell]
    quality_neutral: list[str] = field(default_factory=list)
    baseline: dict[str, Any] = field(default_factory=dict)  # config_hash -> Cell, in expansion order


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_fmt(v) for v in value) + "]"
    return str(value)


def _did_you_mean(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def load_spec(path: str | Path, *, store: str | Path | None = None) -> Spec:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"spec file {str(path)!r} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return parse_spec(data, source=str(path), path=path, spec_hash=file_hash(path), store=store)


def parse_spec(data: dict, *, source: str = "<spec>", path: Path | None = None, spec_hash: str | None = None,
               store: str | Path | None = None) -> Spec:
    def fail(message: str) -> None:
        raise ConfigError(f"{source}: {message}")

    for table in data:
        if table not in TABLES:
            fail(f"unknown table [{table}]{_did_you_mean(table, TABLES)}; accepted tables: {list(TABLES)}")

    exp = data.get("experiment")
    if not isinstance(exp, dict):
        fail("missing [experiment] table (with at least name = ... and cell = ...)")
    for key in exp:
        if key not in EXPERIMENT_KEYS:
            fail(f"[experiment] unknown key {key!r}{_did_you_mean(key, EXPERIMENT_KEYS)}; "
                 f"accepted: {sorted(EXPERIMENT_KEYS)}")
    for key in ("name", "cell"):
        if key not in exp:
            fail(f"[experiment] {key} is missing: {EXPERIMENT_KEYS[key]}")

    def check(key: str, ok: bool) -> None:
        if key in exp and not ok:
            fail(f"[experiment] {key} = {exp[key]!r} is not accepted: {EXPERIMENT_KEYS[key]}")

    check("name", isinstance(exp.get("name"), str) and bool(_NAME.match(exp.get("name", ""))))
    check("cell", isinstance(exp.get("cell"), str))
    check("description", isinstance(exp.get("description"), str))
    check("store", isinstance(exp.get("store"), str) and bool(exp.get("store")))
    check("repeats", _is_int(exp.get("repeats")) and exp.get("repeats", 0) >= 1)
    check("seeds", isinstance(exp.get("seeds"), list) and bool(exp.get("seeds"))
          and all(_is_int(s) for s in exp.get("seeds", [])))
    check("warmup_steps", _is_int(exp.get("warmup_steps")) and exp.get("warmup_steps", -1) >= 0)
    check("timeout_per_cell", isinstance(exp.get("timeout_per_cell"), (int, float))
          and not isinstance(exp.get("timeout_per_cell"), bool) and exp.get("timeout_per_cell", 0) > 0)
    if "repeats" in exp and "seeds" in exp:
        fail("[experiment] give either repeats or seeds, not both")

    try:
        kind = get_cell(exp["cell"])
    except ConfigError as e:
        fail(f"[experiment] cell: {e}")

    def settings_table(name: str, value: Any, where: str) -> dict:
        if not isinstance(value, dict):
            fail(f"{where} must be a table of settings, got {type(value).__name__}")
        for key in value:
            if name == "include" and key == LABEL_KEY:
                continue
            if kind.keys is not None and key not in kind.keys:
                fail(f"{where} unknown setting {key!r}{_did_you_mean(key, kind.keys)} for cell kind "
                     f"{kind.name!r}; accepted: {sorted(kind.keys)}")
        return dict(value)

    fixed = settings_table("fixed", data.get("fixed", {}), "[fixed]")
    axes = settings_table("axes", data.get("axes", {}), "[axes]")
    for key, values in axes.items():
        if not isinstance(values, list):
            fail(f"[axes] {key} = {values!r} is not accepted: an axis is a list of values, e.g. {key} = [{values!r}]")
        if not values:
            fail(f"[axes] {key} is an empty list: give at least one value (or move it to [fixed])")
        if key in fixed:
            fail(f"{key!r} is both in [fixed] and [axes]: keep it in one of them")

    def table_list(name: str) -> list[dict]:
        value = data.get(name, [])
        if not isinstance(value, list):
            fail(f"[{name}] must be an array of tables: write [[{name}]]")
        return [settings_table(name, t, f"[[{name}]] #{i + 1}") for i, t in enumerate(value)]

    neutral = exp.get("quality_neutral", [])
    if not isinstance(neutral, list) or not all(isinstance(a, str) for a in neutral):
        fail(f"[experiment] quality_neutral = {neutral!r} is not accepted: {EXPERIMENT_KEYS['quality_neutral']}")
    for name in neutral:
        if name not in axes:
            fail(f"[experiment] quality_neutral names {name!r}, which is not an axis; axes: {sorted(axes)}")
    if neutral and kind.keys is not None and MEASURE_KEY not in kind.keys:
        fail(f"[experiment] quality_neutral needs a {MEASURE_KEY!r} setting, which cell kind {kind.name!r} "
             "does not have")
    baseline = exp.get("baseline", {})
    if not isinstance(baseline, dict):
        fail(f"[experiment] baseline = {baseline!r} is not accepted: {EXPERIMENT_KEYS['baseline']}")
    for name, value in baseline.items():
        if name not in axes or value not in axes[name]:
            fail(f"[experiment] baseline {name} = {value!r} is not accepted: "
                 + (f"one of the axis's values {axes[name]}" if name in axes else f"an axis; axes: {sorted(axes)}"))
    include = table_list("include")
    exclude = table_list("exclude")
    for i, inc in enumerate(include):
        if LABEL_KEY in inc and not isinstance(inc[LABEL_KEY], str):
            fail(f"[[include]] #{i + 1} label = {inc[LABEL_KEY]!r} is not accepted: a string")
    if not axes and not include:
        fail("nothing to run: add an [axes] table or an [[include]] cell")

    seeds: list[int] | None = None
    if "repeats" in exp or "seeds" in exp:
        if kind.keys is not None and SEED_KEY not in kind.keys:
            fail(f"[experiment] repeats/seeds need a {SEED_KEY!r} setting, which cell kind {kind.name!r} does not have")
        if SEED_KEY in axes:
            fail(f"[experiment] repeats/seeds and an axis {SEED_KEY!r} both set the seed: keep one")
        if "seeds" in exp:
            seeds = list(exp["seeds"])
        else:
            base = fixed.get(SEED_KEY, 0)
            if not _is_int(base):
                fail(f"[fixed] {SEED_KEY} = {base!r} is not accepted with repeats: an integer")
            seeds = [base + i for i in range(exp["repeats"])]

    cost_only = {name: axes[name][0] for name in neutral}  # cells off these values only measure cost
    cells = _expand(kind, fixed, axes, include, exclude, seeds, fail, cost_only)
    return Spec(name=exp["name"], kind=kind.name, description=exp.get("description", ""),
                store=Path(store) if store is not None else Path(exp.get("store", f"results/{exp['name']}")),
                path=path, spec_hash=spec_hash, fixed=fixed, axes=axes, include=include, exclude=exclude,
                seeds=seeds, warmup_steps=exp.get("warmup_steps", 1), timeout_per_cell=exp.get("timeout_per_cell"),
                cells=cells, quality_neutral=list(neutral),
                baseline={name: baseline.get(name, values[0]) for name, values in axes.items()})


def _expand(kind: CellKind, fixed: dict, axes: dict[str, list], include: list[dict], exclude: list[dict],
            seeds: list[int] | None, fail, cost_only: dict[str, Any] | None = None) -> dict[str, Cell]:
    drafts: list[tuple[str, str, dict]] = []  # (origin, label, values)
    used = [0] * len(exclude)
    if axes:
        names = list(axes)
        for combo in itertools.product(*(axes[n] for n in names)):
            values = dict(zip(names, combo))
            settings = {**fixed, **values}
            hits = [i for i, ex in enumerate(exclude) if all(k in settings and settings[k] == v for k, v in ex.items())]
            for i in hits:
                used[i] += 1
            if not hits:
                drafts.append(("axes", " ".join(f"{k}={_fmt(v)}" for k, v in values.items()), values))
    for i, ex in enumerate(exclude):
        if not used[i]:
            fail(f"[[exclude]] #{i + 1} {ex} matches no cell of the axes (check the values' types: 2 is not '2')")
    for i, inc in enumerate(include):
        values = {k: v for k, v in inc.items() if k != LABEL_KEY}
        label = inc.get(LABEL_KEY) or " ".join(f"{k}={_fmt(v)}" for k, v in values.items()) or f"include {i + 1}"
        drafts.append(("include", label, values))

    cells: dict[str, Cell] = {}
    for origin, label, values in drafts:
        for seed in seeds or [None]:
            raw = {**fixed, **values}
            if any(name in values and values[name] != first for name, first in (cost_only or {}).items()):
                raw[MEASURE_KEY] = "cost"
            cell_values = dict(values)
            cell_label = label
            if seed is not None:
                raw[SEED_KEY] = cell_values[SEED_KEY] = seed
                if len(seeds) > 1:
                    cell_label = f"{label} seed={seed}"
            for key, value in raw.items():
                if any(isinstance(v, float) and not math.isfinite(v)
                       for v in (value if isinstance(value, (list, tuple)) else [value])):
                    fail(f"cell {cell_label!r}: {key}={value!r} is not accepted: a finite number")
            try:
                config = kind.validate(dict(raw))
            except ConfigError as e:
                fail(f"cell {cell_label!r}: {e}")
            except (TypeError, ValueError) as e:  # a validate() that compared a value of the wrong type
                fail(f"cell {cell_label!r}: a setting has the wrong type ({e})")
            if not isinstance(config, dict):
                raise TypeError(f"validate() of cell kind {kind.name!r} returned {type(config).__name__}, not a dict")
            h = config_hash(redact(config))
            if h in cells:  # the same config reached twice (e.g. an include equal to a grid point): run once
                old = cells[h]
                if cell_label not in old.label.split(" | "):
                    cells[h] = Cell(h, f"{old.label} | {cell_label}", old.config, old.origin, old.values)
                continue
            cells[h] = Cell(h, cell_label, config, origin, cell_values)
    return cells


def check_cells(spec: Spec, cells: list[Cell]) -> None:
    """The kind's check on every cell (classifiers and files that must exist), before any cell runs."""
    from dct.errors import DCTError

    kind = get_cell(spec.kind)
    if kind.check is None:
        return
    for cell in cells:
        try:
            kind.check(cell.config)
        except DCTError as e:
            raise ConfigError(f"{spec.path or spec.name}: cell {cell.label!r}: {e}") from None


def select(spec: Spec, only: list[str] | tuple[str, ...] = ()) -> list[Cell]:
    """The cells matching any filter: a config-hash prefix (4+ hex characters) or a substring of the label."""
    cells = list(spec.cells.values())
    if not only:
        return cells
    chosen = [c for c in cells if any((len(f) >= 4 and c.config_hash.startswith(f.lower())) or f in c.label
                                      for f in only)]
    if not chosen:
        labels = ", ".join(f"{c.config_hash} {c.label!r}" for c in cells[:20])
        raise ConfigError(f"--only {list(only)} matches no cell of {spec.name!r}; cells: {labels}"
                          + (" ..." if len(cells) > 20 else ""))
    return chosen
