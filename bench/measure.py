"""What the harness measures about every cell: step times, peak memory (overall and per phase), wall time,
and what device it ran on.

Peak memory is only meaningful per process, so every cell runs in a fresh child (bench.child):
- CPU: the high-water RSS of that child, read from /proc/self/status (VmHWM). Not `ru_maxrss`: Linux
  carries the parent's RSS high-water mark across fork+exec into the child's ru_maxrss (a runner at
  850 MB spawns a 68 MB child that reports 850 MB), and tracemalloc does not see torch tensors at all.
- CUDA: torch.cuda.max_memory_allocated / max_memory_reserved, peaks reset when the child starts.
Per-phase peaks reset the high-water mark (clear_refs on CPU, reset_peak_memory_stats on CUDA) at the
phase's start, after folding the value so far into the running maxima, so the overall peak survives.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from dct.errors import ConfigError

# --- CPU resident memory -----------------------------------------------------------------------------


def _status_kb(*keys: str) -> dict[str, int]:
    found = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in keys:
                    found[key] = int(line.split()[1])
    except OSError:
        pass
    return found


def peak_rss_bytes() -> int:
    """This process's high-water resident set size since it started (or since reset_peak_rss)."""
    hwm = _status_kb("VmHWM").get("VmHWM")
    if hwm is not None:
        return hwm * 1024
    # Not Linux: ru_maxrss is in kilobytes on Linux, bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where the kernel does not allow it.

    Checked after the write: a kernel that accepted the write and kept the old mark would silently turn
    every phase peak into the process peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    marks = _status_kb("VmHWM", "VmRSS")
    if len(marks) < 2:
        return False
    return marks["VmHWM"] - marks["VmRSS"] <= 16 * 1024  # other threads may allocate between the two reads


# --- running maxima of a resettable high-water mark ----------------------------------------------------


class HighWater:
    """Overall and per-phase peaks of a high-water mark that phases reset.

    `read()` returns a tuple of high-water values (e.g. CUDA allocated and reserved), `reset()` resets
    them and returns whether it could. Before every reset the current marks are folded into the overall
    maximum and into every open phase, so nested phases and the overall peak stay exact."""

    def __init__(self, read: Callable[[], tuple[int, ...]], reset: Callable[[], bool] | None):
        self._read = read
        self._reset = reset
        self.overall = tuple(0 for _ in read())
        self._open: list[list] = []
        self._resets_ok = reset is not None

    def _fold(self) -> None:
        now = self._read()
        self.overall = tuple(max(a, b) for a, b in zip(self.overall, now))
        for entry in self._open:
            entry[0] = tuple(max(a, b) for a, b in zip(entry[0], now))

    def enter(self) -> list:
        self._fold()
        if self._reset is not None and not self._reset():
            self._resets_ok = False
        entry = [self._read()]
        self._open.append(entry)
        return entry

    def exit(self, entry: list) -> tuple[int, ...] | None:
        self._fold()
        self._open.remove(entry)
        # Without a reset, the mark at phase end would include everything before the phase.
        return entry[0] if self._resets_ok else None

    def peak(self) -> tuple[int, ...]:
        self._fold()
        return self.overall


# --- step timing -----------------------------------------------------------------------------------------


class StepTimer:
    """Times optimisation steps; the median leaves out the first `warmup` steps (allocator growth,
    cuDNN autotuning, lazy imports), all steps' times are kept."""

    def __init__(self, warmup: int = 1, sync: Callable[[], None] | None = None):
        if warmup < 0:
            raise ConfigError(f"warmup_steps={warmup!r} is not accepted: an integer >= 0")
        self.warmup = warmup
        self.times: list[float] = []
        self._sync = sync  # CUDA work is asynchronous: without a synchronize a step looks instant

    @contextmanager
    def step(self) -> Iterator[None]:
        if self._sync:
            self._sync()
        start = time.perf_counter()
        yield
        if self._sync:
            self._sync()
        self.times.append(time.perf_counter() - start)

    def record(self, seconds: float) -> None:
        """For a step timed by the cell itself."""
        self.times.append(float(seconds))

    def median(self) -> float | None:
        """Median after warm-up; None when no step came after the warm-up."""
        timed = self.times[self.warmup:]
        return statistics.median(timed) if timed else None


# --- devices ---------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_device(device: str) -> str:
    """E.g. 'AMD EPYC 7B13, 2 of 16 cores' or 'NVIDIA H100 80GB HBM3, 79.1 GiB, CUDA 12.8'."""
    if device.startswith("cuda"):
        import torch

        props = torch.cuda.get_device_properties(torch.device(device))
        return f"{props.name}, {props.total_memory / 2**30:.1f} GiB, CUDA {torch.version.cuda}"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{_cpu_model()}, {usable} of {os.cpu_count()} cores"


class DeviceMeter:
    """Peak memory of the device a cell runs on, overall and per phase, plus phase durations."""

    def __init__(self, device: str):
        self.device = device
        self.cuda = device.startswith("cuda")
        self.phase_seconds: dict[str, float] = {}
        self.phase_peaks: dict[str, int | None] = {}
        self.rss = HighWater(lambda: (peak_rss_bytes(),), reset_peak_rss if not self.cuda else None)
        self.gpu: HighWater | None = None
        if self.cuda:
            import torch

            dev = torch.device(device)
            torch.cuda.set_device(dev)
            torch.cuda.reset_peak_memory_stats(dev)

            def reset() -> bool:
                torch.cuda.reset_peak_memory_stats(dev)
                return True

            self.gpu = HighWater(lambda: (torch.cuda.max_memory_allocated(dev), torch.cuda.max_memory_reserved(dev)),
                                 reset)

    def sync(self) -> Callable[[], None] | None:
        if not self.cuda:
            return None
        import torch

        dev = torch.device(self.device)
        return lambda: torch.cuda.synchronize(dev)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Seconds and peak memory of a named part of the cell (repeated phases add up / take the max)."""
        primary = self.gpu or self.rss
        sync = self.sync()
        if sync:
            sync()
        entry = primary.enter()
        start = time.perf_counter()
        try:
            yield
        finally:
            if sync:
                sync()
            self.phase_seconds[name] = self.phase_seconds.get(name, 0.0) + time.perf_counter() - start
            peak = primary.exit(entry)
            value = None if peak is None else peak[0]
            previous = self.phase_peaks.get(name)
            self.phase_peaks[name] = value if previous is None or value is None else max(previous, value)

    def peaks(self) -> dict[str, int | None]:
        from bench import columns as C

        out: dict[str, int | None] = {C.PEAK_RSS_BYTES: self.rss.peak()[0],
                                      C.PEAK_GPU_ALLOCATED: None, C.PEAK_GPU_RESERVED: None}
        if self.gpu is not None:
            allocated, reserved = self.gpu.peak()
            out[C.PEAK_GPU_ALLOCATED] = allocated
            out[C.PEAK_GPU_RESERVED] = reserved
        out[C.PEAK_MEM_BYTES] = out[C.PEAK_GPU_ALLOCATED] if self.cuda else out[C.PEAK_RSS_BYTES]
        return out
