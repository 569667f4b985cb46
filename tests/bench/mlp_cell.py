"""A real, cheap cell kind for testing the grid machinery: a few gradient-descent steps of a small MLP on a fixed
regression task. Settings can make it allocate memory, sleep per step, or fail in the ways a real cell
fails (exception, out of memory, killed by the OS).

$TINY_MLP_FAULTS, a JSON object {label: fail}, makes the cells of those labels fail in that way in this run
only: the config (and so the config hash) stays the same, as when a cell failed for a reason that a
later run no longer has."""

from __future__ import annotations

import json
import os
import resource
import signal
import time

import torch

from bench.registry import CellOutput, register_cell
from dct.errors import ConfigError

KIND = "tiny_mlp"
DEFAULTS = {"width": 8, "steps": 5, "lr": 0.05, "seed": 0, "alloc_mb": 0, "fail": "none", "step_sleep_s": 0.0,
            "data_url": ""}
FAILS = ("none", "error", "cuda_oom", "memory_error", "sigkill", "alloc_over_limit")


def validate(config: dict) -> dict:
    config = {**DEFAULTS, **config}

    def check(key: str, ok: bool, accepted: str) -> None:
        if not ok:
            raise ConfigError(f"{key}={config[key]!r} is not accepted: {accepted}")

    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    check("width", is_int(config["width"]) and config["width"] >= 1, "an integer >= 1")
    check("steps", is_int(config["steps"]) and config["steps"] >= 1, "an integer >= 1")
    check("lr", isinstance(config["lr"], (int, float)) and config["lr"] > 0, "a number > 0")
    check("seed", is_int(config["seed"]), "an integer")
    check("alloc_mb", is_int(config["alloc_mb"]) and config["alloc_mb"] >= 0, "an integer >= 0")
    check("fail", config["fail"] in FAILS, f"one of {FAILS}")
    check("step_sleep_s", isinstance(config["step_sleep_s"], (int, float)), "a number of seconds")
    check("data_url", isinstance(config["data_url"], str), "a string")
    return config


def run(config: dict, ctx) -> CellOutput:
    (ctx.out_dir / "pid").write_text(str(os.getpid()))
    torch.manual_seed(config["seed"])
    x = torch.randn(64, 4)
    y = torch.sin(x.sum(dim=1, keepdim=True))
    model = torch.nn.Sequential(torch.nn.Linear(4, config["width"]), torch.nn.Tanh(),
                                torch.nn.Linear(config["width"], 1))
    curves = []
    with ctx.phase("train"):
        # Filled with ones so that every page is resident, not just reserved.
        ballast = torch.ones(config["alloc_mb"] * 2**20 // 4) if config["alloc_mb"] else None
        for step in range(config["steps"]):
            with ctx.step():
                model.zero_grad()
                loss = torch.nn.functional.mse_loss(model(x), y)
                loss.backward()
                # Plain gradient descent by hand: torch.optim's first step imports torch._dynamo (~1 s),
                # which would dominate a test cell's run time.
                with torch.no_grad():
                    grad_norm = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()))
                    for p in model.parameters():
                        p -= config["lr"] * p.grad
                time.sleep(config["step_sleep_s"])
            curves.append({"epoch": step, "loss": loss.item(), "grad_norm": grad_norm.item()})
            ctx.progress(step + 1, config["steps"], loss=loss.item())
            if step == 1:
                _fail(json.loads(os.environ.get("TINY_MLP_FAULTS", "{}")).get(ctx.label, config["fail"]))
    with ctx.phase("eval"), torch.no_grad():
        final = torch.nn.functional.mse_loss(model(x), y).item()
    torch.save(model.state_dict(), ctx.out_dir / "weights.pt")
    return CellOutput(metrics={"final_loss": final, "ballast_sum": None if ballast is None else ballast.sum()},
                      curves=curves)


def _fail(how: str) -> None:
    if how == "error":
        raise ValueError("simulated failure")
    if how == "cuda_oom":
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")
    if how == "memory_error":
        raise MemoryError("simulated")
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "alloc_over_limit":
        # A real allocation failure, as on a machine too small for the cell: this process may map 64 MiB
        # more than it has mapped now, and a 1 GiB tensor is asked of torch's CPU allocator.
        mapped = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (mapped + 64 * 2**20, resource.getrlimit(resource.RLIMIT_AS)[1]))
        torch.ones(2**28)


register_cell(KIND, keys=set(DEFAULTS), validate=validate, run=run)
