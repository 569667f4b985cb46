"""Where studies and grids are shared: Optuna storages from a URL, with heartbeats and capped retries.

    sqlite:///path/study.db          one machine (the default: results/search/<study>/study.db)
    journal:///shared/path.log       a file on a shared file system, no database server (SLURM clusters)
    postgresql://user@host/db        many machines through one database server

Every storage records a heartbeat of each running trial every `heartbeat` seconds; a trial whose last
heartbeat is older than `grace` seconds (its worker was killed, or its machine lost) is failed by the
next worker that looks (optuna.storages.fail_stale_trials) and re-enqueued with the same parameters and
attributes by Retry, up to `max_retry` times. A trial handed back by a worker that was stopped (Ctrl-C,
SIGTERM) is re-enqueued by hand_back and does not count as a retry.

What Optuna alone did not guarantee, and this module adds:
- SQLite: every transaction begins with BEGIN IMMEDIATE. SQLite ignores Optuna's SELECT ... FOR UPDATE,
  so without it two processes both read a trial as WAITING and both set it RUNNING (three workers
  claimed 68 trials of 60).
- The journal storage has no heartbeats: JournalHeartbeatStorage records them as a trial system
  attribute in the journal, with the wall clock of the worker (machines' clocks must agree to within
  a fraction of the grace period: NTP).
Passwords: never printed (bench.provenance.redact); a URL without one takes $DCT_DB_PASSWORD.
"""

from __future__ import annotations

import copy
import os
import time
import warnings
from pathlib import Path

from optuna.storages import JournalStorage
from optuna.storages._heartbeat import BaseHeartbeat

from dct.errors import ConfigError, DCTError

from bench.provenance import redact

SEARCH_DIR = "search"  # results/search/<study>/
STUDY_DB = "study.db"
STORAGE_ENV = "DCT_STORAGE"  # default --storage, so that a URL need not be typed on a command line
PASSWORD_ENV = "DCT_DB_PASSWORD"  # a password for a storage URL given without one (dct launch uses it)
JOURNAL = "journal://"
HEARTBEAT_ATTR = "dct_heartbeat"  # journal: a running trial's last heartbeat, epoch seconds
HANDED_BACK_ATTR = "dct_handed_back"  # numbers of a trial's predecessors that were handed back, not failed


def study_store(study_name: str, results: str | Path = "results") -> Path:
    return Path(results) / SEARCH_DIR / study_name


def default_storage(study_name: str, results: str | Path = "results", *, create: bool = True) -> str:
    path = (study_store(study_name, results) / STUDY_DB).resolve()
    if not create and not path.is_file():
        raise ConfigError(f"no study {study_name!r}: {path} does not exist (give --storage for a study kept "
                          "elsewhere, or --results for another results folder)")
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def resolve_storage_url(url: str | None, study_name: str | None = None, results: str | Path = "results",
                        *, create: bool = True) -> str:
    """--storage, else $DCT_STORAGE, else SQLite in the study's folder; a password missing from the URL is
    taken from $DCT_DB_PASSWORD (libpq's $PGPASSWORD and ~/.pgpass work as well)."""
    url = url or os.environ.get(STORAGE_ENV)
    if not url:
        if study_name is None:
            raise ConfigError("no --storage given (nor $DCT_STORAGE) and no study name for the default SQLite file")
        return default_storage(study_name, results, create=create)
    if url.startswith(JOURNAL):
        journal_path(url)  # checked now, not in the first worker
        return url
    if "://" not in url or url.startswith("sqlite"):
        return url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"--storage {redact(url)!r} is not a database URL: use e.g. postgresql://user@host/db, "
                          "sqlite:///path/study.db or journal:///shared/path.log") from None
    password = os.environ.get(PASSWORD_ENV)
    if password and parsed.password is None:
        return parsed.set(password=password).render_as_string(hide_password=False)
    return url


def journal_path(url: str) -> Path:
    """journal:///shared/path.log -> /shared/path.log (journal://relative.log is relative to the working folder)."""
    path = url[len(JOURNAL):]
    if not path or path.endswith("/"):
        raise ConfigError(f"--storage {url!r}: a journal storage names a file, e.g. journal:///shared/dct.log")
    return Path(path)


def engine_url(url: str) -> str:
    """The URL SQLAlchemy connects with: a bare postgresql:// names psycopg 3, the driver dct installs
    (SQLAlchemy 2 maps it to psycopg2). Messages keep showing the URL as the user gave it."""
    if not url.startswith(("postgresql://", "postgres://")):
        return url
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def without_password(url: str) -> tuple[str, str | None]:
    """(the URL without its password, the password): what dct launch passes to jobs, and what it keeps out
    of the files submitit writes."""
    if url.startswith(("sqlite", JOURNAL)) or "://" not in url:
        return url, None
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.password is None:
        return url, None
    # URL.set(password=None) keeps the password ("unchanged"): replace the field itself
    return parsed._replace(password=None).render_as_string(hide_password=False), str(parsed.password)


def make_storage(url: str, *, heartbeat: int = 30, grace: int | None = None, max_retry: int = 3):
    """An Optuna storage for `url` with heartbeats and Retry of stale trials (see the module docstring)."""
    import optuna

    grace = grace or 4 * heartbeat
    if heartbeat <= 0 or grace <= heartbeat:
        raise ConfigError(f"--heartbeat {heartbeat!r} must be > 0 and below the grace period ({grace!r} s)")
    retry = Retry(max_retry)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if url.startswith(JOURNAL):
            return _journal(url, heartbeat, grace, retry)
        return _rdb(url, heartbeat, grace, retry)


def _rdb(url: str, heartbeat: int, grace: int, retry):
    from optuna.storages import RDBStorage
    from sqlalchemy import event
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError

    sqlite = url.startswith("sqlite")
    races = (IntegrityError, ProgrammingError, *((OperationalError,) if sqlite else ()))
    engine = {"connect_args": {"timeout": 120}} if sqlite else {"pool_pre_ping": True}
    for attempt in range(5):  # workers creating the tables at once: all but one lose the race, and retry
        try:
            storage = RDBStorage(engine_url(url), engine_kwargs=engine, heartbeat_interval=heartbeat,
                                 grace_period=grace, heartbeat_stale_trial_callback=retry)
            break
        except races as e:
            if attempt == 4:
                raise DCTError(f"cannot open storage {redact(url)}: {redact(_first_line(e))}") from None
            time.sleep(0.3 * (attempt + 1))
        except (SQLAlchemyError, ImportError) as e:
            raise DCTError(f"cannot open storage {redact(url)}: {redact(_first_line(e))}") from None
    if sqlite:  # see the module docstring: claims are atomic only with BEGIN IMMEDIATE
        @event.listens_for(storage.engine, "connect")
        def _autocommit_driver(dbapi_connection, record):
            dbapi_connection.isolation_level = None  # pysqlite's own BEGIN off: SQLAlchemy's "begin" emits one

        @event.listens_for(storage.engine, "begin")
        def _begin_immediate(connection):
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        storage.engine.dispose()  # connections opened before the listeners were attached
    return storage


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _journal(url: str, heartbeat: int, grace: int, retry):
    from optuna.storages.journal import JournalFileBackend

    path = journal_path(url)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalHeartbeatStorage(JournalFileBackend(str(path)), heartbeat_interval=heartbeat,
                                       grace_period=grace, heartbeat_stale_trial_callback=retry)
    except OSError as e:
        raise DCTError(f"cannot open storage {url}: {e}") from None


class JournalHeartbeatStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal storage with heartbeats (Optuna's BaseHeartbeat on the journal, wall clock)."""

    def __init__(self, backend, *, heartbeat_interval: int, grace_period: int, heartbeat_stale_trial_callback=None):
        super().__init__(backend)
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self.heartbeat_stale_trial_callback = heartbeat_stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        from optuna.exceptions import UpdateFinishedTrialError

        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
        except UpdateFinishedTrialError:
            pass  # another worker failed the trial as stale: the worker finds out when it finishes it

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        from optuna.trial import TrialState

        now = time.time()
        return [t._trial_id for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
                if now - t.system_attrs.get(HEARTBEAT_ATTR, now) > self.grace_period]

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self):
        return self.heartbeat_stale_trial_callback


class Retry:
    """Optuna's RetryHeartbeatStaleTrialCallback, counting only retries of trials whose worker died (not
    hand-backs), and calling `on_given_up(study, trial)` when a trial has used all its retries."""

    def __init__(self, max_retry: int, on_given_up=None):
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.optuna = RetryHeartbeatStaleTrialCallback(max_retry=None)
        self.max_retry, self.on_given_up = max_retry, on_given_up

    def __call__(self, study, trial) -> None:
        history = [*trial.system_attrs.get("retry_history", []), trial.number]
        if len(history) - len(trial.system_attrs.get(HANDED_BACK_ATTR, [])) > self.max_retry:
            if self.on_given_up is not None:
                self.on_given_up(study, trial)
            return
        trial = copy.deepcopy(trial)  # the copy starts without the dead worker's last heartbeat (journal)
        trial.system_attrs = {k: v for k, v in trial.system_attrs.items() if k != HEARTBEAT_ATTR}
        self.optuna(study, trial)


def hand_back(study, number: int | None) -> None:
    """A stopped worker's trial: failed, and enqueued again as a copy that does not count as a retry."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    if number is None:
        return
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if trial is None or trial.state not in (TrialState.FAIL, TrialState.RUNNING):
        return
    if trial.state == TrialState.RUNNING:
        try:
            study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        except UpdateFinishedTrialError:
            return  # failed as stale meanwhile: Retry has re-enqueued it
    trial = study._storage.get_trial(trial._trial_id)
    trial.system_attrs = {**trial.system_attrs,
                          HANDED_BACK_ATTR: [*trial.system_attrs.get(HANDED_BACK_ATTR, []), number]}
    Retry(max_retry=10**9)(study, trial)
