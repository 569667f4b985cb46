"""A grid shared by workers on several machines: the cells of a spec in a database table, each claimed by
one worker at a time, results in the usual store folder (shared between the machines).

    dct worker --storage postgresql://dct@db-host/dct --grid ablations/depth.toml     # on every machine
    dct launch --slurm --workers 8 --storage ... --grid ablations/depth.toml          # or through SLURM

Table dct_grid_cells, one row per (grid, config_hash); `grid` is the spec's experiment name:
    position          the cell's place in the spec (claims go in spec order)
    label             the cell's label
    state             pending | running | done | failed
    attempts          claims so far (a claim whose worker died counts)
    worker            host:pid of the current / last claimer
    claim             a random token of the current claim (NULL when none)
    attempt_id        the store attempt of the current / last claim (names its part files and artifacts)
    previous_attempt_id   the attempt before it (to find a row a dead worker had already written)
    lease_until       database-clock seconds (epoch) until which the claim holds
    heartbeat_at      the claimer's last heartbeat, database clock
    status, error     the cell's outcome (bench.columns statuses) once done or failed
    updated_at        database clock
Results are not in the database: each attempt is a row in the store (bench.store), as for `dct bench`.
The database only says who runs what; `dct results show` reads the store as always.

Claims: one UPDATE ... WHERE config_hash = (SELECT ... ORDER BY position LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING, so two workers never get the same cell: PostgreSQL skips rows another transaction holds, and
SQLite (one writer at a time) runs the statement atomically. Times come from the database's clock, so
machines' clocks need not agree.

Leases and heartbeats: a claim holds for `lease` seconds and the worker's heartbeat thread renews it
every `heartbeat` seconds while the cell runs. A worker that dies (SIGKILL, lost machine) stops renewing;
once the lease has expired any worker may claim the cell again, up to `max_attempts` claims, after which
the cell is failed with status killed. A worker that finds its lease lost (it was paused for longer than
the lease, or the database was unreachable) kills its cell and writes nothing: another worker has the
cell. Before a re-claimed cell runs, the store is checked for the previous attempt's row (a worker that
died between writing its row and marking the cell done): if it is there, the cell is marked from it.
Workers stay while other workers' cells run (one of them may die and its cell come back) and exit when
every cell of their spec is done or failed. Failed cells stay failed; `--retry-failed` puts them back.
A worker stopped by Ctrl-C or SIGTERM kills its cell and hands the claim back (pending again).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from dct.errors import ConfigError, DCTError

from bench import columns as C
from bench import store as S
from bench.provenance import now_iso, provenance, redact
from bench.spec import Cell, Spec, check_cells, load_spec

TABLE = "dct_grid_cells"
PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"


def _table():
    import sqlalchemy as sa

    metadata = sa.MetaData()
    table = sa.Table(
        TABLE, metadata,
        sa.Column("grid", sa.String(255), primary_key=True),
        sa.Column("config_hash", sa.String(64), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("worker", sa.String(255)),
        sa.Column("claim", sa.String(64)),
        sa.Column("attempt_id", sa.String(64)),
        sa.Column("previous_attempt_id", sa.String(64)),
        sa.Column("lease_until", sa.Float),
        sa.Column("heartbeat_at", sa.Float),
        sa.Column("status", sa.String(16)),
        sa.Column("error", sa.Text),
        sa.Column("updated_at", sa.Float),
        sa.Index(f"{TABLE}_grid_state", "grid", "state"),
    )
    return metadata, table


class LeaseLost(DCTError):
    """Another worker may hold this cell now: the lease expired before it could be renewed."""


@dataclass
class Claim:
    config_hash: str
    token: str
    attempt_id: str
    attempts: int
    previous_attempt_id: str | None


class GridBoard:
    """The claim table of one grid in one database (see the module docstring)."""

    def __init__(self, url: str, grid: str, *, lease: float = 120.0, max_attempts: int = 3):
        import sqlalchemy as sa

        if not (url.startswith("postgresql") or url.startswith("sqlite")):
            raise ConfigError(f"--storage {redact(url)!r}: grids are shared through PostgreSQL (or SQLite on one "
                              "machine); use a postgresql:// or sqlite:/// URL")
        if lease <= 0 or max_attempts < 1:
            raise ConfigError("the lease must be > 0 seconds and max_attempts >= 1")
        self.url, self.grid, self.lease, self.max_attempts = url, grid, float(lease), max_attempts
        sqlite = url.startswith("sqlite")
        kwargs = {"connect_args": {"timeout": 120}} if sqlite else {"pool_pre_ping": True}
        try:
            from bench.search.study import engine_url

            self.engine = sa.create_engine(engine_url(url), **kwargs)
            self.metadata, self.t = _table()
            self._create()
        except (sa.exc.SQLAlchemyError, ImportError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DCTError(f"cannot open storage {redact(url)}: {redact(first)}") from None
        if sqlite:
            self._now = sa.literal_column("((julianday('now') - 2440587.5) * 86400.0)", sa.Float)
        else:
            self._now = sa.cast(sa.func.extract("epoch", sa.func.clock_timestamp()), sa.Float)

    def _create(self) -> None:
        import sqlalchemy as sa

        for attempt in range(5):  # two workers creating the table at once: one of them loses the race
            try:
                self.metadata.create_all(self.engine)
                return
            except (sa.exc.ProgrammingError, sa.exc.IntegrityError, sa.exc.OperationalError):
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def close(self) -> None:
        self.engine.dispose()

    # --- cells ----------------------------------------------------------------------------------------

    def register(self, cells: list[Cell], done: set[str] = frozenset(), *, retry_failed: bool = False) -> int:
        """Insert the spec's cells not yet in the table (cells with an ok row in the store as done); with
        retry_failed, failed cells become pending again. Returns how many were inserted."""
        import sqlalchemy as sa

        if self.url.startswith("postgresql"):
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        t = self.t
        rows = [{"grid": self.grid, "config_hash": c.config_hash, "position": i, "label": c.label,
                 "state": DONE if c.config_hash in done else PENDING, "attempts": 0,
                 "status": C.STATUS_OK if c.config_hash in done else None} for i, c in enumerate(cells)]
        with self.engine.begin() as conn:
            before = conn.execute(sa.select(sa.func.count()).select_from(t).where(t.c.grid == self.grid)).scalar()
            for chunk in range(0, len(rows), 500):
                conn.execute(insert(t).values(rows[chunk:chunk + 500]).on_conflict_do_nothing(
                    index_elements=["grid", "config_hash"]))
            if done:  # done in the store by a local `dct bench` run since the table was filled
                conn.execute(sa.update(t).where(t.c.grid == self.grid, t.c.state == PENDING,
                                                t.c.config_hash.in_(sorted(done)))
                             .values(state=DONE, status=C.STATUS_OK, updated_at=self._now))
            if retry_failed:
                conn.execute(sa.update(t).where(t.c.grid == self.grid, t.c.state == FAILED,
                                                t.c.config_hash.in_([c.config_hash for c in cells]))
                             .values(state=PENDING, attempts=0, claim=None, updated_at=self._now))
            after = conn.execute(sa.select(sa.func.count()).select_from(t).where(t.c.grid == self.grid)).scalar()
        return after - before

    def claim(self, hashes: list[str], worker: str) -> Claim | None:
        """Atomically take the first pending (or lease-expired) cell among `hashes`, or None."""
        import sqlalchemy as sa

        t = self.t
        token, attempt_id = secrets.token_hex(8), S.new_attempt_id()
        candidate = (sa.select(t.c.config_hash)
                     .where(t.c.grid == self.grid, t.c.config_hash.in_(hashes), t.c.attempts < self.max_attempts,
                            sa.or_(t.c.state == PENDING, sa.and_(t.c.state == RUNNING, t.c.lease_until < self._now)))
                     .order_by(t.c.position).limit(1).with_for_update(skip_locked=True).scalar_subquery())
        stmt = (sa.update(t).where(t.c.grid == self.grid, t.c.config_hash == candidate)
                .values(state=RUNNING, worker=worker, claim=token, attempts=t.c.attempts + 1,
                        previous_attempt_id=t.c.attempt_id, attempt_id=attempt_id,
                        lease_until=self._now + self.lease, heartbeat_at=self._now, updated_at=self._now,
                        status=None, error=None)
                .returning(t.c.config_hash, t.c.attempts, t.c.previous_attempt_id))
        with self.engine.begin() as conn:
            row = conn.execute(stmt).first()
        if row is None:
            return None
        return Claim(row.config_hash, token, attempt_id, row.attempts, row.previous_attempt_id)

    def expire_exhausted(self, hashes: list[str]) -> list[tuple[str, int]]:
        """Cells whose lease expired after max_attempts claims: failed (status killed). Returns (hash, attempts)."""
        import sqlalchemy as sa

        t = self.t
        stmt = (sa.update(t).where(t.c.grid == self.grid, t.c.config_hash.in_(hashes), t.c.state == RUNNING,
                                   t.c.lease_until < self._now, t.c.attempts >= self.max_attempts)
                .values(state=FAILED, status=C.STATUS_KILLED, claim=None, updated_at=self._now,
                        error=sa.literal(f"killed: the lease expired after {self.max_attempts} claim(s); each "
                                         "worker stopped renewing it (killed, preempted, or out of memory)"))
                .returning(t.c.config_hash, t.c.attempts))
        with self.engine.begin() as conn:
            return [(r.config_hash, r.attempts) for r in conn.execute(stmt)]

    def renew(self, claim: Claim) -> bool:
        """Extend the lease; False when the claim is no longer this worker's (an expired lease that nobody
        claimed since is still ours: a claim replaces the token atomically)."""
        import sqlalchemy as sa

        t = self.t
        with self.engine.begin() as conn:
            n = conn.execute(sa.update(t).where(t.c.grid == self.grid, t.c.config_hash == claim.config_hash,
                                                t.c.claim == claim.token, t.c.state == RUNNING)
                             .values(lease_until=self._now + self.lease, heartbeat_at=self._now)).rowcount
        return n == 1

    def finish(self, claim: Claim, status: str, error: str | None) -> bool:
        import sqlalchemy as sa

        t = self.t
        with self.engine.begin() as conn:
            n = conn.execute(sa.update(t).where(t.c.grid == self.grid, t.c.config_hash == claim.config_hash,
                                                t.c.claim == claim.token)
                             .values(state=DONE if status == C.STATUS_OK else FAILED, status=status,
                                     error=None if error is None else redact(error)[:4000], claim=None,
                                     updated_at=self._now)).rowcount
        return n == 1

    def release(self, claim: Claim) -> None:
        """Give a claim back unrun (the worker was stopped): pending again, the attempt not counted."""
        import sqlalchemy as sa

        t = self.t
        with self.engine.begin() as conn:
            conn.execute(sa.update(t).where(t.c.grid == self.grid, t.c.config_hash == claim.config_hash,
                                            t.c.claim == claim.token)
                         .values(state=PENDING, claim=None, attempts=t.c.attempts - 1, lease_until=None,
                                 attempt_id=claim.previous_attempt_id, updated_at=self._now))

    def counts(self, hashes: list[str] | None = None) -> dict[str, int]:
        import sqlalchemy as sa

        t = self.t
        query = sa.select(t.c.state, sa.func.count()).where(t.c.grid == self.grid)
        if hashes is not None:
            query = query.where(t.c.config_hash.in_(hashes))
        with self.engine.connect() as conn:
            return dict(conn.execute(query.group_by(t.c.state)).all())

    def rows(self) -> list[dict]:
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            result = conn.execute(sa.select(self.t).where(self.t.c.grid == self.grid).order_by(self.t.c.position))
            return [dict(r._mapping) for r in result]


# --- the worker ------------------------------------------------------------------------------------------


class _Heartbeat:
    """Renews a claim's lease every `interval` seconds while a cell runs; on a lost lease it interrupts the
    main thread (SIGUSR1 -> LeaseLost), so that run_in_child kills the cell at once."""

    def __init__(self, board: GridBoard, claim: Claim, interval: float):
        self.board, self.claim, self.interval = board, claim, interval
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dct-grid-heartbeat", daemon=True)
        self._main = threading.main_thread().ident
        self._previous = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                ok = self.board.renew(self.claim)
            except Exception:  # noqa: BLE001 - an unreachable database: try again until the lease is gone
                continue
            if not ok:
                self.lost.set()
                if self._previous is not None:
                    signal.pthread_kill(self._main, signal.SIGUSR1)
                return

    def check(self, message: dict | None = None) -> None:
        if self.lost.is_set():
            raise LeaseLost(f"the lease of cell {self.claim.config_hash} was lost")

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            def handler(signum, frame):
                raise LeaseLost(f"the lease of cell {self.claim.config_hash} was lost")

            self._previous = signal.signal(signal.SIGUSR1, handler)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        try:
            self._thread.join()
        finally:
            if self._previous is not None:
                signal.signal(signal.SIGUSR1, self._previous)


@dataclass
class WorkerResult:
    spec: Spec
    worker: str
    ran: list[tuple[str, str]] = field(default_factory=list)  # (config_hash, status) of cells run here
    recovered: list[str] = field(default_factory=list)  # marked from a row a dead worker had written
    lost: list[str] = field(default_factory=list)  # leases lost while running (nothing written)
    interrupted_by: int | None = None
    counts: dict[str, int] = field(default_factory=dict)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _attempt_row(store: Path, config_hash: str, attempt_id: str) -> dict | None:
    import pandas as pd

    path = store / S.CELLS_DIR / f"{config_hash}-{attempt_id}.parquet"
    return pd.read_parquet(path).iloc[0].to_dict() if path.is_file() else None


def run_grid_worker(spec_path: str | Path, *, storage: str, store: str | Path | None = None, device: str = "auto",
                    timeout_per_cell: float | None = None, lease: float = 120.0, heartbeat: float = 30.0,
                    max_attempts: int = 3, retry_failed: bool = False, poll: float | None = None,
                    console: Console | None = None) -> WorkerResult:
    """Claim and run cells of a spec until none is left (see the module docstring)."""
    from bench.grid import _Signals, _print_outcome, _row, _spec_file_name, _worker
    from dct.device import resolve_device
    from bench.registry import get_cell

    console = console or Console(stderr=True)
    if heartbeat <= 0 or heartbeat >= lease:
        raise ConfigError(f"--heartbeat {heartbeat:g} must be > 0 and below the lease ({lease:g} s)")
    spec = load_spec(spec_path, store=store)
    check_cells(spec, list(spec.cells.values()))
    timeout = timeout_per_cell if timeout_per_cell is not None else spec.timeout_per_cell
    resolved = resolve_device(device)
    kind = get_cell(spec.kind)
    cells = list(spec.cells.values())
    by_hash = {c.config_hash: c for c in cells}
    hashes = list(by_hash)
    store_path = spec.store
    store_path.mkdir(parents=True, exist_ok=True)
    # shared with the other workers on this store, refused while `dct bench run` holds it exclusively
    with S.locked(store_path, shared=True):
        board = GridBoard(storage, spec.name, lease=lease, max_attempts=max_attempts)
        me = worker_id()
        result = WorkerResult(spec=spec, worker=me)
        try:
            added = board.register(cells, S.done_hashes(store_path), retry_failed=retry_failed)
            if spec.path is not None and spec.spec_hash is not None:
                S.save_spec(store_path, spec.path, spec.spec_hash)
            console.print(f"[bold]{spec.name}[/]: worker {me} on {resolved}; {len(cells)} cell(s) ({added} new in the "
                          f"table) {board.counts(hashes)}; storage {redact(storage)}; store {store_path}", highlight=False)
            run_id = S.new_attempt_id()
            spec_file = _spec_file_name(spec)
            wait = poll if poll is not None else max(1.0, heartbeat)
            with _Signals() as signals:
                claim = None
                try:
                    while True:
                        for h, attempts in board.expire_exhausted(hashes):
                            _write_given_up(spec, by_hash[h], store_path, run_id, spec_file, attempts)
                        claim = board.claim(hashes, me)
                        if claim is None:
                            if board.counts(hashes).get(RUNNING):
                                time.sleep(wait)  # another worker's cell may yet come back to us
                                continue
                            break
                        cell = by_hash[claim.config_hash]
                        if claim.previous_attempt_id:
                            previous = _attempt_row(store_path, cell.config_hash, claim.previous_attempt_id)
                            if previous is not None:
                                board.finish(claim, previous[C.STATUS], previous.get(C.ERROR))
                                result.recovered.append(cell.config_hash)
                                claim = None
                                continue
                        job = {"module": kind.module, "kind": spec.kind, "config": cell.config,
                               "config_hash": cell.config_hash, "label": cell.label, "device": resolved,
                               "warmup_steps": spec.warmup_steps,
                               "out_dir": str(S.artifacts_dir(store_path, cell.config_hash, claim.attempt_id))}
                        prov = provenance(spec_file=spec_file, spec_hash=spec.spec_hash)
                        started = now_iso()
                        try:
                            with _Heartbeat(board, claim, heartbeat) as beat:
                                outcome = _worker().run_in_child(job, timeout=timeout, on_progress=beat.check)
                            if beat.lost.is_set() or not board.renew(claim):
                                raise LeaseLost(f"the lease of cell {cell.config_hash} was lost")
                        except LeaseLost:
                            console.print(f"[yellow]lease lost[/] {cell.config_hash} {cell.label}: another worker has "
                                          "it; nothing written", highlight=False)
                            result.lost.append(cell.config_hash)
                            claim = None
                            continue
                        with signals.deferred():
                            row = _row(spec, cell, run_id=run_id, attempt_id=claim.attempt_id, store=store_path,
                                       started=started, finished=now_iso(), result=outcome, prov=prov)
                            S.write_attempt(store_path, row, outcome.get("curves", []))
                            board.finish(claim, row[C.STATUS], row.get(C.ERROR))
                            result.ran.append((cell.config_hash, row[C.STATUS]))
                            claim = None
                        _print_outcome(console, cell, row)
                except KeyboardInterrupt as e:
                    from bench.grid import GridInterrupted

                    if claim is not None:
                        board.release(claim)
                    result.interrupted_by = e.signum if isinstance(e, GridInterrupted) else signal.SIGINT
                    console.print(f"[yellow]stopped by {signal.Signals(result.interrupted_by).name}[/]: "
                                  f"{len(result.ran)} cell(s) run here; the claim was handed back")
            result.counts = board.counts(hashes)
            console.print(f"worker {me}: ran {len(result.ran)}, recovered {len(result.recovered)}, lost "
                          f"{len(result.lost)}; grid now {result.counts}", highlight=False)
        finally:
            board.close()
        return result


def _write_given_up(spec: Spec, cell: Cell, store: Path, run_id: str, spec_file: str | None, attempts: int) -> None:
    # the row the grid runner writes for a killed cell, so that the store says what happened to it
    from bench.grid import _row

    outcome = {C.STATUS: C.STATUS_KILLED, C.TRACEBACK: None, "metrics": {}, "curves": [], "measured": {},
               C.ERROR: f"killed: {attempts} worker(s) claimed this cell and stopped renewing the lease "
                        "(killed, preempted, or out of memory); not retried again"}
    stamp = now_iso()
    row = _row(spec, cell, run_id=run_id, attempt_id=S.new_attempt_id(), store=store, started=stamp,
               finished=stamp, result=outcome, prov=provenance(spec_file=spec_file, spec_hash=spec.spec_hash))
    S.write_attempt(store, row, [])
