"""Figures and the report of result stores: read-only views of what the cells wrote.

    data.py      tidy views of a store (which settings vary, depth as a number, readable names)
    draw.py      the ablation figures, each drawn only when the store has what it needs
    augment.py   the augmentation experiment's figure
    report.py    one self-contained HTML page and its Markdown twin
    cli.py       `dct figures`, `dct report`

May import the grid core (store, columns, contrasts, provenance) and dct; never cells/, search/,
scale/ or plan/ (figures of a study or of the planner live with them, in their own folders).
"""
