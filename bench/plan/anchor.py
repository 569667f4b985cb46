"""The H200 anchor (data/anchor-h200.csv, measured on full-size SD architectures with random weights):
the planner's two constants are calibrated on two of its rows, and every other row validates it.

    python -m bench.plan.anchor calibrate                      # the constants planner.py should hold
    python -m bench.plan.anchor validate                       # predicted vs measured, as markdown
    python -m bench.plan.anchor validate results/gpu/fullsize-<GPU>.csv h200   # a bench/gpu measurement
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.plan.planner import GIB, MEMORY_CALIBRATION_ROW, TIME_CALIBRATION_ROW, plan

ANCHOR_CSV = Path(__file__).resolve().parent / "data" / "anchor-h200.csv"
# The authors' run.py on the same H200 (anchor-h200.md): training peak, seconds per image
REFERENCE_CODE = {"sd15": (9.01, 1.65), "sd21base": (10.56, 2.34)}


def anchor_rows(path: Path = ANCHOR_CSV) -> list[dict]:
    """Rows of the anchor CSV, or of any CSV in its layout (bench/gpu's fullsize-<GPU>.csv)."""
    import csv

    lines = [ln for ln in Path(path).read_text().splitlines() if ln and not ln.startswith("#")]
    return list(csv.DictReader(lines))


def anchor_config(row: dict) -> dict:
    """The step cell config an anchor row measured (the anchor: DDIM, fp16 without loss scaling; a
    bench/gpu CSV names its scheduler, precision and images per update)."""
    return dict(arch=row["arch"], resolution=int(row["res"]), scheduler=row.get("scheduler") or "ddim",
                steps=int(row["T"]), guidance=7.0, batch=int(row["batch"]), checkpointing=row["ckpt"],
                depth=int(row["depth"]), classifier="vit-l16-random",
                precision=row.get("precision") or ("fp16-noscale" if row["dtype"] == "float16" else "bf16"),
                images_per_update=int(row.get("images_per_update") or row["batch"]))


def reference_code_config(arch: str) -> dict:
    return dict(preset="reference", arch=arch, classifier="vit-l16-random")


def anchor_key(row: dict) -> tuple:
    return (row["arch"], int(row["batch"]), row["ckpt"], int(row["depth"]))


def validation(calibrated: bool = True, path: Path | None = None, gpu: str = "h200",
               protocol: str = "anchor-h200") -> list[dict]:
    """Every anchor row and the two reference-code rows, predicted and measured, with the error; rows
    that calibrated a constant say so (`role`). With `path` (a bench/gpu CSV, measured with this
    repository's rollout: protocol dct) its rows instead, and no reference-code rows."""
    out = []
    for row in anchor_rows(path or ANCHOR_CSV):
        p = plan(anchor_config(row), gpu=gpu, protocol=protocol, calibrated=calibrated)
        key = anchor_key(row)
        role = "calibrates memory" if path is None and key == MEMORY_CALIBRATION_ROW else "validates"
        if path is None and key == TIME_CALIBRATION_ROW:
            role += ", calibrates time"
        measured = float(row["peak_gib"]) if row["status"] == "ok" else None
        sec = float(row["sec"]) if row["status"] == "ok" else None
        out.append(dict(arch=row["arch"], batch=key[1], ckpt=key[2], depth=key[3], status=row["status"],
                        measured_gib=measured, predicted_gib=p.peak_bytes / GIB, fits=p.fits,
                        error=(p.peak_bytes / GIB / measured - 1) if measured else None, measured_s=sec,
                        predicted_s=p.seconds, time_factor=(p.seconds / sec) if sec else None, role=role))
    for arch, (gib, sec_per_image) in (REFERENCE_CODE.items() if path is None else ()):
        p = plan(reference_code_config(arch), gpu="h200", protocol="reference-code", calibrated=calibrated)
        out.append(dict(arch=arch, batch=1, ckpt="block", depth=2, status="reference-code", measured_gib=gib,
                        predicted_gib=p.peak_bytes / GIB, fits=p.fits, error=p.peak_bytes / GIB / gib - 1,
                        measured_s=sec_per_image * 5, predicted_s=p.seconds,
                        time_factor=p.seconds / (sec_per_image * 5), role="validates"))
    return out


def calibrate() -> dict:
    """The constants this module should hold: the untraced bytes per image from the memory calibration
    row, the launch cost per kernel from the time calibration row."""
    rows = {anchor_key(r): r for r in anchor_rows()}
    row = rows[MEMORY_CALIBRATION_ROW]
    p = plan(anchor_config(row), gpu="h200", protocol="anchor-h200", calibrated=False)
    per_image = (int(round(float(row["peak_gib"]) * GIB)) - p.peak_bytes) // MEMORY_CALIBRATION_ROW[1]
    row = rows[TIME_CALIBRATION_ROW]
    p = plan(anchor_config(row), gpu="h200", protocol="anchor-h200")
    launch = (float(row["sec"]) - p.roofline_seconds) / p.kernels
    return {"UNTRACED_BYTES_PER_IMAGE": per_image, "LAUNCH_SECONDS": float(f"{launch:.3g}")}


def validation_markdown(rows: list[dict]) -> str:
    """The validation as a markdown table (results/plan/validation.md)."""
    out = ["| arch | batch | ckpt | depth | measured GiB | predicted GiB | error | measured s | predicted s "
           "| time x | role |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        meas = f"{r['measured_gib']:.2f}" if r["measured_gib"] is not None else r["status"]
        err = f"{r['error'] * 100:+.1f}%" if r["error"] is not None else ("predicted OOM" if not r["fits"] else "-")
        sec = f"{r['measured_s']:.2f}" if r["measured_s"] is not None else "-"
        factor = f"{r['time_factor']:.2f}" if r["time_factor"] is not None else "-"
        role = r["role"] + (" (authors' code, 5 images)" if r["status"] == "reference-code" else "")
        out.append(f"| {r['arch']} | {r['batch']} | {r['ckpt']} | {r['depth']} | {meas} | {r['predicted_gib']:.2f} "
                   f"| {err} | {sec} | {r['predicted_s']:.2f} | {factor} | {role} |")
    return "\n".join(out)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["calibrate"]:
        print(json.dumps(calibrate(), indent=1))
    elif sys.argv[1:2] == ["validate"] and len(sys.argv) <= 4:
        # validate [CSV GPU]: a bench/gpu measurement (this repository's rollout) instead of the anchor
        csv_path = Path(sys.argv[2]) if len(sys.argv) > 2 else None
        gpu_name = sys.argv[3] if len(sys.argv) > 3 else "h200"
        print(validation_markdown(validation(path=csv_path, gpu=gpu_name,
                                             protocol="dct" if csv_path else "anchor-h200")))
    else:
        sys.exit("usage: python -m bench.plan.anchor calibrate | validate [fullsize-<GPU>.csv GPU]")
