"""The planned memory-vs-depth figure: predicted peaks as dashed lines with hollow markers, one panel per
(arch, images per rollout), and the H200 anchor's measured peaks as filled markers over them."""

from __future__ import annotations

from pathlib import Path

PALETTE = {"none": "#d62728", "block": "#1f77b4", "step": "#2ca02c", "both": "#9467bd"}
MARKERS = {"none": "o", "block": "s", "step": "^", "both": "D"}


def planned_memory_figure(rows: list[dict], out: Path, title: str, protocol: str = "dct",
                          capacity_gib: float | None = None) -> list[Path]:
    """Draw `rows` (bench.plan.cli.plan_spec rows; their fp16 cells of the [axes] product) and the anchor
    points of the same arch, batch and mode; write memory-vs-depth.png and .svg under `out`."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    from bench.plan.anchor import anchor_rows

    lines = [r for r in rows if r["origin"] == "axes" and r["precision"] in ("fp16", "fp16-noscale")]
    facets = list(dict.fromkeys((r["arch"], r["batch"]) for r in lines))
    measured = [a for a in anchor_rows() if a["status"] == "ok"]
    ncols = min(2, len(facets))
    nrows = -(-len(facets) // ncols)
    fig = Figure(figsize=(5.2 * ncols, 3.6 * nrows + 0.8), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
    for ax in axes[len(facets):]:
        ax.set_visible(False)
    for ax, (arch, batch) in zip(axes, facets):
        for mode in PALETTE:
            pts = sorted((r["grad_calls"], r["peak_gib"]) for r in lines
                         if (r["arch"], r["batch"], r["checkpointing"]) == (arch, batch, mode))
            if pts:
                ax.plot(*zip(*pts), ls="--", lw=1.6, marker=MARKERS[mode], ms=7, mfc="none", mew=1.6,
                        color=PALETTE[mode])
            got = sorted((int(a["depth"]), float(a["peak_gib"])) for a in measured
                         if (a["arch"], int(a["batch"]), a["ckpt"]) == (arch, batch, mode))
            if got:
                ax.plot(*zip(*got), ls="", marker=MARKERS[mode], ms=5, color=PALETTE[mode])
        if capacity_gib:
            ax.axhline(capacity_gib, color="grey", ls=":", lw=1.5)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)  # the frugal modes' flat lines stay readable under none's climb
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        depths = sorted({r["grad_calls"] for r in lines})
        ax.set_xticks(depths, [str(d) for d in depths])
        ax.minorticks_off()
        ax.set_title(f"{arch}, {batch} image(s) per rollout", loc="left", fontsize=10)
        ax.set_xlabel("depth (final UNet calls with gradient)" if ax in axes[-ncols:] else "")
        ax.grid(alpha=0.3)
    for ax in axes[::ncols]:
        ax.set_ylabel("peak GPU memory (GiB, log scale)")
    handles = [Line2D([], [], color=PALETTE[m], marker=MARKERS[m], lw=1.6, label=m) for m in PALETTE]
    handles += [Line2D([], [], color="black", ls="--", marker="o", mfc="none", label=f"predicted ({protocol})"),
                Line2D([], [], color="black", ls="", marker="o", label="measured, H200 anchor")]
    if capacity_gib:
        handles.append(Line2D([], [], color="grey", ls=":", label=f"device memory ({capacity_gib:.0f} GiB)"))
    fig.legend(handles=handles, loc="outside lower center", ncols=4, frameon=False, fontsize=9)
    fig.suptitle(f"{title}: planned peak memory vs depth (fp16, 512 px)", fontsize=11)
    if protocol != "anchor-h200":  # the anchor ran an older rollout: say where they must differ
        fig.text(0.5, 0.005, "The anchor was measured with the rollout of d6273e2: VAE not checkpointed in "
                 "'step' mode, full guidance batch in the first call with gradient (--protocol anchor-h200).",
                 ha="center", va="bottom", fontsize=8, color="#444444")
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "memory-vs-depth.png", out / "memory-vs-depth.svg"]
    for path in paths:
        fig.savefig(path, dpi=110)
    return paths
