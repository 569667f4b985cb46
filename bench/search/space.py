"""Search spaces for `dct search`: a TOML file saying what a study varies, what it optimises and what
stays fixed. Everything is validated when the file is loaded, before any trial runs, and each error
names the file, the table and the bad key.

    [study]
    name = "dct-search"            # the default --study name
    cell = "dct"                   # a registered cell kind (bench.registry); default "dct"
    base = "fast"                  # dct cells: the preset that sampled values override
    enqueue = ["paper", "fast"]    # dct cells: presets run first, as they are (plus [fixed])
    objectives = ["images", "acc"] # one name (single objective) or several (NSGA-II, Pareto front)
    trials = 30                    # the study's budget of finished trials (--trials overrides)
    sampler = "auto"               # auto (TPE for one objective, NSGA-II for several) | tpe | nsga2 | random
    seed = 0                       # of the sampler, for a study run by one process
    startup_trials = 8             # TPE's random start-up trials / NSGA-II's population size
    timeout_per_trial = 1800       # seconds; the trial's cell is killed after it
    warmup_steps = 1               # steps left out of the step-time median (as in grids)

    [pruning]                      # single objective only (Optuna cannot prune multi-objective trials)
    pruner = "auto"                # auto (median for one objective, none for several) | median | none
    on = "acc"                     # the per-epoch value the cell reports in its progress (dct: guide accuracy)
    higher_is_better = true
    window = 3                     # reported value: mean of the last `window` epochs of the current class
    startup_trials = 5             # no pruning before this many trials finished
    warmup_epochs = 2              # nor before this many epochs of a trial

    [fixed]                        # settings of every trial, enqueued presets included
    classes = [3, 7]

    [templates]                    # named prompt-template sets for a `templates` parameter
    paper = ["A photo of {}", "a high resolution realistic image of {}", "A close-up photo of a {}"]

    [space.lr]                     # one table per parameter; the key is a setting of the cell kind
    type = "float"                 # float | int | categorical
    low = 1e-3
    high = 0.3
    log = true                     # optional; or step = 0.5 (not both)

    [space.depth]
    type = "categorical"
    choices = [1, 2, 4, "full"]

Objectives (a name, or "<store column>:maximize|minimize" for any other column):
    acc        maximize  judge top-1 accuracy of the token on unseen seeds (metric_acc)
    images     minimize  images spent per class that reached the stopping threshold:
                         images_mean / threshold_reached, so a class that never reaches it still costs
                         what it spent (equal to images_to_threshold_mean when every class reaches it;
                         infinite when none does)
    peak_mem   minimize  peak memory of the cell's process (peak_mem_bytes: GPU allocated or CPU RSS)
    time       minimize  seconds spent training (phase_train_s; wall_s for cells without that phase)
    step_time  minimize  median seconds per optimisation step (step_time_median_s)

Parameters that are not settings of the dct cell:
    grad_accum   rollouts per update: images_per_update = rollout_batch x grad_accum. Give at most two of
                 images_per_update, rollout_batch and grad_accum (space and [fixed] together); the third
                 follows. `images_per_update` alone is rendered in one rollout.
    templates    categorical choices name sets of the [templates] table; "default" is the model's own.

Enqueued presets: each is the preset, then [fixed], exactly. The trial carries the preset's values of the
searched parameters (so the sampler learns from it); a value outside the space (e.g. the paper's 30
steps in a space of 4..12) is not suggested for that trial and is listed in its user attributes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dct.errors import ConfigError

from bench import columns as C
from bench.registry import CellKind, get_cell
from bench.spec import _did_you_mean, _is_int

TABLES = ("study", "pruning", "fixed", "templates", "space")
STUDY_KEYS: dict[str, str] = {
    "name": "a string of letters, digits, '_', '-', '.'",
    "cell": "the name of a registered cell kind",
    "description": "a string",
    "base": "a preset name or preset file (dct cells)",
    "enqueue": "a list of preset names or preset files (dct cells)",
    "objectives": "an objective name, or a list of them",
    "trials": "an integer >= 1",
    "sampler": "one of 'auto', 'tpe', 'nsga2', 'random'",
    "seed": "an integer",
    "startup_trials": "an integer >= 1",
    "timeout_per_trial": "a number of seconds > 0",
    "warmup_steps": "an integer >= 0",
}
PRUNING_KEYS: dict[str, str] = {
    "pruner": "one of 'auto', 'median', 'none'",
    "on": "the name of a value the cell reports per epoch (the dct cell: 'acc' or 'loss')",
    "higher_is_better": "true or false",
    "window": "an integer >= 1",
    "startup_trials": "an integer >= 0",
    "warmup_epochs": "an integer >= 0",
}
PARAM_KEYS = ("type", "low", "high", "log", "step", "choices")
PARAM_TYPES = ("float", "int", "categorical")
SAMPLERS = ("auto", "tpe", "nsga2", "random")
PRUNERS = ("auto", "median", "none")
DEFAULT_TEMPLATES = "default"  # the model's own templates (TrainConfig.templates = None)
BATCHING = ("images_per_update", "rollout_batch", "grad_accum")
DERIVED_KEYS = ("grad_accum",)


@dataclass(frozen=True)
class Objective:
    name: str
    direction: str  # "maximize" | "minimize"
    column: str | None  # the store column read; None for the derived "images"
    description: str = ""

    def value(self, row: dict) -> float:
        """This objective's value from a store row (a dict of columns); NaN when the row lacks it."""
        if self.name == "images":
            spent, reached = row.get(C.metric_col("images_mean")), row.get(C.metric_col("threshold_reached"))
            if not _finite(spent) or not _finite(reached):
                return math.nan
            return float(spent) / reached if reached > 0 else math.inf
        if self.name == "time":
            value = row.get(C.phase_seconds_col("train"))
            return float(value) if _finite(value) else _as_float(row.get(C.WALL_S))
        return _as_float(row.get(self.column))


OBJECTIVES: dict[str, Objective] = {
    "acc": Objective("acc", "maximize", C.metric_col("acc"), "judge top-1 accuracy on unseen seeds"),
    "images": Objective("images", "minimize", None, "images spent per class that reached the threshold"),
    "peak_mem": Objective("peak_mem", "minimize", C.PEAK_MEM_BYTES, "peak memory of the cell's process"),
    "time": Objective("time", "minimize", C.phase_seconds_col("train"), "seconds spent training"),
    "step_time": Objective("step_time", "minimize", C.STEP_TIME_MEDIAN_S, "median seconds per step"),
}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _as_float(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def parse_objective(text: str) -> Objective:
    if not isinstance(text, str):
        raise ConfigError(f"objective {text!r} is not accepted: a name {sorted(OBJECTIVES)} or "
                          "'<column>:maximize|minimize'")
    if text in OBJECTIVES:
        return OBJECTIVES[text]
    column, _, direction = text.rpartition(":")
    if column and direction in ("maximize", "minimize"):
        return Objective(text, direction, column, f"store column {column}")
    raise ConfigError(f"objective {text!r} is not accepted: use one of {sorted(OBJECTIVES)}"
                      f"{_did_you_mean(text, OBJECTIVES)}, or '<store column>:maximize|minimize' "
                      "(e.g. 'metric_final_loss:minimize')")


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple | None = None

    def distribution(self):
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.type == "float":
            return FloatDistribution(self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return IntDistribution(self.low, self.high, log=self.log, step=self.step or 1)
        return CategoricalDistribution(self.choices)

    def suggest(self, trial) -> Any:
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.name, self.low, self.high, log=self.log, step=self.step or 1)
        return trial.suggest_categorical(self.name, list(self.choices))

    def contains(self, value: Any) -> bool:
        if self.type == "categorical":
            # type-strict: TOML's 2 and 2.0 are different choices, and True is not 1
            return any(type(value) is type(c) and value == c for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.type == "int" and not isinstance(value, int):
            return False
        if not self.low <= value <= self.high:
            return False
        if self.step:
            k = (value - self.low) / self.step
            return abs(k - round(k)) < 1e-9
        return True

    def edges(self) -> list:
        """The values worth checking against the cell's validation: the ends of a range, every choice."""
        return list(self.choices) if self.type == "categorical" else [self.low, self.high]


@dataclass(frozen=True)
class Pruning:
    pruner: str = "auto"
    on: str = "acc"
    higher_is_better: bool = True
    window: int = 3
    startup_trials: int = 5
    warmup_epochs: int = 2


@dataclass
class SearchSpace:
    name: str
    cell: str
    description: str
    base: str | None  # dct cells: the preset under sampled values
    enqueue: list[str]
    objectives: list[Objective]
    trials: int
    sampler: str
    seed: int
    startup_trials: int
    timeout_per_trial: float | None
    warmup_steps: int
    pruning: Pruning
    fixed: dict[str, Any]
    templates: dict[str, list[str]]
    params: dict[str, Param]
    text: str  # the TOML as loaded: stored in the study so that workers elsewhere need no file
    source: str
    space_hash: str
    epoch_stride: int  # step of class k's epoch e in intermediate reports: k * epoch_stride + e
    kind: CellKind = field(repr=False, default=None)

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def prunes(self) -> bool:
        return not self.multi_objective and self.pruning.pruner in ("auto", "median")

    @property
    def is_dct(self) -> bool:
        return self.kind.keys is not None and "preset" in self.kind.keys

    # --- from parameter values to a cell's settings ----------------------------------------------------

    def settings(self, values: dict[str, Any], *, base: str | None = None) -> dict[str, Any]:
        """The cell's settings for these parameter values: [fixed], then the values, with template-set names
        and grad_accum resolved (a ConfigError names a combination that cannot be built)."""
        out = dict(self.fixed)
        for key, value in values.items():
            if key == "templates":
                value = None if value == DEFAULT_TEMPLATES else list(self.templates[value])
            out[key] = value
        if self.is_dct:
            out.setdefault("preset", base or self.base)
            _resolve_batching(out)
        return out

    def suggest(self, trial, *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
        """Sample this trial's parameters (those in `skip` are left to the trial's preset)."""
        values = {name: p.suggest(trial) for name, p in self.params.items() if name not in skip}
        return self.settings(values, base=trial.user_attrs.get("preset"))

    def preset_params(self, preset: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(values of the searched parameters equal to the preset + [fixed], values outside the space)."""
        cfg = _base_config(preset, self.fixed)
        inside, outside = {}, {}
        for name, param in self.params.items():
            if name == "preset":
                value = preset
            elif name == "grad_accum":
                value = cfg.grad_accum
            elif name == "templates":
                value = _template_name(cfg.templates, self.templates)
                if value is None:
                    outside[name] = list(cfg.templates)
                    continue
            elif hasattr(cfg, name):
                value = getattr(cfg, name)
            else:
                continue  # an evaluation setting: sampled as in any trial
            (inside if param.contains(value) else outside)[name] = value
        return inside, outside


def _template_name(templates: tuple[str, ...] | None, sets: dict[str, list[str]]) -> str | None:
    if templates is None:
        return DEFAULT_TEMPLATES
    for name, value in sets.items():
        if tuple(value) == tuple(templates):
            return name
    return None


def _base_config(preset: str, fixed: dict):
    from dct.config import FIELDS, load_preset

    return load_preset(preset, **{k: v for k, v in fixed.items() if k in FIELDS and k != "preset"})


def _resolve_batching(settings: dict[str, Any]) -> None:
    """Fill the third of images_per_update / rollout_batch / grad_accum from the two given (see the module
    docstring); grad_accum is not a cell setting and is removed."""
    ga = settings.pop("grad_accum", None)
    ipu, rb = settings.get("images_per_update"), settings.get("rollout_batch")
    if ga is None and ipu is None and rb is None:
        return
    base = _base_config(settings["preset"], {})
    if ga is not None:
        if rb is None and ipu is not None:
            if ipu % ga:
                raise ConfigError(f"images_per_update={ipu} is not a multiple of grad_accum={ga}")
            rb = ipu // ga
        rb = base.rollout_batch if rb is None else rb
        settings["rollout_batch"], settings["images_per_update"] = rb, rb * ga
    elif rb is None:
        settings["rollout_batch"] = ipu  # one batched rollout per update
    elif ipu is None:
        settings["images_per_update"] = rb * base.grad_accum


# --- loading ---------------------------------------------------------------------------------------------


def load_space(path: str | Path) -> SearchSpace:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"search space file {str(path)!r} does not exist")
    return parse_space(path.read_text(), source=str(path))


def space_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def parse_space(text: str, *, source: str = "<space>") -> SearchSpace:
    def fail(message: str):
        raise ConfigError(f"{source}: {message}")

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        fail(f"not valid TOML: {e}")
    for table in data:
        if table not in TABLES:
            fail(f"unknown table [{table}]{_did_you_mean(table, TABLES)}; accepted tables: {list(TABLES)}")
        if not isinstance(data[table], dict):
            fail(f"[{table}] must be a table")

    study = data.get("study", {})
    _check_keys(study, STUDY_KEYS, "[study]", fail)
    name = study.get("name", "dct-search")
    cell = study.get("cell", "dct")

    def check(table: dict, where: str, key: str, ok: bool, accepted: dict):
        if key in table and not ok:
            fail(f"{where} {key} = {table[key]!r} is not accepted: {accepted[key]}")

    import re

    check(study, "[study]", "name", isinstance(name, str) and bool(re.match(r"^[A-Za-z0-9_.\-]+$", name)), STUDY_KEYS)
    check(study, "[study]", "cell", isinstance(cell, str), STUDY_KEYS)
    check(study, "[study]", "description", isinstance(study.get("description"), str), STUDY_KEYS)
    check(study, "[study]", "trials", _is_int(study.get("trials")) and study.get("trials", 0) >= 1, STUDY_KEYS)
    check(study, "[study]", "sampler", study.get("sampler") in SAMPLERS, STUDY_KEYS)
    check(study, "[study]", "seed", _is_int(study.get("seed")), STUDY_KEYS)
    check(study, "[study]", "startup_trials", _is_int(study.get("startup_trials"))
          and study.get("startup_trials", 0) >= 1, STUDY_KEYS)
    check(study, "[study]", "timeout_per_trial", _finite(study.get("timeout_per_trial"))
          and study.get("timeout_per_trial", 0) > 0, STUDY_KEYS)
    check(study, "[study]", "warmup_steps", _is_int(study.get("warmup_steps"))
          and study.get("warmup_steps", -1) >= 0, STUDY_KEYS)
    try:
        kind = get_cell(cell)
    except ConfigError as e:
        fail(f"[study] cell: {e}")
    is_dct = kind.keys is not None and "preset" in kind.keys

    raw_objectives = study.get("objectives", ["acc"])
    if isinstance(raw_objectives, str):
        raw_objectives = [raw_objectives]
    if not isinstance(raw_objectives, list) or not raw_objectives:
        fail(f"[study] objectives = {raw_objectives!r} is not accepted: {STUDY_KEYS['objectives']}")
    objectives = []
    for o in raw_objectives:
        try:
            objectives.append(parse_objective(o))
        except ConfigError as e:
            fail(f"[study] objectives: {e}")
    if len({o.name for o in objectives}) != len(objectives):
        fail(f"[study] objectives {raw_objectives} names one objective twice")

    if not is_dct:
        for key in ("base", "enqueue"):
            if key in study:
                fail(f"[study] {key}: presets are settings of the dct cell, not of cell kind {cell!r}")
    base = study.get("base", "fast") if is_dct else None
    enqueue = study.get("enqueue", ["paper", "fast"] if is_dct else [])
    if not isinstance(enqueue, list) or not all(isinstance(p, str) for p in enqueue):
        fail(f"[study] enqueue = {enqueue!r} is not accepted: {STUDY_KEYS['enqueue']}")

    pruning_table = data.get("pruning", {})
    _check_keys(pruning_table, PRUNING_KEYS, "[pruning]", fail)
    p = pruning_table
    check(p, "[pruning]", "pruner", p.get("pruner") in PRUNERS, PRUNING_KEYS)
    check(p, "[pruning]", "on", isinstance(p.get("on"), str), PRUNING_KEYS)
    check(p, "[pruning]", "higher_is_better", isinstance(p.get("higher_is_better"), bool), PRUNING_KEYS)
    check(p, "[pruning]", "window", _is_int(p.get("window")) and p.get("window", 0) >= 1, PRUNING_KEYS)
    for key in ("startup_trials", "warmup_epochs"):
        check(p, "[pruning]", key, _is_int(p.get(key)) and p.get(key, -1) >= 0, PRUNING_KEYS)
    on = p.get("on", "acc")
    pruning = Pruning(**{**dataclasses.asdict(Pruning()), **p,
                         "higher_is_better": p.get("higher_is_better", on != "loss")})
    if len(objectives) > 1 and pruning.pruner == "median":
        fail("[pruning] pruner = 'median' needs a single objective: Optuna cannot prune multi-objective "
             "trials (use pruner = 'none' or one objective)")

    fixed = data.get("fixed", {})
    templates = data.get("templates", {})
    for tname, value in templates.items():
        if not (isinstance(value, list) and value and all(isinstance(t, str) and "{}" in t for t in value)):
            fail(f"[templates] {tname} = {value!r} is not accepted: a non-empty list of strings each containing '{{}}'")
        if tname == DEFAULT_TEMPLATES:
            fail(f"[templates] {tname!r} is reserved for the model's own templates: choose another name")

    accepted = set(kind.keys) | set(DERIVED_KEYS if is_dct else ()) if kind.keys is not None else None
    for key in fixed:
        if accepted is not None and key not in accepted:
            fail(f"[fixed] unknown setting {key!r}{_did_you_mean(key, accepted)} for cell kind {cell!r}; "
                 f"accepted: {sorted(accepted)}")

    params: dict[str, Param] = {}
    for key, table in data.get("space", {}).items():
        where = f"[space.{key}]"
        if accepted is not None and key not in accepted:
            fail(f"{where} unknown setting {key!r}{_did_you_mean(key, accepted)} for cell kind {cell!r}; "
                 f"accepted: {sorted(accepted)}")
        if key in fixed:
            fail(f"{key!r} is both in [fixed] and [space]: keep it in one of them")
        if not isinstance(table, dict):
            fail(f"{where} must be a table, e.g. [space.{key}] type = \"float\" low = ... high = ...")
        params[key] = _parse_param(key, table, where, templates if key == "templates" else None, fail)
    if not params:
        fail("nothing to search: add at least one [space.<setting>] table")

    if is_dct:
        given = [k for k in BATCHING if k in params or k in fixed]
        if len(given) == 3:
            fail("images_per_update, rollout_batch and grad_accum are all given ([space] and [fixed]): "
                 "give two of them, the third follows")
        if {"images_per_update", "grad_accum"} <= set(params):
            fail("[space] images_per_update and grad_accum cannot both be searched (most pairs would not divide): "
                 "search rollout_batch and grad_accum instead")
        for preset in [base, *enqueue]:
            try:
                _base_config(preset, fixed)
            except ConfigError as e:
                fail(f"[study] preset {preset!r}: {e}")

    space = SearchSpace(
        name=name, cell=kind.name, description=study.get("description", ""), base=base, enqueue=list(enqueue),
        objectives=objectives, trials=study.get("trials", 30), sampler=study.get("sampler", "auto"),
        seed=study.get("seed", 0), startup_trials=study.get("startup_trials", 8),
        timeout_per_trial=study.get("timeout_per_trial"), warmup_steps=study.get("warmup_steps", 1),
        pruning=pruning, fixed=dict(fixed), templates={k: list(v) for k, v in templates.items()}, params=params,
        text=text, source=source, space_hash=space_hash(text), epoch_stride=1, kind=kind)
    _check_cells(space, fail)
    space.epoch_stride = _epoch_stride(space)
    return space


def _check_keys(table: dict, accepted: dict, where: str, fail) -> None:
    for key in table:
        if key not in accepted:
            fail(f"{where} unknown key {key!r}{_did_you_mean(key, accepted)}; accepted: {sorted(accepted)}")


def _parse_param(key: str, table: dict, where: str, template_sets: dict | None, fail) -> Param:
    for k in table:
        if k not in PARAM_KEYS:
            fail(f"{where} unknown key {k!r}{_did_you_mean(k, PARAM_KEYS)}; accepted: {list(PARAM_KEYS)}")
    kind = table.get("type")
    if kind not in PARAM_TYPES:
        fail(f"{where} type = {kind!r} is not accepted: one of {list(PARAM_TYPES)}")
    if kind == "categorical":
        for k in ("low", "high", "log", "step"):
            if k in table:
                fail(f"{where} {k} is not a key of a categorical parameter: give choices = [...]")
        choices = table.get("choices")
        if not isinstance(choices, list) or not choices:
            fail(f"{where} choices = {choices!r} is not accepted: a non-empty list")
        for c in choices:
            if not isinstance(c, (str, int, float, bool)):
                fail(f"{where} choice {c!r} is not accepted: strings, numbers or booleans")
        if len({(type(c), c) for c in choices}) != len(choices):
            fail(f"{where} choices {choices} repeat a value")
        if template_sets is not None:
            for c in choices:
                if c != DEFAULT_TEMPLATES and c not in template_sets:
                    fail(f"{where} choice {c!r} names no template set: define it in [templates] "
                         f"(defined: {sorted(template_sets)}) or use {DEFAULT_TEMPLATES!r} for the model's own")
        return Param(key, kind, choices=tuple(choices))
    if template_sets is not None:
        fail(f"{where} templates are searched as a categorical parameter over [templates] set names")
    if "choices" in table:
        fail(f"{where} choices belong to type = \"categorical\"; a {kind} parameter has low and high")
    for k in ("low", "high"):
        if k not in table:
            fail(f"{where} {k} is missing: a {kind} parameter has low and high")
        v = table[k]
        ok = _is_int(v) if kind == "int" else _finite(v)
        if not ok:
            fail(f"{where} {k} = {v!r} is not accepted: {'an integer' if kind == 'int' else 'a number'}")
    low, high = table["low"], table["high"]
    if not low < high:
        fail(f"{where} low = {low!r} must be below high = {high!r} (a fixed value belongs in [fixed])")
    log = table.get("log", False)
    if not isinstance(log, bool):
        fail(f"{where} log = {log!r} is not accepted: true or false")
    if log and low <= 0:
        fail(f"{where} low = {low!r} is not accepted with log = true: a number > 0")
    step = table.get("step")
    if step is not None:
        if log:
            fail(f"{where} step and log = true cannot be combined")
        if not ((_is_int(step) if kind == "int" else _finite(step)) and step > 0):
            fail(f"{where} step = {step!r} is not accepted: a positive {'integer' if kind == 'int' else 'number'}")
    if kind == "float":
        low, high = float(low), float(high)
    return Param(key, kind, low=low, high=high, log=log, step=step)


def _check_cells(space: SearchSpace, fail) -> None:
    """Each parameter's extreme values (and every choice) with [fixed], through the cell's own validation, so
    that a typo such as precision = "fp8" fails now and not in trial 17."""
    kind = space.kind
    for name, param in space.params.items():
        for value in param.edges():
            try:
                kind.validate(space.settings({name: value}))
            except ConfigError as e:
                fail(f"[space.{name}] value {value!r}: {e}")
    try:
        kind.validate(space.settings({}))
    except ConfigError as e:
        fail(f"[fixed]: {e}")
    for preset in space.enqueue:
        try:
            inside, _ = space.preset_params(preset)
            kind.validate(space.settings(inside, base=preset))
        except ConfigError as e:
            fail(f"[study] enqueue {preset!r}: {e}")


def _epoch_stride(space: SearchSpace) -> int:
    """The largest max_epochs any trial can have: class k's epoch e is reported at step k * stride + e, so
    that trials are compared at the same class and epoch whatever their own max_epochs."""
    if not space.is_dct:
        return 1
    if "max_epochs" in space.params:
        p = space.params["max_epochs"]
        return int(max(p.edges()))
    presets = {space.base, *space.enqueue} | ({*space.params["preset"].choices} if "preset" in space.params else set())
    return max(_base_config(p, space.fixed).max_epochs for p in presets)
