"""Figures of a result store, as PNG and SVG (or PDF), each drawn only when the store has what it needs.

    dct figures --results results/depth                  # -> results/depth/figures/*.png, *.svg
    from bench.figures.draw import draw_figures
    done = draw_figures("results/depth", formats=("png",))
    done.drawn      # DrawnFigure: stem, title, caption, files, marks (e.g. which cells ran out of memory)
    done.skipped    # Skipped: figure name and why (a missing column, a single depth, ...)

The figures (FIGURES, in this order):
    memory-vs-depth         peak memory vs backprop depth, a line per checkpointing mode, failed cells as x "OOM"
    step-time-vs-depth      median seconds per optimisation step, bars = min-max of the timed steps
    accuracy-vs-depth       judge top-1 accuracy with its bootstrap 95% CI band; plain prompt dashed with its CI
    effort-vs-depth         optimiser steps per class, and images generated until the accuracy threshold
    pareto-memory-accuracy  every ok cell: peak memory vs judge accuracy (CI bars), the non-dominated front joined
    paired-contrasts        forest plot: each axis level minus its baseline level, paired hierarchical 95% CI
    classifier-comparison   judge accuracy per guiding classifier (bars with CIs), the judge fixed per panel
    transfer-matrix         accuracy of each guide's tokens under every evaluating classifier (heatmap, CI text)
    training-curves         loss and training accuracy per epoch, mean over classes, band = range over classes
    examples-<hash>         plain prompt vs learned token on the same seeds, per class, one grid per cell
    accuracy-vs-k           the augment experiment's figure (bench.figures.augment), when the store is one

Each figure kind is one function (StoreData, DrawOptions) -> [Panel], raising panel.Skip when the store
lacks what it needs; a kind is added with one FigureKind line in FIGURES. The functions live by subject:
depth.py (the first six), classifiers.py, comparisons.py (the transfer matrix), per_cell.py (training
curves, image grids), augment.py; style.py holds the shared look, panel.py the shared pieces. Seaborn
draws where it fits (FacetGrid facets, lineplot/scatterplot/barplot with hue and style, the heatmap);
matplotlib draws the marks seaborn cannot derive: CIs from the stored _lo/_hi columns, failed cells, the
Pareto front. Every figure is closed once saved (FacetGrid figures live in pyplot).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import matplotlib
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from bench import columns as C
from bench.figures import data as D
from bench.figures.augment import augment_accuracy
from bench.figures.classifiers import classifier_comparison
from bench.figures.comparisons import transfer_matrix
from bench.figures.depth import (accuracy_vs_depth, effort_vs_depth, memory_vs_depth, paired_contrasts,
                                 pareto_memory_accuracy, step_time_vs_depth)
from bench.figures.panel import DrawOptions, Panel, Skip
from bench.figures.per_cell import image_grids, training_curves
from bench.figures.style import RC
from bench.figures.methods import NEEDS as METHODS_NEEDS, methods_panels

FORMATS = ("png", "svg", "pdf")
DEFAULT_FORMATS = ("png", "svg")
INDEX_FILE = "figures.json"


@dataclass
class DrawnFigure:
    kind: str
    stem: str
    title: str
    caption: str
    files: dict[str, Path]
    marks: list[str] = field(default_factory=list)


@dataclass
class Skipped:
    kind: str
    reason: str


@dataclass
class FigureSet:
    store: Path
    out: Path
    drawn: list[DrawnFigure] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


@dataclass(frozen=True)
class FigureKind:
    name: str
    needs: str  # what the store must hold, in words (shown by `dct figures --list`)
    draw: Callable[[D.StoreData, DrawOptions], list[Panel]]



FIGURES: tuple[FigureKind, ...] = (
    FigureKind("memory-vs-depth", f"{D.DEPTH}, {C.COST_PEAK_BYTES} (checkpointing, status optional)", memory_vs_depth),
    FigureKind("step-time-vs-depth", f"{D.DEPTH}, {C.STEP_TIME_MEDIAN_S} ({C.STEP_TIMES_S} for the spread)",
               step_time_vs_depth),
    FigureKind("accuracy-vs-depth", f"{D.DEPTH}, {D.ACC} (+_lo/_hi; {D.PLAIN_ACC} for the baseline)",
               accuracy_vs_depth),
    FigureKind("effort-vs-depth", f"{D.DEPTH}, {D.EPOCHS_MEAN} and/or {D.IMAGES_TO_THRESHOLD}", effort_vs_depth),
    FigureKind("pareto-memory-accuracy", f"{C.COST_PEAK_BYTES}, {D.ACC} on at least two ok cells",
               pareto_memory_accuracy),
    FigureKind("paired-contrasts", "metric_outcomes of cells that differ in one axis (bench.contrasts)",
               paired_contrasts),
    FigureKind("classifier-comparison", f"{D.CLASSIFIER} with two or more values, {D.ACC}", classifier_comparison),
    FigureKind("transfer-matrix", "metric_acc[<classifier>] columns (the cell's eval_classifiers)", transfer_matrix),
    FigureKind("training-curves", f"curves with {C.EPOCH} and {C.LOSS} ({C.ACCURACY}, class_id optional)",
               training_curves),
    FigureKind("examples", "artifacts/<hash>/<attempt>/examples/{plain,token}/class<c>-seed<s>.png", image_grids),
    FigureKind("augment-accuracy-vs-k", "the augment cell's cfg_k, cfg_source, cfg_n_generated, metric_acc (+_lo/_hi)",
               augment_accuracy),
    FigureKind("methods-accuracy-vs-cost", METHODS_NEEDS, methods_panels),
)


# --- drawing and saving --------------------------------------------------------------------------------


def parse_formats(text: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    from dct.errors import ConfigError

    items = [t.strip().lower().lstrip(".") for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    bad = [t for t in items if t not in FORMATS]
    if bad or not items:
        raise ConfigError(f"--format {text!r} is not accepted: a comma-separated list of {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(items))


def _save(figure: Figure, out: Path, stem: str, formats) -> dict[str, Path]:
    files = {}
    for fmt in formats:
        path = out / f"{stem}.{fmt}"
        metadata = {"Date": None} if fmt in ("svg", "pdf") else {"Software": None}
        if fmt == "pdf":
            metadata["CreationDate"] = None
            del metadata["Date"]
        figure.savefig(path, format=fmt, bbox_inches="tight", metadata=metadata, facecolor="white")
        files[fmt] = path
    return files


def _clear_previous(out: Path, kinds: set[str]) -> dict:
    """Delete the files an earlier run wrote for these figure kinds (a figure now skipped, a cell gone, would
    otherwise linger); return the earlier index's entries of the other kinds, which stay."""
    index = out / INDEX_FILE
    try:
        old = json.loads(index.read_text()) if index.is_file() else {}
    except ValueError:
        old = {}
    for fig in old.get("drawn", []):
        if fig.get("kind") in kinds:
            for name in fig.get("files", {}).values():
                (out / Path(name).name).unlink(missing_ok=True)
    return {"drawn": [f for f in old.get("drawn", []) if f.get("kind") not in kinds],
            "skipped": [f for f in old.get("skipped", []) if f.get("kind") not in kinds]}


def draw_figures(store, *, out: str | Path | None = None, formats=DEFAULT_FORMATS,
                 only: list[str] | tuple[str, ...] | None = None, example_cells: int | None = None) -> FigureSet:
    """Draw every figure the store supports into `out` (default <store>/figures); see the module docstring.
    `store` is a folder (or an experiment name under ./results) or an already loaded StoreData; `only`
    names figure kinds (FIGURES); `example_cells` caps the image grids (None: one per finished cell)."""
    options = DrawOptions(example_cells=example_cells)
    data = store if isinstance(store, D.StoreData) else D.load_store(store)
    out = Path(out) if out is not None else data.path / "figures"
    formats = parse_formats(formats)
    kinds = [k for k in FIGURES if not only or k.name in only]
    if only:
        from dct.errors import ConfigError

        unknown = sorted(set(only) - {k.name for k in FIGURES})
        if unknown:
            raise ConfigError(f"unknown figure(s) {unknown}; figures: {[k.name for k in FIGURES]}")
    out.mkdir(parents=True, exist_ok=True)
    kept = _clear_previous(out, {k.name for k in kinds})
    result = FigureSet(store=data.path, out=out)
    if data.cells.empty:
        result.skipped = [Skipped(k.name, "the store has no cells") for k in kinds]
    else:
        with matplotlib.rc_context(RC):
            for kind in kinds:
                try:
                    panels = kind.draw(data, options)
                except Skip as e:
                    result.skipped.append(Skipped(kind.name, str(e)))
                    continue
                for panel in panels:
                    files = _save(panel.figure, out, panel.stem, formats)
                    plt.close(panel.figure)  # seaborn's grids are pyplot figures; the others are unaffected
                    result.drawn.append(DrawnFigure(kind.name, panel.stem, panel.title, panel.caption, files,
                                                    panel.marks))
    index = {"store": str(data.path),
             "drawn": kept["drawn"] + [{"kind": d.kind, "stem": d.stem, "title": d.title, "caption": d.caption,
                                        "marks": d.marks, "files": {f: p.name for f, p in d.files.items()}}
                                       for d in result.drawn],
             "skipped": kept["skipped"] + [{"kind": s.kind, "reason": s.reason} for s in result.skipped]}
    (out / INDEX_FILE).write_text(json.dumps(index, indent=1))
    return result