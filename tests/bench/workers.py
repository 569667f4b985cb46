"""Fixtures and helpers of the search and scale tests: the tiny_mlp cell kind, storage URLs (SQLite and a
journal file always, PostgreSQL when a server is there), and workers started as separate processes.

PostgreSQL: $DCT_TEST_PG_URL (set by .ci/run through .ci/postgres.sh), else a server this session starts
itself with .ci/postgres.sh when PostgreSQL is installed and it may run it (root or the postgres user's
binaries usable); else the PostgreSQL tests are skipped, saying why (under CI they fail: tests/required.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import tests.bench.mlp_cell  # noqa: F401  registers the tiny_mlp cell kind
from tests.required import missing

REPO = Path(__file__).resolve().parents[2]
PG_ENV = "DCT_TEST_PG_URL"
WORKER = "import tests.bench.mlp_cell; from bench.scale.launch import worker_app; worker_app()"


def _start_postgres(tmp: Path) -> tuple[str | None, str]:
    script = REPO / ".ci" / "postgres.sh"
    if not any(Path(p).is_dir() for p in Path("/usr/lib/postgresql").glob("*/bin")) and not shutil.which("pg_config"):
        return None, f"no PostgreSQL server: ${PG_ENV} is not set and PostgreSQL is not installed (.ci/run installs it)"
    if os.geteuid() != 0:
        return None, f"no PostgreSQL server: ${PG_ENV} is not set (start one with .ci/postgres.sh start ENV_FILE)"
    env_file = tmp / "pg.env"
    done = subprocess.run(["bash", str(script), "start", str(env_file)], capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        return None, f"no PostgreSQL server: .ci/postgres.sh failed: {done.stderr.strip()[-300:]}"
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    return values["DCT_TEST_PG_URL"], str(env_file)


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory):
    url = os.environ.get(PG_ENV)
    started = None
    if not url:
        url, why = _start_postgres(tmp_path_factory.mktemp("pg"))
        if url is None:
            missing(why)
        started = why
    yield url
    if started:
        subprocess.run(["bash", str(REPO / ".ci" / "postgres.sh"), "stop", started], capture_output=True, timeout=60)


@pytest.fixture(params=["sqlite", "journal", "postgresql"])
def storage_url(request, tmp_path):
    """The three storages workers share: SQLite (one machine), a journal file (a shared file system, no
    server) and PostgreSQL (many machines)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    if request.param == "journal":
        return f"journal://{tmp_path / 'shared.log'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def unique():
    """A name no other test (or earlier run against the same database) has used."""
    return f"t{uuid.uuid4().hex[:10]}"


def worker_env(**extra) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DCT_CELL_MODULES": "tests.bench.mlp_cell", "OMP_NUM_THREADS": "1",
           "COLUMNS": "200"}
    env.update(extra)
    return env


def start_worker(args: list[str], cwd: Path, log: Path, **env) -> subprocess.Popen:
    """`dct worker ARGS` as its own process (the app the root cli mounts), output to `log`."""
    handle = open(log, "a")
    return subprocess.Popen([sys.executable, "-c", WORKER, *args], cwd=cwd, env=worker_env(**env),
                            stdout=handle, stderr=subprocess.STDOUT)


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"worker exited ({proc.returncode}) before {what}:\n"
                                 + (log.read_text()[-3000:] if log else ""))
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f":\n{log.read_text()[-3000:]}" if log else ""))
        time.sleep(0.1)


def dead(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


MLP_SPACE = """
[study]
name = "NAME"
cell = "tiny_mlp"
objectives = "metric_final_loss:minimize"
trials = TRIALS
startup_trials = 2
seed = 3

[pruning]
pruner = "PRUNER"
on = "loss"
startup_trials = 1
warmup_epochs = 1

[fixed]
steps = 3
step_sleep_s = SLEEP

[space.lr]
type = "float"
low = 0.001
high = 0.5
log = true

[space.width]
type = "categorical"
choices = [2, 8, 16]
"""


@pytest.fixture
def mlp_space(tmp_path):
    def write(name: str, trials: int = 3, sleep: float = 0.0, pruner: str = "median", file: str = "space.toml") -> Path:
        path = tmp_path / file
        path.write_text(MLP_SPACE.replace("NAME", name).replace("TRIALS", str(trials)).replace("SLEEP", str(sleep))
                        .replace("PRUNER", pruner))
        return path

    return write
