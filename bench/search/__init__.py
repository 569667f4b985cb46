"""Hyper-parameter search: an Optuna study whose trials are cells, run and stored as grid cells are.

    space.py     the search-space TOML: what a study varies, optimises and keeps fixed, validated on load
    study.py     storage, the study, running trials, the best trial, the study's figures
    cli.py       `dct search`

May import the grid core and dct. scale/ imports this folder (a worker serves a study); this folder
never imports scale/, cells/ or figures/.
"""
