"""Reading a study: its trials as a table, the best trial as a preset file, its figures.

    dct search show / best / plots       (bench.search.cli)
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

from rich.table import Table

from dct.config import FIELDS
from dct.errors import ConfigError

from bench.provenance import redact
from bench.search.space import SearchSpace
from bench.search.study import ATTR_ATTEMPT, ATTR_CONFIG, ATTR_CONFIG_HASH, ATTR_PRESET, ATTR_REUSED
from bench.spec import _fmt

FIGURES_DIR = "figures"


def short(value: float) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.4g}"
    return str(value)


def trials_table(study, space: SearchSpace, limit: int | None = None) -> Table:
    """Finished trials, best first (by the first objective)."""
    from optuna.trial import TrialState

    trials = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    sign = -1 if space.objectives[0].direction == "maximize" else 1
    trials.sort(key=lambda t: sign * t.values[0] if math.isfinite(t.values[0]) else math.inf)
    pareto = {t.number for t in study.best_trials} if trials else set()
    table = Table(title=f"{study.study_name}: {len(trials)} complete trial(s)")
    for col in ("trial", *[o.name for o in space.objectives], "pareto" if space.multi_objective else "best",
                "preset", "parameters"):
        table.add_column(col)
    for t in trials[:limit]:
        table.add_row(str(t.number), *[short(v) for v in t.values], "*" if t.number in pareto else "",
                      t.user_attrs.get(ATTR_PRESET) or "", " ".join(f"{k}={_fmt(v)}" for k, v in t.params.items()))
    return table


def best_trial(study, space: SearchSpace, number: int | None = None):
    """Trial `number`, or the best: for several objectives, the Pareto trial best in the first objective."""
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if number is not None:
        hit = [t for t in complete if t.number == number]
        if not hit:
            raise ConfigError(f"trial {number} of study {study.study_name!r} is not complete; complete trials: "
                              f"{[t.number for t in complete]}")
        return hit[0]
    if not complete:
        raise ConfigError(f"study {study.study_name!r} has no complete trial yet")
    candidates = study.best_trials if space.multi_objective else [study.best_trial]
    sign = [(-1 if o.direction == "maximize" else 1) for o in space.objectives]
    return min(candidates, key=lambda t: [s * v for s, v in zip(sign, t.values)])


def export_best(study, space: SearchSpace, out: str | Path, *, number: int | None = None) -> Path:
    """Write the best trial's training configuration as a preset file ([train] table) that
    `dct train --preset FILE` and a grid's `preset = "FILE"` accept; evaluation settings and where the
    values came from go in [eval] and [search], which load_preset ignores."""
    trial = best_trial(study, space, number)
    config = trial.user_attrs.get(ATTR_CONFIG)
    if config is None:
        raise ConfigError(f"trial {trial.number} has no recorded config (was it run by `dct search`?)")
    if space.is_dct:
        train = {k: v for k, v in config.items() if k in FIELDS and k != "preset" and v is not None}
        evaluation = {k: v for k, v in config.items() if k not in FIELDS and v is not None}
    else:  # another cell kind: its settings as they are, for a grid's [fixed] or [[include]]
        train, evaluation = {}, {k: v for k, v in config.items() if v is not None}
    meta = {"study": study.study_name, "trial": trial.number, "preset_base": config.get("preset"),
            "config_hash": trial.user_attrs.get(ATTR_CONFIG_HASH),
            "attempt_id": trial.user_attrs.get(ATTR_REUSED) or trial.user_attrs.get(ATTR_ATTEMPT),
            **{o.name: v for o, v in zip(space.objectives, trial.values)},
            "objectives": [f"{o.name} ({o.direction})" for o in space.objectives]}
    lines = [f"# Best trial of study {study.study_name!r}: trial {trial.number}."]
    if space.is_dct:
        lines += [f"# Train with:  dct train --class <c> --preset {Path(out).as_posix()}",
                  "", "[train]", *_toml_items(train), ""]
    if evaluation:
        head = "[eval]  # the study's evaluation settings (not read by load_preset)" if space.is_dct else \
            f"[config]  # the settings of the {space.cell} cell"
        lines += ["", head, *_toml_items(evaluation), ""]
    lines += ["[search]", *_toml_items({k: v for k, v in meta.items() if v is not None})]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(redact("\n".join(lines) + "\n"))
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"))
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value if v is not None) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _toml_items(values: dict) -> list[str]:
    import re

    def key(k: str) -> str:
        return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)

    return [f"{key(k)} = {_toml_value(v)}" for k, v in values.items()]


def save_figures(study, space: SearchSpace, folder: str | Path) -> dict[str, str]:
    """Optuna's matplotlib plots as PNG: history, parameter importances, Pareto front (several objectives),
    intermediate values (pruned studies). Returns {figure: path or why it was not drawn}. Trials with a
    non-finite value (e.g. images when no class reached the threshold) are left out of the plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ov

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    finite = _finite_copy(study, space)
    names = [o.name for o in space.objectives]
    out: dict[str, str] = {}

    def draw(name: str, plot) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = plot()
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            path = folder / f"{name}.png"
            fig.savefig(path, dpi=110, bbox_inches="tight")
            plt.close(fig)
            out[name] = str(path)
        except Exception as e:  # noqa: BLE001 - a figure that cannot be drawn is reported, not fatal
            plt.close("all")
            out[name] = f"not drawn: {type(e).__name__}: {redact(str(e))[:200]}"

    n_complete = len(finite.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    if n_complete == 0:
        return {"all": "not drawn: no complete trial with finite values"}
    for i, name in enumerate(names):
        suffix = f"-{name}" if space.multi_objective else ""
        target = (lambda t, i=i: t.values[i]) if space.multi_objective else None
        draw(f"history{suffix}", lambda: ov.plot_optimization_history(finite, target=target, target_name=name))
        if n_complete >= 2:
            draw(f"importances{suffix}", lambda: ov.plot_param_importances(finite, target=target, target_name=name))
        else:
            out[f"importances{suffix}"] = "not drawn: needs at least 2 complete trials"
    if space.multi_objective:
        draw("pareto", lambda: ov.plot_pareto_front(finite, target_names=names))
    if any(t.intermediate_values for t in finite.get_trials(deepcopy=False)):
        draw("intermediate", lambda: ov.plot_intermediate_values(finite))
    return out


def _finite_copy(study, space: SearchSpace):
    """An in-memory copy of the study without trials whose values are not all finite."""
    import optuna
    from optuna.trial import TrialState

    copy = optuna.create_study(directions=space.directions, study_name=study.study_name)
    keep = [t for t in study.get_trials(deepcopy=True, states=(TrialState.COMPLETE, TrialState.PRUNED))
            if t.state == TrialState.PRUNED or all(math.isfinite(v) for v in t.values)]
    copy.add_trials(keep)
    return copy
