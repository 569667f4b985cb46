"""Where a result came from: code version, packages, machine, time, spec. Every row of the store carries
these columns, and every string that goes into a row passes through `redact`, so a database URL with a
password (grids will later be shared through PostgreSQL) never lands in a results file."""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import platform
import socket
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

from dct.redact import redact

from bench import columns as C

PACKAGES = ("torch", "diffusers", "transformers", "timm", "torch-fidelity", "optuna", "numpy", "pandas",
            "dct-bench")

def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def file_hash(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def _repo_root() -> Path:
    # The code being measured is this package's checkout, wherever the runner was started from.
    return Path(__file__).resolve().parent.parent


def git_state(root: Path | None = None) -> tuple[str | None, bool | None]:
    """(HEAD sha, whether tracked files differ from it); (None, None) outside a git checkout."""
    root = root or _repo_root()

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    if sha is None:
        return None, None
    # Untracked files are left out: in a shared working tree they are usually someone else's new work,
    # not a change to the code that ran.
    status = git("status", "--porcelain", "--untracked-files=no")
    return sha, None if status is None else bool(status)


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def provenance(*, spec_file: str | Path | None, spec_hash: str | None) -> dict[str, Any]:
    """Columns describing this runner's code, packages and machine (device columns come from the cell)."""
    sha, dirty = git_state()
    row: dict[str, Any] = {
        C.GIT_SHA: sha,
        C.GIT_DIRTY: dirty,
        C.HOSTNAME: socket.gethostname(),
        C.PYTHON_VERSION: platform.python_version(),
        C.SPEC_FILE: None if spec_file is None else str(spec_file),
        C.SPEC_HASH: spec_hash,
    }
    for name, version in package_versions().items():
        row[C.version_col(name)] = version
    return redact(row)
