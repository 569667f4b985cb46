"""`dct bench plan`: the planner's command (bench/plan/planner.py does the work).

    dct bench plan --arch sd21base --resolution 768 --batch 4 --depth 10 --checkpointing none --gpu rtx4090
    dct bench plan --arch sd15 --fit 24GiB          # per mode: deepest depth, largest rollout batch that fit
    dct bench plan --spec ablations/depth-fullsize.toml --out results/plan/depth-fullsize
    dct bench plan ... --json                        # JSON only, on stdout
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from dct.errors import ConfigError, DCTError

GIB = 2**30
MAX_FIT_BATCH = 64


class _LazyPlan:
    """bench.plan.planner imports torch: loaded on first use, so `dct --help` and the other commands stay fast."""

    def __getattr__(self, name):
        from bench.plan import planner as plan

        return getattr(plan, name)


P = _LazyPlan()


def _gib(n: float) -> str:
    return f"{n / GIB:7.2f} GiB"


def describe(p: P.Plan) -> str:
    """A plan as text, at most 80 columns wide."""
    c = p.config
    gpu = P.GPUS[p.gpu]
    res = c["resolution"] or P.parts_resolution(c)
    head = (f"DCT step plan: {Path(c['arch']).name} at {res} px, {c['batch']} image(s) per rollout,\n"
            f"depth {p.grad_calls} of {p.unet_calls} UNet calls ({c['scheduler']} {c['steps']}), checkpointing "
            f"{c['checkpointing']},\n{c['precision']} UNet/VAE, text encoder {c['text_encoder_precision']}, "
            f"classifier {c['classifier']},\nprotocol {p.protocol}")
    rows = [("weights (parameters, buffers, token state)", p.weights_bytes),
            ("cuBLAS workspaces", p.workspace_bytes),
            ("activations saved: text encoder + UNet calls", p.activations_bytes),
            ("VAE decode saved", p.vae_decode_bytes),
            ("classifier + loss saved", p.classifier_bytes),
            ("transient peak of the backward", p.transient_bytes),
            ("untraced per-image bytes (calibrated)", p.calibration_bytes)]
    if p.reference_code_bytes:
        rows.append(("authors' code: classifier grads, fp16 casts", p.reference_code_bytes))
    lines = [head, "", "peak device memory of one step"]
    lines += [f"  {name:<46s}{_gib(value)}" for name, value in rows]
    verdict = "fits" if p.fits else "does NOT fit"
    lines.append(f"  {'peak (max_memory_allocated)':<46s}{_gib(p.peak_bytes)}")
    lines.append(f"  {verdict} in {p.capacity_bytes / GIB:.1f} GiB ({p.gpu})")
    per = c["images_per_update"] // c["batch"]
    lines += ["", f"compute ({per} rollout(s) per step)",
              f"  {'FLOPs (forward, backward, recomputation)':<46s}{p.flops / 1e12:7.1f} TFLOP",
              f"  {'time on ' + p.gpu:<46s}{p.seconds:7.2f} s per step",
              f"  = roofline {p.roofline_seconds:.2f} s ({gpu.fp16_tflops:g} TFLOP/s fp16, {gpu.fp32_tflops:g} fp32,",
              f"    {gpu.bandwidth_tbs:g} TB/s) + {p.kernels} kernel launches x {P.LAUNCH_SECONDS * 1e6:.1f} us"]
    lines += ["", f"planned in {p.trace_seconds:.1f} s on the CPU (meta-device trace, no weights)"]
    return "\n".join(lines)


def _depth_fits(config: dict, capacity: int, gpu: str, protocol: str) -> tuple[int, int]:
    """(deepest depth that fits, calls): peak grows with depth, so the first that does not fit ends it."""
    calls = P.plan({**config, "depth": 1}, gpu=gpu, protocol=protocol, capacity=capacity).unet_calls
    deepest = 0
    for depth in range(1, calls + 1):  # arithmetic on cached traces: microseconds each
        if not P.plan({**config, "depth": depth}, gpu=gpu, protocol=protocol, capacity=capacity).fits:
            break
        deepest = depth
    return deepest, calls


def _batch_fits(config: dict, capacity: int, gpu: str, protocol: str) -> int:
    """Largest images per rollout that fit (0: not even one), up to MAX_FIT_BATCH. Peak memory is close to
    linear in the batch: extrapolate from batches 1 and 2, then trace around the estimate to confirm."""

    def at(batch: int):
        return P.plan({**config, "batch": batch, "images_per_update": batch}, gpu=gpu, protocol=protocol,
                      capacity=capacity)

    def fits(batch: int) -> bool:
        return at(batch).fits

    one = at(1)
    if not one.fits:
        return 0
    per_image = max(at(2).peak_bytes - one.peak_bytes, 1)
    best = min(MAX_FIT_BATCH, 1 + (capacity - one.peak_bytes) // per_image)
    while best > 1 and not fits(best):
        best -= 1
    while best < MAX_FIT_BATCH and fits(best + 1):
        best += 1
    return best


def fit_table(config: dict, capacity: int, gpu: str, protocol: str) -> list[dict]:
    from dct.rollout import CHECKPOINTING_MODES

    rows = []
    for mode in CHECKPOINTING_MODES:
        c = {**config, "checkpointing": mode}
        deepest, calls = _depth_fits(c, capacity, gpu, protocol)
        rows.append(dict(checkpointing=mode, deepest_depth=deepest, unet_calls=calls, depth=config.get("depth", 1),
                         largest_batch=_batch_fits(c, capacity, gpu, protocol)))
    return rows


def describe_fit(rows: list[dict], capacity: int, config: dict) -> str:
    c = P.validate(dict(config))
    size = f"{capacity / GIB:.1f} GiB" if capacity >= GIB else f"{capacity / 2**20:.0f} MiB"
    lines = [f"What fits in {size}: {Path(c['arch']).name}, {c['resolution'] or P.parts_resolution(c)} "
             f"px, {c['precision']}, {c['scheduler']} {c['steps']}",
             "",
             f"{'checkpointing':<14}{'deepest depth (batch ' + str(c['batch']) + ')':<28}"
             f"{'largest batch (depth ' + str(c['depth']) + ')':<26}"]
    for r in rows:
        deep = "none fits" if r["deepest_depth"] == 0 else (
            f"{r['deepest_depth']} of {r['unet_calls']}" + (" (full)" if r["deepest_depth"] == r["unet_calls"] else ""))
        batch = "none fits" if r["largest_batch"] == 0 else (
            f">= {r['largest_batch']}" if r["largest_batch"] == MAX_FIT_BATCH else str(r["largest_batch"]))
        lines.append(f"{r['checkpointing']:<14}{deep:<28}{batch:<26}")
    return "\n".join(lines)


def plan_spec(spec_path: Path, gpu: str, protocol: str, capacity: int | None) -> list[dict]:
    """One plan row per cell of a `step` spec, in the spec's order."""
    from bench.spec import load_spec

    spec = load_spec(spec_path)
    if spec.kind != "step":
        raise ConfigError(f"spec {str(spec_path)!r} has cell kind {spec.kind!r}: only 'step' specs can be planned")
    rows = []
    for cell in spec.cells.values():
        p = P.plan(cell.config, gpu=gpu, protocol=protocol, capacity=capacity)
        rows.append(dict(config_hash=cell.config_hash, label=cell.label, origin=cell.origin,
                         **{k: cell.config[k] for k in ("arch", "batch", "precision", "checkpointing", "depth")},
                         grad_calls=p.grad_calls, unet_calls=p.unet_calls, peak_gib=p.peak_bytes / GIB, fits=p.fits,
                         tflops=p.flops / 1e12, seconds=p.seconds))
    return rows


def describe_spec(rows: list[dict], name: str, gpu: str, seconds: float) -> str:
    lines = [f"{name}: {len(rows)} cell(s) planned for {gpu} in {seconds:.0f} s",
             f"{'label':<44}{'peak GiB':>9} {'fits':>5}{'TFLOP':>8}{'s/step':>8}"]
    for r in rows:
        label = r["label"] if len(r["label"]) <= 43 else r["label"][:40] + "..."
        lines.append(f"{label:<44}{r['peak_gib']:9.2f} {'yes' if r['fits'] else 'NO':>5}{r['tflops']:8.1f}"
                     f"{r['seconds']:8.2f}")
    return "\n".join(lines)


def write_spec_outputs(rows: list[dict], out: Path, title: str, protocol: str, capacity_gib: float) -> list[Path]:
    """plan.csv and the planned memory-vs-depth figure with the anchor's measured points."""
    from bench.plan.figure import planned_memory_figure

    out.mkdir(parents=True, exist_ok=True)
    table = out / "plan.csv"
    with table.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return [table, *planned_memory_figure(rows, out, title, protocol, capacity_gib)]


# --- the command ----------------------------------------------------------------------------------


def plan_command(
    spec: Annotated[Optional[Path], typer.Option("--spec", help="Plan every cell of a step spec (TOML).")] = None,
    arch: Annotated[str, typer.Option(help="sd15, sd21base, tiny or a diffusers folder.")] = "sd15",
    resolution: Annotated[Optional[int], typer.Option(help="Image side in pixels (default: the arch's).")] = None,
    batch: Annotated[Optional[int], typer.Option(help="Images per rollout (default 1).")] = None,
    images_per_update: Annotated[Optional[int], typer.Option(help="Images per step (a multiple of batch).")] = None,
    depth: Annotated[Optional[str], typer.Option(help="Final UNet calls with gradient: an integer or 'full' "
                                                 "(default 1).")] = None,
    checkpointing: Annotated[Optional[str], typer.Option(help="none | block | step | both (default none)")] = None,
    precision: Annotated[Optional[str], typer.Option(help="UNet/VAE: fp16 | fp16-noscale | bf16 | fp32 "
                                                     "(default fp16)")] = None,
    text_encoder_precision: Annotated[Optional[str], typer.Option(help="fp32 | bf16 | fp16 (default fp32)")] = None,
    classifier: Annotated[Optional[str], typer.Option(help="Default: the reference ViT-L/16 (full size).")] = None,
    scheduler: Annotated[Optional[str], typer.Option(help="ddim | pndm | dpm++ | euler | default "
                                                     "(default ddim)")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Denoising steps (default 30).")] = None,
    guidance: Annotated[Optional[float], typer.Option(help="Classifier-free guidance (default 7).")] = None,
    preset: Annotated[Optional[str], typer.Option(help="'reference': the authors' settings.")] = None,
    gpu: Annotated[str, typer.Option(help="h200, h100, a100-80gb, a100-40gb, l40s, rtx4090, a10g, l4, "
                                                 "t4.")] = "h200",
    memory: Annotated[Optional[str], typer.Option(help="Device memory, e.g. 24GiB (default: the GPU's).")] = None,
    protocol: Annotated[str, typer.Option(help="dct | anchor-h200 | reference-code")] = "dct",
    fit: Annotated[Optional[str], typer.Option("--fit", help="e.g. 24GiB: per checkpointing mode, the deepest "
                                               "depth and the largest rollout batch that fit.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="With --spec: write plan.csv and the figure here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only, on stdout.")] = False,
) -> None:
    """Predict peak GPU memory, FLOPs and time of one DCT step, on the CPU, in seconds."""
    from rich.console import Console

    err = Console(stderr=True)
    started = time.perf_counter()
    try:
        P.check_gpu(gpu)
        P.check_protocol(protocol)
        capacity = P.parse_size(memory) if memory else None
        if spec is not None:
            rows = plan_spec(spec, gpu, protocol, capacity)
            capacity_gib = (capacity or P.GPUS[gpu].memory_gib * GIB) / GIB
            written = write_spec_outputs(rows, out, spec.stem, protocol, capacity_gib) if out is not None else []
            if as_json:
                print(json.dumps(rows, indent=1))
            else:
                print(describe_spec(rows, spec.stem, gpu, time.perf_counter() - started))
                for path in written:
                    print(f"wrote {path}")
            return
        config = dict(arch=arch, resolution=resolution, batch=batch, images_per_update=images_per_update,
                      depth=int(depth) if depth and depth.isdigit() else depth, checkpointing=checkpointing,
                      precision=precision, text_encoder_precision=text_encoder_precision, classifier=classifier,
                      scheduler=scheduler, steps=steps, guidance=guidance, preset=preset)
        # options left out take the step cell's defaults, or the preset's values (bench/cells/step.py)
        config = {k: v for k, v in config.items() if v is not None}
        if fit is not None:
            size = P.parse_size(fit)
            rows = fit_table(config, size, gpu, protocol)
            print(json.dumps(dict(capacity_bytes=size, config=P.validate(dict(config)), modes=rows), indent=1)
                  if as_json else describe_fit(rows, size, config))
            return
        p = P.plan(config, gpu=gpu, protocol=protocol, capacity=capacity)
    except DCTError as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    print(json.dumps(p.to_dict(), indent=1, default=str) if as_json else describe(p))
