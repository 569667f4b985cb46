"""Turn a `step` result store into the anchor's CSV layout and judge the issue's targets.

    python -m bench.gpu.targets STORE --csv OUT.csv --report OUT.md

CSV columns, first exactly those of shared/reference/memory-anchor-h200.csv
(arch,dtype,res,T,batch,ckpt,depth,status,peak_gib,weights_gib,sec,grad_norm), then: reserved_gib,
sec_per_image, images_per_update, precision (fp16 = loss-scaled), scheduler, unet_calls, grad_status, fwd_s,
bwd_s, label, gpu. `batch` is images per rollout as in the anchor; `depth` the UNet calls that carried
gradient (the cell's grad_calls); `sec` the median step time; `peak_gib` torch.cuda.max_memory_allocated
during a step; `weights_gib` memory allocated before the first step.

Targets (issue 7), all on sd15 at 512 px, judged on whatever rows exist (a target with no rows to judge
gets ok = None, never a pass):
  frugal_full_depth_memory     batch 1: in the mode with the lowest full-depth peak, full depth within
                               1.05x that mode's depth-1 peak and <= 0.6 x 9.01 GiB (the authors' code)
  full_depth_time_ratio        batch 1: some mode's full-depth step <= 3.5x its depth-1 step
  batched_speedup              one rollout of >= 2 images at depth <= 2: per image <= 1.65 / 3 s
  batched_full_depth_per_image one rollout of >= 2 images at full depth: per image <= 1.65 s
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

AUTHORS_PEAK_GIB = 9.01  # the reference run.py on an H200, sd15 architecture (memory-anchor-h200.md)
AUTHORS_SEC_PER_IMAGE = 1.65
ANCHOR_COLUMNS = ["arch", "dtype", "res", "T", "batch", "ckpt", "depth", "status", "peak_gib", "weights_gib", "sec",
                  "grad_norm"]
EXTRA_COLUMNS = ["reserved_gib", "sec_per_image", "images_per_update", "precision", "scheduler", "unet_calls",
                 "grad_status", "fwd_s", "bwd_s", "label", "gpu"]
DTYPE_NAMES = {"fp16": "float16", "fp16-noscale": "float16", "bf16": "bfloat16", "fp32": "float32"}


def _num(value):
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def rows_from_store(store: str | Path) -> list[dict]:
    """One anchor-layout row per current cell of a `step` store (failed cells keep their status)."""
    from bench.store import load_cells

    frame = load_cells(store)
    rows = []
    for rec in frame.to_dict(orient="records"):
        if rec.get("cell_kind") not in (None, "step"):
            continue
        cfg = json.loads(rec["config_json"])
        get = lambda key: rec.get(f"metric_{key}")  # noqa: E731
        grad_calls = _num(get("grad_calls"))
        depth = int(grad_calls) if grad_calls is not None else cfg["depth"]
        gib = lambda v: None if _num(v) is None else round(_num(v), 3)  # noqa: E731
        rows.append({
            "arch": cfg["arch"], "dtype": DTYPE_NAMES.get(cfg["precision"], cfg["precision"]),
            "res": get("resolution") or cfg["resolution"], "T": cfg["steps"], "batch": cfg["batch"], "ckpt": cfg["checkpointing"],
            "depth": depth, "status": "OOM" if rec["status"] == "oom" else rec["status"],
            "peak_gib": gib(get("peak_gib")), "weights_gib": gib(get("weights_gib")),
            "sec": gib(get("sec_per_step")), "grad_norm": _num(get("grad_norm")),
            "reserved_gib": gib(get("reserved_gib")), "sec_per_image": gib(get("sec_per_image")),
            "images_per_update": cfg["images_per_update"], "precision": cfg["precision"],
            "scheduler": cfg["scheduler"], "unet_calls": get("unet_calls"), "grad_status": get("grad_status"),
            "fwd_s": gib(get("fwd_s")), "bwd_s": gib(get("bwd_s")), "label": rec.get("label"),
            "gpu": rec.get("device_name"),
        })
    return rows


def write_csv(rows: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=ANCHOR_COLUMNS + EXTRA_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in ANCHOR_COLUMNS + EXTRA_COLUMNS})
    return path


def _ok(row: dict) -> bool:
    return row.get("status") == "ok" and _num(row.get("peak_gib")) is not None


def _full_depth(row: dict) -> int:
    return int(row.get("unet_calls") or row.get("T"))


def check_targets(rows: list[dict], arch: str = "sd15") -> list[dict]:
    """Verdicts: {target, ok (True/False/None when unmeasured), value, limit, detail}."""
    rows = [r for r in rows if r.get("arch") == arch and _ok(r) and r.get("precision", "fp16") in ("fp16", "bf16")
            and "reference" not in str(r.get("label") or "")]
    single = [r for r in rows if r["batch"] == 1 and r.get("images_per_update", 1) == 1]
    by_mode: dict[str, dict[int, dict]] = {}
    for r in single:
        by_mode.setdefault(r["ckpt"], {})[int(r["depth"])] = r
    pairs = {mode: (d[1], d[max(d)]) for mode, d in by_mode.items()
             if 1 in d and max(d) == _full_depth(d[max(d)]) and max(d) > 1}
    out = []

    if pairs:
        mode, (d1, full) = min(pairs.items(), key=lambda kv: kv[1][1]["peak_gib"])
        limit = min(1.05 * d1["peak_gib"], 0.6 * AUTHORS_PEAK_GIB)
        out.append(dict(target="frugal_full_depth_memory", ok=full["peak_gib"] <= limit, value=full["peak_gib"],
                        limit=round(limit, 3), detail=f"mode {mode}: depth {full['depth']} {full['peak_gib']} GiB vs "
                        f"depth 1 {d1['peak_gib']} GiB; authors' code {AUTHORS_PEAK_GIB} GiB"))
        ratios = {m: p[1]["sec"] / p[0]["sec"] for m, p in pairs.items()}
        best = min(ratios, key=ratios.get)
        out.append(dict(target="full_depth_time_ratio", ok=ratios[best] <= 3.5, value=round(ratios[best], 2),
                        limit=3.5, detail="full depth / depth 1 step time per mode: "
                        + ", ".join(f"{m} {r:.2f}x" for m, r in sorted(ratios.items()))))
    else:
        for t in ("frugal_full_depth_memory", "full_depth_time_ratio"):
            out.append(dict(target=t, ok=None, value=None, limit=None, detail="no batch-1 depth-1/full-depth pair"))

    batched = [r for r in rows if r["batch"] >= 2 and r.get("images_per_update", r["batch"]) == r["batch"]]
    shallow = [r for r in batched if int(r["depth"]) <= 2]
    deep = [r for r in batched if int(r["depth"]) == _full_depth(r)]
    for name, group, limit in (("batched_speedup", shallow, AUTHORS_SEC_PER_IMAGE / 3),
                               ("batched_full_depth_per_image", deep, AUTHORS_SEC_PER_IMAGE)):
        if not group:
            out.append(dict(target=name, ok=None, value=None, limit=round(limit, 3), detail="no such rows"))
            continue
        best = min(group, key=lambda r: r["sec_per_image"])
        out.append(dict(target=name, ok=best["sec_per_image"] <= limit, value=best["sec_per_image"],
                        limit=round(limit, 3), detail=f"{best['ckpt']} depth {best['depth']} batch {best['batch']}: "
                        f"{best['sec']} s per step, {best['peak_gib']} GiB; authors' code "
                        f"{AUTHORS_SEC_PER_IMAGE} s per image"))
    return out


def report(rows: list[dict], verdicts: list[dict]) -> str:
    gpus = sorted({str(r.get("gpu")) for r in rows if r.get("gpu")})
    lines = [f"# Full-size DCT step targets ({', '.join(gpus) or 'unknown device'})", "",
             "| target | ok | value | limit | detail |", "|---|---|---|---|---|"]
    for v in verdicts:
        ok = {True: "yes", False: "NO", None: "not measured"}[v["ok"]]
        lines.append(f"| {v['target']} | {ok} | {v['value']} | {v['limit']} | {v['detail']} |")
    refs = [r for r in rows if "reference" in str(r.get("label") or "")]
    for r in refs:
        lines.append("")
        lines.append(f"Reference setting ({r['arch']}: {r['scheduler']} {r['T']} steps, depth {r['depth']}, "
                     f"{r['ckpt']}, {r['precision']}, {r['images_per_update']} images of batch {r['batch']}): "
                     f"status {r['status']}, peak {r['peak_gib']} GiB, {r['sec_per_image']} s per image "
                     f"(authors' code: {AUTHORS_PEAK_GIB} GiB, {AUTHORS_SEC_PER_IMAGE} s per image for sd15)")
    lines += ["", "| " + " | ".join(ANCHOR_COLUMNS + ["sec_per_image", "label"]) + " |",
              "|" + "---|" * (len(ANCHOR_COLUMNS) + 2)]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(k, "")) for k in ANCHOR_COLUMNS + ["sec_per_image", "label"]) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", nargs="+", help="step result store folder(s)")
    parser.add_argument("--csv", required=True)
    parser.add_argument("--report")
    args = parser.parse_args(argv)
    rows = [r for store in args.store if Path(store, "cells").is_dir() for r in rows_from_store(store)]
    write_csv(rows, args.csv)
    verdicts = check_targets(rows)
    text = report(rows, verdicts)
    if args.report:
        Path(args.report).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
