"""`dct world ...`: build, check and describe the tiny world (mounted by the root CLI as `world`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

world_app = typer.Typer(help="The tiny offline digit world: build it, check it against its targets, describe it.",
                        no_args_is_help=True)


def _err(msg: str) -> None:
    typer.echo(msg, err=True)


@world_app.command()
def build(
    out: Optional[Path] = typer.Option(None, help="World folder to write (default: $DCT_WORLD or the committed "
                                                  "dct/world/assets/tiny)."),
    seed: int = typer.Option(0, help="Seed of every random choice in the build."),
    steps: Optional[int] = typer.Option(None, help="Diffusion training steps (default 3000; 40 with --quick)."),
    noise: Optional[float] = typer.Option(None, help="Share of plain captions that name the confuser class."),
    quick: bool = typer.Option(False, "--quick", help="A smoke build of a few minutes (targets not expected)."),
    threads: int = typer.Option(2, help="torch threads (the build is sized for 2 CPU cores)."),
    reuse_vae: Optional[Path] = typer.Option(None, help="Take the VAE of this world folder instead of training one."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing world folder."),
    check: bool = typer.Option(False, "--check", help="Run `check` afterwards and record it in world.json."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars on stderr."),
) -> None:
    """Train guides, judge, VAE, text encoder and UNet, and write the world folder (~25 min on 2 cores)."""
    from .paths import default_world_dir
    from .recipe import RecipeConfig, build_world

    kw = {"seed": seed, "threads": threads}
    if steps is not None:
        kw["steps"] = steps
    if noise is not None:
        kw["noise"] = noise
    if reuse_vae is not None:
        if not (reuse_vae / "sd" / "vae" / "config.json").is_file():
            _err(f"error: {reuse_vae} has no sd/vae/ (give a world folder)")
            raise typer.Exit(2)
        kw["reuse_vae"] = str(reuse_vae.resolve())
    cfg = RecipeConfig.quick_config(**kw) if quick else RecipeConfig(**kw)
    out = out or default_world_dir()
    try:
        manifest = build_world(out, cfg, progress=progress, overwrite=overwrite,
                               log_fn=lambda s: typer.echo(s, err=True))
    except FileExistsError as exc:
        _err(f"error: {exc}")
        raise typer.Exit(2)
    if check:
        _check(out, 32, 0, 20, 5.0, threads, None, record=True, as_json=False)
    typer.echo(f"world written to {out} ({manifest['size_bytes'] / 1e6:.1f} MB, "
               f"{manifest['build']['seconds']['total'] / 60:.1f} min)")


def _check(world, seeds, seed_offset, steps, guidance, threads, grids, *, record: bool, as_json: bool) -> dict:
    from . import check as C

    result = C.run_check(world, seeds=seeds, seed_offset=seed_offset, steps=steps, guidance=guidance,
                         threads=threads, grid_dir=grids, log=None if as_json else (lambda s: _err(s)))
    if record:
        C.record(result, world)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        s = result["summary"]
        t = result["targets"]
        m = result["meets"]

        def ok(flag: bool) -> str:
            return "ok" if flag else "MISSED"

        typer.echo(f"classifiers (min held-out accuracy)  {s['min_classifier_heldout_accuracy']:.3f}  "
                   f"target >= {t['classifier_heldout_accuracy_min']}  {ok(m['classifiers'])}")
        typer.echo(f"plain prompt, judge accuracy          {s['plain_judge_accuracy']:.3f}  "
                   f"target <= {t['plain_accuracy_mean_max']}  {ok(m['plain'])}")
        typer.echo(f"ambiguous pair, plain accuracy        {s['ambiguous_pair_plain_accuracy']:.3f}  "
                   f"target <= {t['ambiguous_pair_accuracy_max']}  {ok(m['ambiguous_pair'])}")
        typer.echo(f"clean template, judge accuracy        {s['clean_judge_accuracy']:.3f}  "
                   f"target >= {t['clean_accuracy_mean_min']}  {ok(m['clean'])}")
        typer.echo("vae held-out mse                      " + ", ".join(f"{d} {v:.5f}" for d, v in s["vae_mse"].items()))
        if record:
            typer.echo("recorded in world.json")
    return result


@world_app.command()
def check(
    world: Optional[Path] = typer.Option(None, help="World folder (default: $DCT_WORLD or the committed world)."),
    seeds: int = typer.Option(32, help="Seeds per class for the prompt measurements."),
    seed_offset: int = typer.Option(0, help="First seed (use e.g. 1000 for fresh seeds)."),
    steps: int = typer.Option(20, help="DDIM steps."),
    guidance: float = typer.Option(5.0, help="Classifier-free guidance scale."),
    threads: int = typer.Option(2, help="torch threads."),
    grids: Optional[Path] = typer.Option(None, help="Write one PNG grid per prompt set into this folder."),
    record: bool = typer.Option(False, "--record", help="Store the result as world.json's 'check' section."),
    as_json: bool = typer.Option(False, "--json", help="Print the full result as JSON."),
) -> None:
    """Measure VAE, classifiers and prompts against the world's targets (~2 min)."""
    from ..errors import DCTError

    try:
        result = _check(world, seeds, seed_offset, steps, guidance, threads, grids, record=record, as_json=as_json)
    except DCTError as exc:
        _err(f"error: {exc}")
        raise typer.Exit(2)
    if not all(result["meets"].values()):
        raise typer.Exit(1)


def world_info(world: Path | None = None) -> dict:
    from .paths import default_world_dir, load_manifest
    from .recipe import dir_size

    world = Path(world or default_world_dir())
    manifest = load_manifest(world)
    parts = {"pipeline": world / manifest["pipeline"]}
    parts.update({f"classifier {n}": world / c["path"] for n, c in manifest["classifiers"].items()})
    sizes = {k: dir_size(p) for k, p in parts.items()}
    pipe = world / manifest["pipeline"]
    for sub in ("text_encoder", "unet", "vae", "tokenizer", "scheduler"):
        if (pipe / sub).is_dir():
            sizes[f"pipeline/{sub}"] = dir_size(pipe / sub)
    check = manifest.get("check") or {}
    return {
        "world": str(world),
        "size_bytes": dir_size(world),
        "paths": {k: str(p) for k, p in parts.items()},
        "sizes_bytes": sizes,
        "classes": manifest["classes"],
        "domains": manifest["domains"],
        "templates": manifest["templates"],
        "ambiguous_pair": manifest["ambiguous_pair"],
        "confusers": manifest["confusers"],
        "default_guide": manifest["default_guide"],
        "default_judge": manifest["default_judge"],
        "classifiers": {n: {k: c[k] for k in ("library", "architecture", "role", "domains", "params",
                                              "heldout_accuracy") if k in c}
                        for n, c in manifest["classifiers"].items()},
        "build_minutes": round(manifest["build"]["seconds"]["total"] / 60, 1),
        "built": manifest["build"]["date"],
        "check": check.get("summary"),
        "meets": check.get("meets"),
    }


@world_app.command()
def info(
    world: Optional[Path] = typer.Option(None, help="World folder (default: $DCT_WORLD or the committed world)."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """What is in the world and where, with sizes and measured numbers."""
    from ..errors import DCTError

    try:
        out = world_info(world)
    except DCTError as exc:
        _err(f"error: {exc}")
        raise typer.Exit(2)
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    mb = 1e6
    typer.echo(f"world      {out['world']}  ({out['size_bytes'] / mb:.1f} MB, built {out['built']}, "
               f"{out['build_minutes']} min)")
    for k, p in out["paths"].items():
        typer.echo(f"  {k:28s} {out['sizes_bytes'][k] / mb:6.2f} MB  {p}")
    for k, v in out["sizes_bytes"].items():
        if k.startswith("pipeline/"):
            typer.echo(f"    {k:26s} {v / mb:6.2f} MB")
    typer.echo(f"classes    {', '.join(f'{i}={n}' for i, n in enumerate(out['classes']))}")
    typer.echo(f"domains    {', '.join(out['domains'])}")
    typer.echo(f"templates  dct {out['templates']['dct']}, plain {out['templates']['plain']!r}, "
               f"clean {out['templates']['clean']!r}")
    ap = out["ambiguous_pair"]
    typer.echo(f"ambiguous  classes {ap['classes']} ({ap['note']})")
    for n, c in out["classifiers"].items():
        accs = ", ".join(f"{d} {a:.3f}" for d, a in c["heldout_accuracy"].items())
        typer.echo(f"classifier {n:18s} {c['library']:12s} {c['architecture']:32s} "
                   f"{c['params'] / 1e6:.2f} M  held-out {accs}")
    if out["check"]:
        s = out["check"]
        typer.echo(f"check      plain {s['plain_judge_accuracy']:.3f}, clean {s['clean_judge_accuracy']:.3f}, "
                   f"ambiguous pair {s['ambiguous_pair_plain_accuracy']:.3f}, meets {out['meets']}")
    else:
        typer.echo("check      not recorded (run `dct world check --record`)")


if __name__ == "__main__":  # python -m dct.world.cli
    sys.exit(world_app())
