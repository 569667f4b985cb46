"""Scale-out: several workers, on one machine or many, sharing one grid or one study.

    shared_grid.py   a grid's cells as the enqueued trials of an Optuna study, claimed one worker at a time
    launch.py        `dct worker` and `dct launch` (N workers through submitit: SLURM or local)

Grids and studies share one storage layer and one worker loop, both in search/ (storage.py, worker.py).

May import the grid core, search/ (a worker serves a study) and dct; never cells/ or figures/.
"""
