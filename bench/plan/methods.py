"""Full-size cost columns of the methods experiment (bench.cells.methods), from the planner's traces of
random-weight full-size architectures on the meta device: predicted GPU seconds and peak memory per
generated image and per training run, no GPU needed.

    python -m bench.plan.methods [--arch sd15] [--gpu h200] [--out results/plan/methods]   # plan.csv + plan.md

Each method's cost is arithmetic on three traces of bench.plan.planner (all at 512 px for sd15, fp16 UNet
and VAE, DDIM 20 steps, classifier-free guidance, the reference ViT-L/16 classifier):
    sample    one image, no gradient: 20 UNet calls without gradient (batch 1 x 2 for guidance); the VAE
              decode and the text encoder are not in this trace (a few % of a sample on a GPU)
    dct step  planner.plan of one DCT optimisation step (the `fast` or `paper` preset's config)
    ti step   one UNet call with gradient (planner.trace_call), batch = ti_batch x classes trained at once
    cg image  20 x (a UNet call without gradient + the DCT step's decode, classifier and their backward:
              step - its two UNet calls), the peak of a depth-1 DCT step
Training runs use the reference run's measured mean epochs per token (dct) or the spec's steps (ti); a
prompt search or a guidance-scale search pays its selection images as samples. What is NOT modelled: data
loading, the text encoder in sampling, Python overhead (the planner's launch cost covers kernels only).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

GIB = 2**30
TI_STEPS, TI_BATCH = 150, 4
SELECTION = dict(templates=6, seeds=8, scales=4)  # ablations/methods.toml and bench.cells.methods defaults


def _base(arch: str) -> dict:
    return dict(arch=arch, scheduler="ddim", steps=20, guidance=5.0, precision="fp16", checkpointing="none")


def method_costs(arch: str = "sd15", gpu: str = "h200", epochs: dict | None = None) -> list[dict]:
    """One row per method: predicted seconds per image, one-time seconds per class, peak GiB."""
    from bench.plan import planner as P

    epochs = {"dct-fast": 10.0, "dct-paper": 10.0, "dct+prompt": 5.0, **(epochs or {})}
    fast = P.plan({**_base(arch), "depth": 4, "batch": 8, "images_per_update": 8}, gpu=gpu)
    paper = P.plan({**_base(arch), "scheduler": "pndm", "steps": 30, "guidance": 7.0, "depth": 2,
                    "checkpointing": "block", "batch": 1, "images_per_update": 5}, gpu=gpu)
    one = P.validate({**_base(arch), "depth": 1, "batch": 1, "images_per_update": 1})
    step1 = P.plan(one, gpu=gpu)
    fwd = P.trace_call(one, with_grad=False)
    call = P.trace_call(one)
    weights = step1.weights_bytes + step1.workspace_bytes
    sample_s = 20 * fwd["seconds"][gpu]
    sample_peak = weights + fwd["peak"]
    # decode + classifier + their backward, per image: the depth-1 step less its two UNet calls
    head_s = max(step1.roofline_seconds - call["seconds"][gpu] - fwd["seconds"][gpu], 0.0)
    cg_s = 20 * (fwd["seconds"][gpu] + head_s)
    ti = P.validate({**_base(arch), "depth": 1, "batch": TI_BATCH, "images_per_update": TI_BATCH, "guidance": 1.0})
    ti_call = P.trace_call(ti)
    ti_step_s = ti_call["seconds"][gpu]
    ti_peak = P.plan({**ti, "guidance": 1.0}, gpu=gpu).weights_bytes + step1.workspace_bytes + ti_call["peak"]
    search_s = SELECTION["templates"] * SELECTION["seeds"] * sample_s
    rows = [
        dict(method="plain", s_per_image=sample_s, one_time_s=0.0, peak_gib=sample_peak / GIB),
        dict(method="prompt-search", s_per_image=sample_s, one_time_s=search_s, peak_gib=sample_peak / GIB),
        *[dict(method=f"textual-inversion-k{k}", s_per_image=sample_s, one_time_s=TI_STEPS * ti_step_s,
               peak_gib=ti_peak / GIB) for k in (1, 5, 10)],
        dict(method="classifier-guidance", s_per_image=cg_s,
             one_time_s=SELECTION["scales"] * SELECTION["seeds"] * cg_s, peak_gib=step1.peak_bytes / GIB),
        dict(method="dct-fast", s_per_image=sample_s, one_time_s=epochs["dct-fast"] * fast.seconds,
             peak_gib=fast.peak_bytes / GIB),
        dict(method="dct-paper", s_per_image=sample_s, one_time_s=epochs["dct-paper"] * paper.seconds,
             peak_gib=paper.peak_bytes / GIB),
        dict(method="dct+prompt", s_per_image=sample_s, one_time_s=search_s + epochs["dct+prompt"] * fast.seconds,
             peak_gib=fast.peak_bytes / GIB),
    ]
    for r in rows:
        r.update(arch=arch, gpu=gpu, cost_100_s=r["one_time_s"] + 100 * r["s_per_image"],
                 cost_10000_s=r["one_time_s"] + 10_000 * r["s_per_image"])
    return rows


def reference_epochs(store: str | Path) -> dict:
    """Mean optimisation steps per token of each dct method in a methods store (its images / images per step)."""
    from bench import columns as C
    from bench.store import load_cells

    cells = load_cells(store)
    ok = cells[cells[C.STATUS] == C.STATUS_OK]
    col = C.metric_col("train_epochs_mean")
    out = {}
    for method in ("dct-fast", "dct-paper", "dct+prompt"):
        sub = ok[ok[C.config_col("method")] == method]
        if len(sub) and col in sub.columns and sub[col].notna().any():
            out[method] = float(sub[col].mean())
    return out


def markdown(rows: list[dict]) -> str:
    head = "| method | s / image | one-time s / class | peak GiB | cost of 100 images (s) | cost of 10,000 images (s) |"
    lines = [head, "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['s_per_image']:.3f} | {r['one_time_s']:.1f} | {r['peak_gib']:.2f} | "
                     f"{r['cost_100_s']:.1f} | {r['cost_10000_s']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="sd15")
    ap.add_argument("--gpu", default="h200")
    ap.add_argument("--store", default="results/reference/methods", help="methods store for the epochs per token")
    ap.add_argument("--out", default="results/plan/methods")
    a = ap.parse_args(argv)
    epochs = reference_epochs(a.store) if Path(a.store).is_dir() else {}
    rows = method_costs(a.arch, a.gpu, epochs)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "plan.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    text = (f"# Methods at full size ({a.arch}, {a.gpu}, planned; bench/plan/methods.py)\n\n"
            f"Epochs per DCT token from {a.store}: {epochs or 'defaults'}.\n\n{markdown(rows)}\n")
    (out / "plan.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
