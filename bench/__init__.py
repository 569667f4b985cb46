"""The benchmark grid: ablation specs -> cells -> one fresh process per cell -> a result store.

    dct bench depth                      # ablations/depth.toml, resumes where it stopped
    dct bench run --spec my.toml --dry-run
    dct results show results/depth --columns label,status,accuracy

    from bench.store import load_cells, load_curves     # pandas DataFrames for plotting
    from bench import columns as C                      # every column name, shared with plotting code

Modules, one concept each:
    spec.py        TOML spec -> validated cells (config dicts keyed by config hash), before any work
    registry.py    cell kinds: register_cell(kind, keys=, validate=, run=), CellOutput
    context.py     the `ctx` a cell gets: out_dir, device, step(), phase(), progress()
    measure.py     step timer, peak memory (CPU VmHWM / CUDA max_memory_*), device description
    worker.py      one cell in a spawned child process; outcome ok / error / oom / killed / timeout
    provenance.py  git, packages, host, spec hash; redaction of passwords in URLs
    store.py       Parquet part files under results/<experiment>/, loaders, lock
    columns.py     column-name constants
    grid.py        the runner (resume, --force, --only, --dry-run, timeouts, clean stop)
    table.py       rich tables of store rows
    cli.py         Typer apps: bench_app, results_app, make_bench_command(name)
    cells_dct.py   the DCT cell
"""
