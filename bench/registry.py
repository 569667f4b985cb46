"""Cell kinds: what one cell of a grid trains and measures, registered by name.

    from bench.registry import register_cell, CellOutput

    def run(config: dict, ctx) -> CellOutput:
        for step in range(config["steps"]):
            with ctx.step():          # timed optimisation step (bench.measure)
                ...
            ctx.progress(step + 1, config["steps"])
        return CellOutput(metrics={"accuracy": 0.9}, curves=[{"epoch": 0, "loss": 1.2}])

    register_cell("mine", keys={"steps", "lr", "seed"}, validate=lambda c: c, run=run)

`keys` is the set of settings a spec may name (None: any); `validate(config) -> config` raises
`dct.errors.ConfigError` naming a bad value and returns the full config (defaults filled in), which is
what gets hashed and stored. The optional `check(config)` raises a DCTError for what must exist outside
the config (classifiers, files); the runner calls it on every cell before the first one runs. `run` executes in a fresh child process, so it must be a module-level
function: the child imports its module, which registers the kind again there.

Kinds the project ships are registered by importing the modules in BUILTIN_MODULES on first lookup;
kinds of your own, by naming their modules in $DCT_CELL_MODULES (comma-separated), e.g.
`DCT_CELL_MODULES=mylab.cells dct bench run --spec mine.toml`.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from dct.errors import ConfigError

BUILTIN_MODULES = ("bench.cells.dct", "bench.cells.step", "bench.cells.augment", "bench.cells.methods")
MODULES_ENV = "DCT_CELL_MODULES"


@dataclass
class CellOutput:
    metrics: dict[str, Any] = field(default_factory=dict)  # flat: str/int/float/bool/None values
    curves: list[dict[str, Any]] = field(default_factory=list)  # per-epoch rows: epoch, loss, accuracy, ...


@dataclass(frozen=True)
class CellKind:
    name: str
    keys: frozenset[str] | None
    validate: Callable[[dict], dict]
    run: Callable[[dict, Any], CellOutput]
    # what validate cannot know from the values alone (a classifier or file that must exist), checked for
    # every cell before the first one runs
    check: Callable[[dict], None] | None = None
    # a relative estimate of a cell's run time: running several cells at once, the runner starts the
    # heaviest first, so that the longest cell does not start last
    weight: Callable[[dict], float] | None = None

    @property
    def module(self) -> str:
        return self.run.__module__


_KINDS: dict[str, CellKind] = {}
_builtins_loaded = False


def register_cell(kind: str, *, keys: set[str] | None, validate: Callable[[dict], dict],
                  run: Callable[[dict, Any], CellOutput], check: Callable[[dict], None] | None = None,
                  weight: Callable[[dict], float] | None = None) -> CellKind:
    """Register (or re-register, e.g. when a module is imported again in the child) a cell kind."""
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"cell kind must be a non-empty string, got {kind!r}")
    qualname = getattr(run, "__qualname__", "")
    if "<" in qualname or not getattr(run, "__module__", None):
        # The child process finds `run` by importing its module; a lambda or nested function has no
        # importable name there.
        raise ValueError(f"run for cell kind {kind!r} must be a module-level function, got {qualname!r}")
    cell = CellKind(kind, None if keys is None else frozenset(keys), validate, run, check, weight)
    _KINDS[kind] = cell
    return cell


def _load_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    for module in BUILTIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:  # the module exists but one of its imports is missing: say so
                raise
    for module in filter(None, (m.strip() for m in os.environ.get(MODULES_ENV, "").split(","))):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            raise ConfigError(f"${MODULES_ENV} names module {module!r}, which cannot be imported") from None


def get_cell(kind: str) -> CellKind:
    if kind not in _KINDS:
        _load_builtins()
    if kind not in _KINDS:
        raise ConfigError(f"unknown cell kind {kind!r}; registered kinds: {sorted(_KINDS) or 'none'} "
                          f"(modules of other kinds can be named in ${MODULES_ENV})")
    return _KINDS[kind]


def registered_kinds() -> list[str]:
    _load_builtins()
    return sorted(_KINDS)
