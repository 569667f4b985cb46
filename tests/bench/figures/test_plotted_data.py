"""The drawn marks carry the store's numbers: lines, dots, bars and CI whiskers read back from the
matplotlib artists and compared with the stored columns (means over repeats, the stored _lo/_hi CI
columns, one colour per checkpointing mode). Small hand-made stores: no grid runs, a second or two."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from matplotlib.container import ErrorbarContainer

from bench import columns as C
from bench.figures import data as D
from bench.figures.classifiers import classifier_comparison
from bench.figures.depth import accuracy_vs_depth, pareto_memory_accuracy
from bench.figures.panel import DrawOptions
from bench.figures.per_cell import training_curves
from bench.figures.style import PALETTE

LO, HI = f"{D.ACC}_lo", f"{D.ACC}_hi"


def _store(rows: list[dict], curves: pd.DataFrame | None = None) -> D.StoreData:
    cells = pd.DataFrame([{C.STATUS: "ok", C.ORIGIN: "axes", D.METRIC_JUDGE: "world:judge", **r,
                           C.CONFIG_HASH: f"h{i}", C.LABEL: f"cell {i}"} for i, r in enumerate(rows)])
    if D.DEPTH in cells.columns:
        cells = D.add_depth(cells)
    return D.StoreData(path=Path("."), name="hand-made", cells=cells,
                       curves=pd.DataFrame() if curves is None else curves)


def _depth_rows(modes=("none", "block")) -> list[dict]:
    """Every number distinct, so that a value read from the wrong column or cell shows; two seeds at
    depth 1 (a line point averages them) and lo/hi asymmetric around the accuracy."""
    rows = []
    for m, mode in enumerate(modes):
        for d, depth in enumerate((1, 2, 4)):
            for seed in (0, 1) if depth == 1 else (0,):
                acc = 0.30 + 0.1 * d + 0.05 * m + 0.02 * seed
                rows.append({D.DEPTH: depth, D.CHECKPOINTING: mode, C.config_col("seed"): seed, D.ACC: acc,
                             LO: acc - 0.07 - 0.01 * d, HI: acc + 0.03 + 0.01 * m, D.PLAIN_ACC: 0.2})
    return rows


def _measured_lines(ax):
    """The lines of a depth panel: solid, with markers, through more than one point."""
    return [ln for ln in ax.get_lines() if len(ln.get_xdata()) > 1 and ln.get_linestyle() == "-"
            and ln.get_marker() not in ("None", "", None)]


def _expected(rows: list[dict]) -> pd.DataFrame:
    """Per (mode, depth): the mean of the stored accuracy and CI columns, in percent."""
    frame = pd.DataFrame(rows)
    return frame.groupby([D.CHECKPOINTING, D.DEPTH])[[D.ACC, LO, HI]].mean() * 100


def test_accuracy_lines_are_the_stored_means_in_the_mode_colour():
    rows = _depth_rows()
    panel = accuracy_vs_depth(_store(rows), DrawOptions())[0]
    ax = panel.figure.axes[0]
    expected = _expected(rows)
    lines = _measured_lines(ax)
    assert len(lines) == 2
    for mode, colour in (("none", PALETTE[0]), ("block", PALETTE[1])):  # the modes' order: none first
        line = next(ln for ln in lines if np.allclose(to_rgb(ln.get_color()), colour))
        assert np.round(line.get_xdata()).tolist() == [1, 2, 4]  # dodged sideways, but only a little
        assert list(line.get_ydata()) == pytest.approx(list(expected.loc[mode, D.ACC]))
    # the legend below the panels names each mode in the colour of its line
    legend = {t.get_text(): h for t, h in zip(panel.figure.legends[0].get_texts(),
                                              panel.figure.legends[0].legend_handles)}
    assert np.allclose(to_rgb(legend["none"].get_color()), PALETTE[0])
    assert np.allclose(to_rgb(legend["block"].get_color()), PALETTE[1])


def test_repeats_are_drawn_as_dots_at_their_own_values():
    rows = _depth_rows(modes=("none",))
    ax = accuracy_vs_depth(_store(rows), DrawOptions())[0].figure.axes[0]
    dots = [ln for ln in ax.get_lines() if ln.get_linestyle() == "None" and ln.get_alpha() == pytest.approx(0.35)]
    assert len(dots) == 1
    assert sorted(dots[0].get_ydata()) == pytest.approx(sorted(r[D.ACC] * 100 for r in rows))


def test_ci_bars_span_the_stored_lo_and_hi_columns():
    rows = _depth_rows()  # two modes in one panel: bars, not bands
    ax = accuracy_vs_depth(_store(rows), DrawOptions())[0].figure.axes[0]
    expected = _expected(rows)
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 2
    for mode, colour in (("none", PALETTE[0]), ("block", PALETTE[1])):
        bar = next(c for c in bars if np.allclose(to_rgb(c.lines[2][0].get_color()[0]), colour))
        spans = sorted((round(seg[0][0]), seg[0][1], seg[1][1]) for seg in bar.lines[2][0].get_segments())
        assert [s[0] for s in spans] == [1, 2, 4]
        assert [s[1] for s in spans] == pytest.approx(list(expected.loc[mode, LO]))
        assert [s[2] for s in spans] == pytest.approx(list(expected.loc[mode, HI]))


def test_ci_band_of_a_single_line_follows_the_stored_columns():
    rows = _depth_rows(modes=("none",))
    ax = accuracy_vs_depth(_store(rows), DrawOptions())[0].figure.axes[0]
    expected = _expected(rows).loc["none"]
    # the token's band, in the line colour (the plain prompt's grey band is an axhspan)
    band = next(c for c in ax.collections if np.allclose(c.get_facecolor()[0][:3], PALETTE[0]))
    vertices = band.get_paths()[0].vertices
    for depth, lo, hi in zip(expected.index, expected[LO], expected[HI]):
        at = vertices[np.isclose(vertices[:, 0], depth), 1]
        assert min(at) == pytest.approx(lo) and max(at) == pytest.approx(hi)


def test_classifier_bars_are_the_stored_means_best_on_top_with_stored_cis():
    accs = {"world:guide-a": [0.40, 0.50], "world:guide-b": [0.80], "world:guide-c": [0.60]}
    rows = [{D.CLASSIFIER: clf, D.ACC: a, LO: a - 0.1 - 0.01 * i, HI: a + 0.05, D.N_CLASSES: 10,
             D.EVAL_PER_CLASS: 4, C.config_col("seed"): i}
            for clf, values in accs.items() for i, a in enumerate(values)]
    ax = classifier_comparison(_store(rows), DrawOptions())[0].figure.axes[0]
    bars = sorted(ax.patches, key=lambda p: p.get_y())  # top of the panel first
    assert [b.get_width() for b in bars] == pytest.approx([80, 60, 45])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["guide-b", "guide-c", "guide-a"]
    frame = pd.DataFrame(rows).groupby(D.CLASSIFIER)[[LO, HI]].mean() * 100
    whiskers = sorted((c.lines[2][0].get_segments()[0] for c in ax.containers if isinstance(c, ErrorbarContainer)),
                      key=lambda seg: seg[0][1])
    centres = [b.get_y() + b.get_height() / 2 for b in bars]
    for seg, centre, clf in zip(whiskers, centres, ("world:guide-b", "world:guide-c", "world:guide-a")):
        assert seg[0][1] == pytest.approx(centre)  # on its bar
        assert (seg[0][0], seg[1][0]) == pytest.approx((frame.loc[clf, LO], frame.loc[clf, HI]))


def test_training_curves_are_the_class_mean_with_the_class_range_as_band():
    epochs = [0, 1, 2]
    curves = pd.DataFrame([{C.CONFIG_HASH: "h0", C.EPOCH: e, "class_id": k, C.LOSS: 2.0 - 0.3 * e + 0.2 * k,
                            C.ACCURACY: 0.1 * e + 0.05 * k} for e in epochs for k in (0, 1, 3)])
    panel = training_curves(_store([{}], curves), DrawOptions())[0]
    loss_ax, acc_ax = panel.figure.axes[:2]
    per_epoch = curves.groupby(C.EPOCH)
    for ax, metric, scale in ((loss_ax, C.LOSS, 1.0), (acc_ax, C.ACCURACY, 100.0)):
        (line,) = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == len(epochs)]
        assert list(line.get_ydata()) == pytest.approx(list(per_epoch[metric].mean() * scale))
        vertices = ax.collections[0].get_paths()[0].vertices
        for e in epochs:
            at = vertices[np.isclose(vertices[:, 0], e), 1]
            assert min(at) == pytest.approx(per_epoch[metric].min()[e] * scale)
            assert max(at) == pytest.approx(per_epoch[metric].max()[e] * scale)


def test_pareto_points_are_the_cells_with_stored_cis_in_the_mode_colour():
    rows = [{D.CHECKPOINTING: mode, C.COST_PEAK_BYTES: mib * 2**20, D.ACC: acc, LO: acc - 0.1, HI: acc + 0.04}
            for mode, mib, acc in (("none", 300, 0.5), ("none", 500, 0.7), ("block", 200, 0.4), ("block", 400, 0.8))]
    ax = pareto_memory_accuracy(_store(rows), DrawOptions())[0].figure.axes[0]
    (points,) = ax.collections[-1:]  # seaborn's scatter, over the CI bars
    drawn = {tuple(np.round(xy, 6)): to_rgb(colour[:3]) for xy, colour in zip(points.get_offsets(),
                                                                             points.get_facecolors())}
    for r in rows:
        colour = drawn[(r[C.COST_PEAK_BYTES] / 2**20, round(r[D.ACC] * 100, 6))]
        assert np.allclose(colour, PALETTE[0] if r[D.CHECKPOINTING] == "none" else PALETTE[1])
    spans = sorted(tuple(np.round([seg[0][0], seg[0][1], seg[1][1]], 6)) for c in ax.containers
                   if isinstance(c, ErrorbarContainer) for seg in c.lines[2][0].get_segments())
    assert spans == sorted((r[C.COST_PEAK_BYTES] / 2**20, round(r[LO] * 100, 6), round(r[HI] * 100, 6))
                           for r in rows)


def test_facet_grid_wraps_blocks_of_rows_and_shares_y_per_quantity():
    import matplotlib.pyplot as plt

    from bench.figures.panel import FACET, ROW, facet_grid

    keys = ["a", "b", "c", "d"]
    frame = pd.DataFrame({FACET: [k for k in keys for _ in (0, 1)], ROW: [0, 1] * len(keys), "y": range(8)})
    grid, axes_of = facet_grid(frame, keys, rows_per_facet=2, max_cols=3)
    try:
        assert grid.axes.shape == (4, 3)  # two blocks of (2 quantities x 3 facets)
        assert axes_of["d"] == [grid.axes[2][0], grid.axes[3][0]]  # the fourth facet starts the second block
        assert [ax.get_visible() for ax in grid.axes[2:, 1:].flat] == [False] * 4
        axes_of["a"][1].set_ylim(0, 7)
        assert axes_of["d"][1].get_ylim() == (0, 7) and axes_of["d"][0].get_ylim() != (0, 7)
    finally:
        plt.close(grid.figure)
