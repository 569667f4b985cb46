"""Figures and the report of result stores: read-only views of what the cells wrote.

    data.py         tidy views of a store (which settings vary, depth as a number, readable names)
    draw.py         FIGURES (the registry: one line per figure kind), draw_figures, saving and figures.json
    style.py        the shared look: theme, seaborn palette, colour and marker per hue level
    panel.py        what figure functions share: Panel, Skip, DrawOptions, facets, axis helpers
    depth.py        memory, step time, accuracy, effort vs depth; the Pareto front; paired contrasts
    classifiers.py  judge accuracy per guiding classifier
    comparisons.py  the transfer matrix (guide x evaluating classifier)
    per_cell.py     training curves and image grids, per cell
    augment.py      the augmentation experiment's figure
    methods.py      the methods experiment's accuracy-vs-cost figure (Pareto front) and README table
    report.py       one self-contained HTML page and its Markdown twin
    cli.py          `dct figures`, `dct report`

May import the grid core (store, columns, contrasts, provenance) and dct; never cells/, search/,
scale/ or plan/ (figures of a study or of the planner live with them, in their own folders).
"""
