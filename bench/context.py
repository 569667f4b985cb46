"""`ctx`, the second argument of a cell's run(config, ctx): where to write, what to run on, what to report."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from bench.measure import DeviceMeter, StepTimer


@dataclass
class CellContext:
    out_dir: Path  # this attempt's own folder for images, tokens, checkpoints (created, empty)
    device: str  # resolved: "cpu" or "cuda:N"
    config_hash: str
    label: str
    timer: StepTimer
    meter: DeviceMeter
    _report: Callable[[dict], None] = field(repr=False, default=lambda message: None)

    @contextmanager
    def step(self) -> Iterator[None]:
        """Wrap ONE optimisation step; its time goes into the step-time median (CUDA is synchronised)."""
        with self.timer.step():
            yield

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Wrap a named part of the cell (e.g. "train", "eval"): seconds and peak memory become columns
        phase_<name>_s and phase_<name>_peak_bytes."""
        with self.meter.phase(name):
            yield

    def progress(self, done: int, total: int | None = None, **info: Any) -> None:
        """Shown on the runner's progress bar, e.g. ctx.progress(epoch + 1, max_epochs, loss=0.3)."""
        self._report({"done": done, "total": total, "info": {k: _short(v) for k, v in info.items()}})


def _short(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    return value if isinstance(value, (int, str, bool)) or value is None else str(value)
