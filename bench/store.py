"""The result store of one experiment: a folder that pandas reads, which a crash cannot corrupt.

    results/<experiment>/
        cells/<config_hash>-<attempt_id>.parquet    one row per attempt at a cell (see bench.columns)
        curves/<config_hash>-<attempt_id>.parquet   that attempt's per-epoch rows
        artifacts/<config_hash>/<attempt_id>/       what the cell wrote (images, tokens)
        specs/<spec_hash>.toml                      every spec file that ran into this store
        .lock                                       held (flock) by the runner writing here

    from bench.store import load_cells, load_curves
    cells = load_cells("results/depth")      # one current row per cell; all_rows=True for every attempt

Why Parquet part files: a row per attempt is written once and never touched again. Each part is
written to a hidden temp file, fsynced, and os.replace'd into place, so a part either exists whole or
not at all; the curves part is written before the cell part, and curves whose cell row is missing (a
runner killed between the two) are ignored. A single CSV appended to could end in a torn line after a
kill, and a single Parquet rewritten per cell costs O(cells^2) and loses rows when two runners race.
Parquet keeps dtypes (ints stay ints, None stays missing) and pyarrow reads it without a schema.
`pd.read_parquet` reads any one part; the loaders here concatenate them (part schemas differ when
cells have different settings or metrics, which a single pyarrow dataset scan does not merge).

Re-runs never delete: `--force` appends a new attempt, and loading marks older rows of the same cell
SUPERSEDED (the current row is the latest ok one, or the latest one if the cell never succeeded), so a
failed re-run never hides a completed result.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from dct.errors import DCTError

from bench import columns as C
from bench.provenance import redact

CELLS_DIR = "cells"
CURVES_DIR = "curves"
ARTIFACTS_DIR = "artifacts"
SPECS_DIR = "specs"
LOCK_FILE = ".lock"
_TMP_PREFIX = ".tmp-"


class StoreBusyError(DCTError):
    """Another runner holds the store's lock."""


def new_attempt_id() -> str:
    # Sorts in time order, so the latest attempt of a cell is the largest id.
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f") + "-" + uuid.uuid4().hex[:6]


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write_parquet(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{_TMP_PREFIX}{path.name}.{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            frame.to_parquet(f, index=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def _cell_value(value: Any) -> Any:
    # One Parquet column holds one type; lists and dicts (e.g. prompt templates) are stored as JSON.
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str)
    return value


def write_attempt(store: str | Path, row: dict[str, Any], curves: list[dict[str, Any]]) -> Path:
    """Write one attempt: its curves part, then its cell row (the row is what makes the attempt exist)."""
    store = Path(store)
    row = {k: _cell_value(redact(v)) for k, v in row.items()}
    name = f"{row[C.CONFIG_HASH]}-{row[C.ATTEMPT_ID]}.parquet"
    if curves:
        keys = {C.EXPERIMENT: row.get(C.EXPERIMENT), C.CONFIG_HASH: row[C.CONFIG_HASH],
                C.ATTEMPT_ID: row[C.ATTEMPT_ID], C.LABEL: row.get(C.LABEL)}
        frame = pd.DataFrame([{**keys, **{k: _cell_value(redact(v)) for k, v in r.items()}} for r in curves])
        _atomic_write_parquet(frame, store / CURVES_DIR / name)
    path = store / CELLS_DIR / name
    _atomic_write_parquet(pd.DataFrame([row]), path)
    return path


def _parts(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))


def _read_parts(paths: list[Path]) -> list[pd.DataFrame]:
    """Every readable part; a damaged one (truncated, overwritten, not Parquet) is skipped with a warning
    naming it, so one bad file never makes the whole store unreadable."""
    from dct.clikit import warn

    frames = []
    for p in paths:
        try:
            frames.append(pd.read_parquet(p))
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a damaged file
            warn(f"skipping damaged store file {p} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                 "the other rows are read")
    return frames


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    columns = list(dict.fromkeys(c for f in frames for c in f.columns))
    # A column that is all missing in one part (None -> Parquet null) would turn the whole column into
    # objects; drop it before concatenating and restore the full column set after.
    frames = [f.dropna(axis=1, how="all") for f in frames]
    return pd.concat(frames, ignore_index=True, sort=False).reindex(columns=columns)


def _mark_current(cells: pd.DataFrame) -> pd.DataFrame:
    cells = cells.sort_values(C.ATTEMPT_ID, kind="stable").reset_index(drop=True)
    ok = cells[C.STATUS] == C.STATUS_OK
    last_any = cells.groupby(C.CONFIG_HASH)[C.ATTEMPT_ID].transform("max")
    last_ok = cells[C.ATTEMPT_ID].where(ok).groupby(cells[C.CONFIG_HASH]).transform("max")
    current = last_ok.fillna(last_any)
    cells[C.SUPERSEDED] = cells[C.ATTEMPT_ID] != current
    return cells


def load_cells(store: str | Path, *, all_rows: bool = False) -> pd.DataFrame:
    """Cell rows of a store: the current row of each cell, or every attempt (with SUPERSEDED) if all_rows.
    Current rows of cells that only measured cost carry the quality columns of the cell that trained for
    them (bench.shared)."""
    frames = _read_parts(_parts(Path(store) / CELLS_DIR))
    if not frames:
        return pd.DataFrame(columns=[C.CONFIG_HASH, C.LABEL, C.STATUS, C.ATTEMPT_ID, C.SUPERSEDED])
    cells = _mark_current(_concat(frames))
    if not all_rows:
        from bench.shared import join

        cells = join(cells[~cells[C.SUPERSEDED]].reset_index(drop=True))
    return with_cost_peak(cells)


def with_cost_peak(cells: pd.DataFrame) -> pd.DataFrame:
    """COST_PEAK_BYTES (see bench.columns): the probe phase's peak where a cell has one, else its peak."""
    if C.PEAK_MEM_BYTES in cells.columns and C.COST_PEAK_BYTES not in cells.columns:
        probe = C.phase_peak_col("probe")
        cells = cells.copy()
        cells[C.COST_PEAK_BYTES] = (cells[probe].fillna(cells[C.PEAK_MEM_BYTES]) if probe in cells.columns
                                    else cells[C.PEAK_MEM_BYTES])
    return cells


def load_curves(store: str | Path, *, all_rows: bool = False) -> pd.DataFrame:
    """Per-epoch rows of the current attempts (every recorded attempt if all_rows)."""
    cells = load_cells(store, all_rows=all_rows)
    parts = _parts(Path(store) / CURVES_DIR)
    keep = set(cells[C.ATTEMPT_ID]) if len(cells) else set()
    # The part name is "<hash>-<attempt>.parquet": filter before reading, and drop orphans of a killed run.
    frames = _read_parts([p for p in parts if p.stem.split("-", 1)[1] in keep])
    if not frames:
        return pd.DataFrame(columns=[C.CONFIG_HASH, C.ATTEMPT_ID, C.EPOCH])
    return _concat(frames)


def done_hashes(store: str | Path) -> set[str]:
    """Config hashes that have an ok row: a resumed grid skips them."""
    cells = load_cells(store, all_rows=True)
    if cells.empty:
        return set()
    return set(cells.loc[cells[C.STATUS] == C.STATUS_OK, C.CONFIG_HASH])


def artifacts_dir(store: str | Path, config_hash: str, attempt_id: str) -> Path:
    return Path(store) / ARTIFACTS_DIR / config_hash / attempt_id


def save_spec(store: str | Path, spec_file: str | Path, spec_hash: str) -> None:
    target = Path(store) / SPECS_DIR / f"{spec_hash}.toml"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{_TMP_PREFIX}{target.name}.{os.getpid()}")
        tmp.write_text(redact(Path(spec_file).read_text()))
        os.replace(tmp, target)


@contextmanager
def locked(store: str | Path, *, shared: bool = False) -> Iterator[Path]:
    """Use of a store by this process (released by the kernel even on SIGKILL): exclusive for the grid
    runner (`dct bench run`), shared among the grid workers (`dct worker --grid`, which split cells
    through their database), so a runner and workers never run the same cells side by side. Leftover
    temp files of a killed writer are removed under the exclusive lock only (workers may be writing)."""
    store = Path(store)
    try:
        store.mkdir(parents=True, exist_ok=True)
        fd = os.open(store / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise DCTError(f"store {str(store)!r} cannot be written ({e.strerror or e}); choose another --store") from None
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            by = f"`dct bench run`, pid {holder}" if holder else "grid worker(s), `dct worker --grid`"
            raise StoreBusyError(f"store {store} is in use by another runner ({by}); wait for it or use "
                                 "another --store") from None
        if not shared:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            for folder in (CELLS_DIR, CURVES_DIR, SPECS_DIR):
                for tmp in (store / folder).glob(f"{_TMP_PREFIX}*"):
                    tmp.unlink(missing_ok=True)
        try:
            yield store
        finally:
            if not shared:
                os.ftruncate(fd, 0)  # a worker that finds the lock file empty knows no runner holds it
    finally:
        os.close(fd)
