"""One cell in one fresh child process (multiprocessing "spawn"): a clean interpreter, so its peak memory
is the cell's own, a crash or an out-of-memory kill takes down only the child, and a timeout can kill it.

The child never touches the store: it sends its result to the runner over a pipe and the runner writes
it. If the runner dies, the child is killed too (PR_SET_PDEATHSIG on Linux), so no orphan keeps a GPU.
"""

from __future__ import annotations

import ctypes
import importlib
import math
import multiprocessing
import os
import random
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from bench import columns as C

_SPAWN = multiprocessing.get_context("spawn")
LOG_NAME = "cell.log"  # in the attempt's artifacts folder: the cell's stdout and stderr


# --- in the child --------------------------------------------------------------------------------------


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _seed_everything(seed: Any) -> None:
    # Cells should seed their own generators from config["seed"]; this makes a cell that forgets one
    # deterministic anyway.
    if not isinstance(seed, int) or isinstance(seed, bool):
        return
    random.seed(seed)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed(seed % 2**32)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


def _scalar(where: str, value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:  # numpy and 0-d torch scalars
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value
    raise TypeError(f"{where} is {type(value).__name__}; metrics and curve rows hold flat scalars "
                    "(str, int, float, bool, None) only")


def _check_output(output: Any) -> tuple[dict, list[dict]]:
    metrics = getattr(output, "metrics", None)
    curves = getattr(output, "curves", None)
    if not isinstance(metrics, dict) or not isinstance(curves, list):
        raise TypeError(f"a cell's run() must return bench.registry.CellOutput, got {type(output).__name__}")
    clean_metrics = {str(k): _scalar(f"metric {k!r}", v) for k, v in metrics.items()}
    clean_curves = []
    for i, row in enumerate(curves):
        if not isinstance(row, dict):
            raise TypeError(f"curves[{i}] is {type(row).__name__}; each curve row is a dict")
        clean_curves.append({str(k): _scalar(f"curves[{i}][{k!r}]", v) for k, v in row.items()})
    return clean_metrics, clean_curves


def classify_exception(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return C.STATUS_OOM
    torch = sys.modules.get("torch")
    oom_type = getattr(torch, "OutOfMemoryError", None) if torch else None  # is torch.cuda.OutOfMemoryError
    if oom_type is not None and isinstance(exc, oom_type):
        return C.STATUS_OOM
    text = str(exc).lower()
    # torch's CPU allocator raises a plain RuntimeError ("DefaultCPUAllocator: can't allocate memory")
    if isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text):
        return C.STATUS_OOM
    return C.STATUS_ERROR


def _redirect_output(log: Path) -> None:
    # The runner's terminal shows its progress bar; a cell's prints and library progress bars go to a
    # log beside its artifacts instead (the error and traceback are recorded in its row either way).
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def child_main(job: dict, conn) -> None:
    # Ctrl-C reaches the whole process group; the runner decides what happens to the child.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(job["parent_pid"])
    out_dir = Path(job["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    if job.get("log"):
        _redirect_output(out_dir / LOG_NAME)

    result: dict[str, Any] = {"type": "result", C.STATUS: C.STATUS_OK, C.ERROR: None, C.TRACEBACK: None,
                              "metrics": {}, "curves": [], "measured": {C.DEVICE: job["device"]}}
    meter = timer = None
    start = time.perf_counter()
    try:
        from bench.context import CellContext
        from bench.measure import DeviceMeter, StepTimer
        from bench.registry import get_cell

        importlib.import_module(job["module"])  # registers the kind in this fresh interpreter
        kind = get_cell(job["kind"])
        meter = DeviceMeter(job["device"])
        timer = StepTimer(job["warmup_steps"], meter.sync())
        ctx = CellContext(out_dir=out_dir, device=job["device"], config_hash=job["config_hash"], label=job["label"],
                          timer=timer, meter=meter, _report=lambda m: conn.send({"type": "progress", **m}))
        config = job["config"]
        if job.get("threads"):
            import torch

            torch.set_num_threads(job["threads"])
        _seed_everything(config.get("seed"))
        start = time.perf_counter()
        output = kind.run(config, ctx)
        result["metrics"], result["curves"] = _check_output(output)
    except BaseException as exc:  # noqa: BLE001 - every failure of a cell is a recorded outcome
        result[C.STATUS] = classify_exception(exc)
        result[C.ERROR] = f"{type(exc).__name__}: {exc}"
        result[C.TRACEBACK] = traceback.format_exc(limit=-15)
        traceback.print_exc()
    wall = time.perf_counter() - start
    if meter is not None and timer is not None:
        result["measured"] = _measurements(job["device"], meter, timer, wall)
    conn.send(result)
    conn.close()


def _measurements(device: str, meter, timer, wall: float) -> dict[str, Any]:
    from bench.measure import describe_device

    median = timer.median()
    measured = {
        C.WALL_S: wall,
        C.STEP_TIME_MEDIAN_S: median if median is not None else math.nan,
        C.STEP_TIMES_S: timer.times,
        C.STEPS_TIMED: len(timer.times),
        C.WARMUP_STEPS: timer.warmup,
        C.DEVICE: device,
        C.DEVICE_NAME: describe_device(device),
        C.THREADS: sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None,
        **meter.peaks(),
    }
    for name, seconds in meter.phase_seconds.items():
        measured[C.phase_seconds_col(name)] = seconds
        measured[C.phase_peak_col(name)] = meter.phase_peaks.get(name)
    if device.startswith("cuda"):
        measured[C.CUDA_VERSION] = sys.modules["torch"].version.cuda
    return measured


# --- in the runner ---------------------------------------------------------------------------------------


def run_in_child(job: dict, *, timeout: float | None = None,
                 on_progress: Callable[[dict], None] | None = None, cancel=None) -> dict:
    """Run one cell in a spawned child and return its result message (see child_main), or a synthetic
    one when the child died (status killed), overran `timeout` (status timeout) or exited without a
    result (status error). Any exception here (Ctrl-C included) kills the child before propagating, and
    so does `cancel` (a threading.Event) being set, which raises KeyboardInterrupt here."""
    job = {"log": True, **job, "parent_pid": os.getpid()}
    receiver, sender = _SPAWN.Pipe(duplex=False)
    process = _SPAWN.Process(target=child_main, args=(job, sender), name=f"bench-cell-{job['config_hash']}")
    started = time.perf_counter()
    result: dict | None = None
    status = None
    try:
        process.start()
        sender.close()  # so that recv() sees EOF when the child dies
        deadline = None if timeout is None else started + timeout
        while result is None:
            if cancel is not None and cancel.is_set():
                raise KeyboardInterrupt("cancelled")
            wait = 0.2 if deadline is None else max(0.0, min(0.2, deadline - time.perf_counter()))
            if receiver.poll(wait):
                try:
                    message = receiver.recv()
                except EOFError:
                    break
                if message.get("type") == "progress":
                    if on_progress:
                        on_progress(message)
                else:
                    result = message
            elif deadline is not None and time.perf_counter() >= deadline:
                status = C.STATUS_TIMEOUT
                break
            elif not process.is_alive() and not receiver.poll(0):
                break
        # after a result the child only has to exit; after EOF it is exiting already; after a timeout it
        # is killed below
        process.join(timeout=30 if result is not None else 0 if status == C.STATUS_TIMEOUT else 5)
    finally:
        if process.is_alive():
            process.terminate()
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join()
        receiver.close()
    elapsed = time.perf_counter() - started
    if result is None:
        code = process.exitcode
        if status == C.STATUS_TIMEOUT:
            error = f"timeout: still running after {timeout:g} s, killed"
        elif code is not None and code < 0:
            status = C.STATUS_KILLED
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            hint = " (the OS out-of-memory killer sends SIGKILL)" if -code == signal.SIGKILL else ""
            error = f"killed: the cell's process died from {name}{hint}; see {LOG_NAME} in its artifacts"
        else:
            status = C.STATUS_ERROR
            error = f"the cell's process exited with code {code} without a result; see {LOG_NAME} in its artifacts"
        result = {"type": "result", C.STATUS: status, C.ERROR: error, C.TRACEBACK: None,
                  "metrics": {}, "curves": [], "measured": {C.DEVICE: job["device"]}}
    result["measured"][C.PROCESS_WALL_S] = elapsed
    return result
