"""Hyper-parameter search: an Optuna study whose trials are cells, run and stored as grid cells are.

    space.py     the search-space TOML: what a study varies, optimises and keeps fixed, validated on load
    storage.py   storage URLs (sqlite:///, journal:///, postgresql://), heartbeats, capped retries, hand-backs
    worker.py    the one worker loop (claim, run, repeat; stale trials failed and retried) for studies and grids
    study.py     the study, one trial as one cell, `dct search` and `dct worker --study`
    show.py      reading a study: the trials table, the best trial as a preset, the figures
    cli.py       `dct search`

May import the grid core and dct. scale/ imports this folder (a worker serves a study); this folder
never imports scale/, cells/ or figures/.
"""
