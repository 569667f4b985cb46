"""Measurement pieces that need no child process."""

import math

import pytest
import torch

from bench import columns as C
from bench.measure import HighWater, StepTimer
from bench.provenance import redact
from bench.child import classify_exception


def test_step_timer_median_leaves_out_warmup():
    timer = StepTimer(warmup=2)
    for seconds in (9.0, 5.0, 1.0, 3.0, 2.0):
        timer.record(seconds)
    assert timer.median() == 2.0 and timer.times == [9.0, 5.0, 1.0, 3.0, 2.0]
    assert StepTimer(warmup=1).median() is None
    with StepTimer(warmup=0).step():
        pass


def test_high_water_keeps_overall_and_nested_phase_peaks():
    mark = {"now": 10, "hwm": 10}

    def reset():
        mark["hwm"] = mark["now"]
        return True

    def touch(value):
        mark["now"] = value
        mark["hwm"] = max(mark["hwm"], value)

    hw = HighWater(lambda: (mark["hwm"],), reset)
    touch(50)
    touch(20)
    outer = hw.enter()
    touch(30)
    touch(22)
    inner = hw.enter()  # resets the mark to 22; the outer phase must still see its 30
    touch(25)
    assert hw.exit(inner) == (25,)
    assert hw.exit(outer) == (30,)
    assert hw.peak() == (50,)  # from before any phase


METER_PROBE = """
import json, torch
from bench import columns as C
from bench.measure import DeviceMeter, peak_rss_bytes, reset_peak_rss
ballast = torch.ones(256 * 2**20 // 4)
del ballast
before = peak_rss_bytes()
resets = reset_peak_rss()
after = peak_rss_bytes()
meter = DeviceMeter("cpu")
with meter.phase("alloc"):
    ballast = torch.ones(64 * 2**20 // 4)
del ballast
with meter.phase("small"):
    pass
peaks = meter.peaks()
print(json.dumps({"before": before, "after": after, "resets": resets, "phase_peaks": meter.phase_peaks,
                  "peaks": peaks, "now": peak_rss_bytes()}))
"""


def test_meter_phase_on_cpu():
    # In a fresh process, as every cell runs (bench.child): a long test session's heap can hold freed
    # pages that a new tensor reuses without raising the resident set.
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", METER_PROBE], capture_output=True, text=True, cwd=root,
                         env={**os.environ, "PYTHONPATH": str(root)}, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    peaks, phases = r["peaks"], r["phase_peaks"]
    assert peaks[C.PEAK_MEM_BYTES] == peaks[C.PEAK_RSS_BYTES] >= r["now"] - 2**20
    if r["resets"]:  # a reset that reports success must have lowered the mark the 256 MB ballast left
        assert r["after"] < r["before"] - 200 * 2**20
        assert phases["alloc"] - phases["small"] > 48 * 2**20
    else:  # no honest per-phase peak without a reset: reported as unknown, never as the process peak
        assert phases == {"alloc": None, "small": None}
    assert peaks[C.PEAK_GPU_ALLOCATED] is None


@pytest.mark.parametrize("exc, status", [
    (MemoryError(), "oom"),
    (torch.cuda.OutOfMemoryError("CUDA out of memory."), "oom"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"), "oom"),
    (RuntimeError("shape mismatch"), "error"),
    (ValueError("out of memory"), "error"),
])
def test_classify_exception(exc, status):
    assert classify_exception(exc) == status


@pytest.mark.parametrize("text, expected", [
    ("postgresql://user:pw@host/db", "postgresql://user:***@host/db"),
    ("see postgresql+psycopg://u:p%40ss@h:5432/d?sslmode=require and more",
     "see postgresql+psycopg://u:***@h:5432/d?sslmode=require and more"),
    ("host=db user=u password=hunter2 dbname=x", "host=db user=u password=*** dbname=x"),
    ("https://h/api?token=1&password=abc&x=2", "https://h/api?token=1&password=***&x=2"),
    ("http://host:8080/path", "http://host:8080/path"),  # a port is not a password
    ("user@host and a:b", "user@host and a:b"),
    # passwords with '/', ':', '#' or '?' are found whole (the URL is parsed with SQLAlchemy's make_url)
    ("worker h:1 on cpu; storage postgresql://dct:se/cr:et#x?y@db:5432/dct; store s",
     "worker h:1 on cpu; storage postgresql://dct:***@db:5432/dct; store s"),
    ("postgresql://dct:a/b@db/dct", "postgresql://dct:***@db/dct"),
])
def test_redact(text, expected):
    assert redact(text) == expected
    assert redact({"a": [text]}) == {"a": [expected]}
    assert not math.isnan(redact(1.5))
