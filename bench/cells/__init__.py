"""The cell kinds the project ships: what one cell of a grid trains and measures.

    dct.py       `dct`: train tokens for a set of classes, several runs, judge them (accuracy CIs, FID)
    step.py      `step`: the cost of ONE DCT optimisation step (time, memory), on any architecture
    augment.py   `augment`: a classifier trained on k real images plus generated ones
    methods.py   `methods`: DCT against its alternatives (prompt search, textual inversion, classifier
                 guidance), judged alike, with the cost of N images

Each module registers its kind with bench.registry on import (bench.registry.BUILTIN_MODULES lists
them) and runs in a fresh child process (bench.child). A cell imports dct and the grid core; never
figures/, search/, scale/ or plan/.
"""
