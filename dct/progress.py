"""The one progress bar of dct (rich, like the grid runner's), with tqdm's small call shape:

    bar = progress(total=40, desc="token for class 7", enabled=True)
    bar.update(1)
    bar.set_postfix(loss=0.41, acc=0.75)
    bar.close()                    # or: with progress(...) as bar: ...

It draws on stderr and vanishes when closed (results go to stdout); disabled, or when stderr is not a
terminal (a log file, a grid cell's log), it draws nothing.
"""

from __future__ import annotations

from typing import Any


class _Bar:
    def __init__(self, total: int | None, desc: str, enabled: bool):
        self._progress = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        console = Console(stderr=True)
        if not console.is_terminal:
            return
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[postfix]}"),
                                  console=console, transient=True)
        self._task = self._progress.add_task(desc, total=total, postfix="")
        self._progress.start()

    def update(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:  # refresh: tqdm's, accepted and moot
        if self._progress is not None:
            text = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
            self._progress.update(self._task, postfix=text)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __enter__(self) -> "_Bar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(total: int | None, desc: str, enabled: bool = True) -> _Bar:
    """A progress bar of `total` steps; the same call shape as dct.train's `_progress(total, desc, enabled)`."""
    return _Bar(total, desc, enabled)
