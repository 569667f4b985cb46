"""The benchmark harness: ablation specs -> cells -> one fresh process per cell -> a result store, and
what reads the store (figures, report, search, scale-out, the memory planner).

    dct bench depth                      # ablations/depth.toml, resumes where it stopped
    dct bench run --spec my.toml --dry-run
    dct results show results/depth --columns label,status,accuracy

    from bench.store import load_cells, load_curves     # pandas DataFrames for plotting
    from bench import columns as C                      # every column name, shared with plotting code

The grid core, here at the top level (imports only dct and each other):
    spec.py        TOML spec -> validated cells (config dicts keyed by config hash), before any work
    registry.py    cell kinds: register_cell(kind, keys=, validate=, run=), CellOutput
    context.py     the `ctx` a cell gets: out_dir, device, step(), phase(), progress()
    measure.py     step timer, peak memory (CPU VmHWM / CUDA max_memory_*), device description
    child.py       one cell in a spawned child process; outcome ok / error / oom / killed / timeout
    provenance.py  git, packages, host, spec hash; redaction of passwords in URLs
    store.py       Parquet part files under results/<experiment>/, loaders, lock
    shared.py      quality columns of a trained cell joined onto the cost cells that share its training
    contrasts.py   paired contrasts of each axis level against the baseline; the stored outcome format
    columns.py     column-name constants
    grid.py        the runner (resume, --force, --only, --dry-run, --jobs, timeouts, clean stop)
    table.py       rich tables of store rows
    cli.py         Typer apps `dct bench` and `dct results`

Folders, each a layer over the core (a folder may import the core and dct, never a sibling folder,
except where its docstring says so):
    cells/     the cell kinds the project ships (dct, step, augment): what one cell trains and measures
    figures/   figures and the HTML/Markdown report of result stores (`dct figures`, `dct report`)
    search/    Optuna studies whose trials are cells (`dct search`)
    scale/     many workers on one grid or study: shared storage, `dct worker`, `dct launch`
    plan/      the memory/time planner for full-size GPUs without a GPU (`dct bench plan`)
    gpu/       the scripts a session with a lent GPU runs (full-size step benchmarks)

The core reaches into a folder in two places, both lazily: grid.py asks plan/ for step cells'
predicted peaks (`--plan`), and registry.py imports cells/ to register the built-in kinds. The root
cli.py mounts each folder's Typer app (`dct bench plan` is plan/cli.py's command).
"""
