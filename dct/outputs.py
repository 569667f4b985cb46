"""Output locations are checked before any work starts, and a result that cannot be saved where asked is
saved somewhere safe instead, so a long run never ends with a traceback and nothing on disk."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from .errors import ConfigError

RESCUE_ENV = "DCT_RESCUE_DIR"


def ensure_writable_dir(folder: str | Path, what: str) -> Path:
    """Create `folder` if needed and prove that a file can be written in it (a real write, not
    os.access, which says yes to root on a read-only mount)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".dct-write-check-"):
            pass
    except OSError as e:
        raise ConfigError(f"{what} {str(folder)!r} cannot be written ({e.strerror or e}); "
                          "choose a folder you can write to") from None
    return folder


def rescue_dir() -> Path:
    """Where results that could not be saved where asked go: $DCT_RESCUE_DIR, else <tmp>/dct-rescued."""
    return Path(os.environ.get(RESCUE_ENV) or Path(tempfile.gettempdir()) / "dct-rescued")


def rescue_path(wanted: str | Path) -> Path:
    wanted = Path(wanted)
    folder = rescue_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{wanted.stem}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}{wanted.suffix}"
