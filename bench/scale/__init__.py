"""Scale-out: several workers, on one machine or many, sharing one grid or one study.

    distributed.py   a grid's cells in a shared database table, claimed one worker at a time
    launch.py        `dct worker` and `dct launch` (N workers through submitit: SLURM or local)

May import the grid core, search/ (a worker serves a study) and dct; never cells/ or figures/.
"""
