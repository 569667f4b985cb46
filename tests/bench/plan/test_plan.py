"""The planner (bench/plan/planner.py, bench/plan/trace.py, `dct bench plan`): its byte accounting against hand
counts and exact CPU measurements, and its predictions against the H200 anchor."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.plan import anchor as A
from bench.plan import planner as P
from bench.plan.trace import Tracer, fused_attention


@pytest.fixture(autouse=True)
def _plan_cache(tmp_path, monkeypatch):
    """Every test traces afresh: a stale cached trace must not hide a broken tracer."""
    monkeypatch.setenv("DCT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(P, "_MEMO", {})


class ConvAttention(nn.Module):
    """One conv, one single-head self-attention over its pixels, one projection."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 64, 3, padding=1, bias=False)
        self.proj = nn.Linear(64, 64)

    def forward(self, x):
        y = self.conv(x)  # (1, 64, 16, 16)
        q = y.flatten(2).transpose(1, 2)[:, None]  # (1, 1, 256, 64): a view of y
        return self.proj(F.scaled_dot_product_attention(q, q, q))


def _trace_conv_attention(fused: bool) -> Tracer:
    with torch.device("meta"):
        model = ConvAttention()
    model.requires_grad_(False)
    x = torch.randn(1, 4, 16, 16, device="meta", requires_grad=True)
    tracer = Tracer(exclude=[model, x])
    with fused_attention() if fused else contextlib.nullcontext(), tracer:
        loss = model(x).sum()
        tracer.mark("forward")
        loss.backward()
        tracer.mark("end")
    return tracer


def test_saved_bytes_of_conv_and_attention_match_a_hand_count():
    tracer = _trace_conv_attention(fused=True)
    conv_out = 64 * 16 * 16 * 4  # saved by attention as q, k and v: three views, one storage
    attn_out = 256 * 64 * 4  # saved by attention (and by the projection, as a view)
    logsumexp = 256 * 4  # fp32, one per query (256 is a multiple of the kernel's 32-row padding)
    philox = 2 * 512  # seed and offset, 8 bytes each, each one 512-byte allocator block
    loss = 512  # a 4-byte scalar, one block
    # the projection's output is freed once summed; its weight's transpose is a view of a parameter
    assert tracer.result.marks["forward"] == conv_out + attn_out + logsumexp + philox + loss
    # after backward only the loss and the input's gradient are left
    assert tracer.result.marks["end"] == loss + 4 * 16 * 16 * 4


def test_math_attention_would_save_the_attention_matrix():
    fused = _trace_conv_attention(fused=True).result.marks["forward"]
    math = _trace_conv_attention(fused=False).result.marks["forward"]
    assert math - fused >= 256 * 256 * 4  # at least one (L x L) fp32 matrix more


def test_flops_are_flop_counter_modes():
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = ConvAttention()
    model.requires_grad_(False)
    x = torch.randn(1, 4, 16, 16, device="meta", requires_grad=True)
    counter = FlopCounterMode(display=False)
    with fused_attention(), counter:
        model(x).sum().backward()
    assert _trace_conv_attention(fused=True).result.flops == counter.get_total_flops() > 0


@pytest.mark.world
@pytest.mark.parametrize("depth", [1, 3])
def test_cpu_plan_of_the_tiny_world_matches_the_bytes_its_step_saves(depth):
    """The planner's activation bytes (traced on meta, extra depth by arithmetic) against the storages
    autograd really saves in the same step on the CPU (saved-tensor hooks, weights excluded)."""
    from bench.cells.step import prepare, train_config
    from dct.pipeline import make_scheduler
    from dct.token import ClassTokens
    from dct.train import dct_loss, prepare_parts

    c = P.validate(dict(arch="tiny", depth=depth, checkpointing="none", precision="fp32", batch=2, steps=4))
    p = P.plan(c, device="cpu")
    predicted = p.activations_bytes + p.vae_decode_bytes + p.classifier_bytes

    setup = prepare(c, "cpu")
    cfg = train_config(c)
    prepare_parts(setup.parts, cfg)
    tokens = ClassTokens(setup.parts.tokenizer, setup.parts.text_encoder, [cfg.placeholder], cfg.init_word)
    modules = (setup.parts.unet, setup.parts.vae, setup.parts.text_encoder, setup.classifier, tokens)
    weights = {id(t.untyped_storage()) for m in modules for t in [*m.parameters(), *m.buffers()]}
    saved: dict[int, int] = {}

    def pack(t):
        if id(t.untyped_storage()) not in weights:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    prompts = [setup.templates[0].format(f"{cfg.placeholder} {setup.class_name}")] * 2
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            dct_loss(setup.parts, tokens, setup.classifier, make_scheduler(cfg.scheduler, setup.parts.scheduler),
                     cfg, prompts, torch.randn(2, 4, 8, 8), torch.full((2,), setup.target))
    finally:
        tokens.remove()
    measured = sum(saved.values())
    assert predicted == pytest.approx(measured, rel=0.01)


def _anchor(arch, batch, ckpt, depth):
    return next(r for r in A.anchor_rows() if A.anchor_key(r) == (arch, batch, ckpt, depth))


def test_anchor_sd15_both_depth_1_and_30():
    """The fast anchor check (one step trace): memory within 10% and time within 1.5x at both depths."""
    for depth in (1, 30):
        row = _anchor("sd15", 1, "both", depth)
        p = P.plan(A.anchor_config(row), gpu="h200", protocol="anchor-h200")
        assert p.peak_bytes / P.GIB == pytest.approx(float(row["peak_gib"]), rel=0.10)
        assert 1 / 1.5 <= p.seconds / float(row["sec"]) <= 1.5


# Rows whose seconds include CUDA's warm-up (the first row of each of the anchor's tables, anchor-h200.md)
WARMUP_ROWS = {("sd15", 1, "none", 1), ("sd21base", 1, "none", 1), ("sd15", 4, "none", 1)}


@pytest.mark.slow
def test_anchor_validation():
    """Every anchor row but the calibration row within 10% (the OOM row predicted not to fit), the
    authors' code rows within 10%, the time within 1.5x at depth 1 and 30 for none and both (batch 1),
    and the calibration constants reproduce from their rows (about 1.5 minutes on 2 cores)."""
    rows = A.validation()
    for r in rows:
        key = (r["arch"], r["batch"], r["ckpt"], r["depth"])
        if r["status"] == "OOM":
            assert not r["fits"], r
        elif key != P.MEMORY_CALIBRATION_ROW or r["status"] == "reference-code":
            assert abs(r["error"]) <= 0.10, r
        if (r["status"] == "ok" and r["batch"] == 1 and r["ckpt"] in ("none", "both") and r["depth"] in (1, 30)
                and key not in WARMUP_ROWS):
            assert 1 / 1.5 <= r["time_factor"] <= 1.5, r
    assert len([r for r in rows if r["status"] == "reference-code"]) == 2
    constants = A.calibrate()
    assert constants["UNTRACED_BYTES_PER_IMAGE"] == pytest.approx(P.UNTRACED_BYTES_PER_IMAGE, rel=0.01)
    assert constants["LAUNCH_SECONDS"] == pytest.approx(P.LAUNCH_SECONDS, rel=0.01)


def test_depth_adds_one_call_per_step_and_checkpointing_orders_memory():
    c = dict(arch="tiny", weights="random", classifier="tiny-random", batch=1, steps=10)
    peaks = {mode: [P.plan({**c, "checkpointing": mode, "depth": d}).peak_bytes for d in (1, 2, 10)]
             for mode in ("none", "both")}
    none, both = peaks["none"], peaks["both"]
    assert none[2] - none[1] == 8 * (none[1] - none[0]) > 0  # linear in depth
    assert both[2] - both[0] < (none[1] - none[0])  # both keeps only each call's inputs
    assert both[2] < none[2]


@pytest.mark.parametrize("text, expected", [("24GiB", 24 * 2**30), ("24 GB", 24 * 2**30), ("80G", 80 * 2**30),
                                            ("512MiB", 512 * 2**20), ("1.5GiB", int(1.5 * 2**30))])
def test_parse_size(text, expected):
    assert P.parse_size(text) == expected


@pytest.mark.parametrize("args, named", [
    (["--fit", "24XB"], "'24XB'"), (["--arch", "sd14"], "'sd14'"), (["--depth", "31"], "depth=31"),
    (["--gpu", "v100"], "'v100'"), (["--checkpointing", "all"], "'all'"), (["--protocol", "x"], "'x'"),
])
def test_bad_input_is_one_line_on_stderr_and_exit_2(args, named):
    from typer.testing import CliRunner

    from cli import app

    result = CliRunner().invoke(app, ["bench", "plan", *args])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and named in lines[0] and "accepted" in lines[0], result.stderr


def test_json_is_only_json_on_stdout():
    from typer.testing import CliRunner

    from cli import app

    args = ["bench", "plan", "--arch", "tiny", "--depth", "2", "--json", "--memory", "1GiB"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["grad_calls"] == 2 and plan["fits"] and plan["capacity_bytes"] == 2**30
    assert plan["peak_bytes"] == sum(plan[k] for k in ("weights_bytes", "workspace_bytes", "activations_bytes",
                                                       "vae_decode_bytes", "classifier_bytes", "transient_bytes",
                                                       "calibration_bytes", "reference_code_bytes"))


def test_text_output_fits_80_columns_and_fit_lists_every_mode():
    from typer.testing import CliRunner

    from cli import app

    runner = CliRunner()
    capacity = 100 * 2**20  # the tiny world at depth 1 needs about 90 MiB with the H200's workspaces
    text = runner.invoke(app, ["bench", "plan", "--arch", "tiny", "--steps", "10"]).stdout
    fit = runner.invoke(app, ["bench", "plan", "--arch", "tiny", "--steps", "10", "--fit", "100MiB", "--json"])
    assert "peak (max_memory_allocated)" in text and max(len(ln) for ln in text.splitlines()) <= 80
    modes = json.loads(fit.stdout)["modes"]
    assert [m["checkpointing"] for m in modes] == ["none", "block", "step", "both"]

    def fits(mode, depth=1, batch=1):
        return P.plan(dict(arch="tiny", steps=10, checkpointing=mode, depth=depth, batch=batch),
                      capacity=capacity).fits

    for m in modes:  # what --fit reports fits, and one more does not
        mode, deepest, batch = m["checkpointing"], m["deepest_depth"], m["largest_batch"]
        assert fits(mode, depth=max(deepest, 1)) == (deepest > 0)
        assert deepest == m["unet_calls"] or not fits(mode, depth=deepest + 1)
        assert fits(mode, batch=max(batch, 1)) == (batch > 0)
        assert batch == 64 or not fits(mode, batch=batch + 1)
    assert any(1 < m["largest_batch"] < 64 for m in modes)  # the batch search was exercised
    assert any(0 < m["deepest_depth"] < m["unet_calls"] for m in modes)  # and the depth search


def test_grid_records_predicted_oom_instead_of_running_and_plan_flops_on_rows(tmp_path, monkeypatch):
    """A GPU grid (the CPU posing as a GPU as small as the depth-1 cell's predicted peak): the cell
    predicted not to fit is written as predicted-oom with its prediction and never started; the other is
    started and its row carries the plan's FLOPs; --no-plan (plan=False) starts every cell."""
    import io

    from rich.console import Console

    from bench import grid
    from bench.spec import parse_spec
    from bench.store import load_cells

    fixed = {"arch": "tiny", "weights": "random", "classifier": "tiny-random", "steps": 3, "n_steps": 1, "warmup": 0}
    small = P.plan({**fixed, "depth": 1}).peak_bytes
    assert P.plan({**fixed, "depth": 3}).peak_bytes > small
    monkeypatch.setattr(grid, "_cuda_device", lambda device: ("NVIDIA H100 80GB HBM3", small))
    started = []

    class Worker:  # records what would have been started; running the tiny cells is test_cells_step's job
        @staticmethod
        def run_in_child(job, **kwargs):
            started.append(job["config"]["depth"])
            return {"status": "ok", "error": None, "traceback": None, "metrics": {"grad_status": "ok"}}

    monkeypatch.setattr(grid, "_worker", lambda: Worker)
    spec = parse_spec({"experiment": {"name": "plan-smoke", "cell": "step", "warmup_steps": 0},
                       "fixed": fixed, "axes": {"depth": [1, 3]}}, store=tmp_path / "store")
    quiet = Console(file=io.StringIO(), width=200)
    result = grid.run_grid(spec, device="cpu", console=quiet, show_progress=False)
    assert [status for _, status in result.ran] == ["ok", "predicted-oom"] and started == [1]
    cells = load_cells(tmp_path / "store").set_index("cfg_depth")
    assert cells.loc[3, "metric_plan_peak_bytes"] > small >= cells.loc[1, "metric_plan_peak_bytes"]
    assert "predicted peak" in cells.loc[3, "error"] and "--no-plan" in cells.loc[3, "error"]
    assert cells.loc[1, "metric_plan_flops"] > 0 and cells.loc[1, "metric_grad_status"] == "ok"
    result = grid.run_grid(spec, device="cpu", console=quiet, show_progress=False, plan=False)
    assert [status for _, status in result.ran] == ["ok"] and started == [1, 3]


def test_memory_figure_draws_predictions_hollow_beside_measurements():
    """A GPU store with measured cells and a predicted-oom cell: predictions are dashed lines of hollow
    markers (every planned cell), measurements solid and filled, the predicted OOM marked as such."""
    from pathlib import Path

    import pandas as pd

    from bench import columns as C
    from bench.figures import data as D
    from bench.figures import depth as F

    rows = [("ok", 1, 5.0, 5.2), ("ok", 2, 6.0, 6.1), ("predicted-oom", 30, None, 90.0)]
    cells = pd.DataFrame([{C.STATUS: status, D.DEPTH: depth, D.CHECKPOINTING: "none", C.ORIGIN: "axes",
                           C.LABEL: f"depth={depth}", C.CONFIG_HASH: f"h{depth}",
                           C.PEAK_MEM_BYTES: None if peak is None else peak * 2**30,
                           C.PLAN_PEAK_BYTES: plan * 2**30, C.DEVICE: "cuda:0",
                           C.DEVICE_NAME: "NVIDIA H100 80GB HBM3, 79.1 GiB, CUDA 12.8"}
                          for status, depth, peak, plan in rows])
    data = D.StoreData(path=Path("."), name="planned", cells=D.add_depth(cells), curves=pd.DataFrame())
    panel = F.memory_vs_depth(data, F.DrawOptions())[0]
    lines = [ln for ax in panel.figure.axes for ln in ax.get_lines()
             if len(ln.get_xdata()) > 1 and ln.get_marker() not in ("None", "", None)]  # not the capacity line
    hollow = [ln for ln in lines if ln.get_markerfacecolor() == "none"]
    filled = [ln for ln in lines if ln.get_markerfacecolor() != "none"]
    assert [list(ln.get_xdata()) for ln in hollow] == [[1, 2, 30]] and hollow[0].get_linestyle() == "--"
    assert list(hollow[0].get_ydata()) == pytest.approx([5.2, 6.1, 90.0])
    assert [list(ln.get_xdata()) for ln in filled] == [[1, 2]]
    assert any("OOM (predicted)" in mark for mark in panel.marks)
