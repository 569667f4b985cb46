"""`dct`: train, generate, evaluate and benchmark Discriminative Class Tokens.

    dct train --class 7                 # a token for class 7 of the embedded tiny world
    dct generate --token tokens/7.safetensors --seeds 0-7 --out images/
    dct bench depth                     # the backprop-depth x checkpointing grid
    dct world check                     # the tiny world's own quality numbers

Errors the user can fix (bad spec, unknown classifier, class out of range, missing folder) print one
line on stderr and exit with status 2, before any long work starts; `dct --debug ...` shows the traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from dct.clikit import DEVICE_DEFAULT, DEVICE_HELP, JSON_HELP, DCTGroup, fail, set_debug

app = typer.Typer(help="Train, generate, evaluate and benchmark Discriminative Class Tokens (DCT).", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False, cls=DCTGroup)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"dct {version('dct-bench')}")
        except PackageNotFoundError:
            typer.echo("dct (not installed as a package)")
        raise typer.Exit()


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show the traceback of an error (also $DCT_DEBUG=1)."),
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    set_debug(debug)


@app.command()
def train(
    cls: str = typer.Option(..., "--class", "--classes", "-c",
                            help="Class index (0-based) or name; several ('0-4', '1,3,seven', 'all') train together into a token bank."),
    model: Optional[str] = typer.Option(None, help="Stable Diffusion hub id or local diffusers folder (default: tiny world)."),
    classifier: Optional[str] = typer.Option(None, help="Guide classifier spec, e.g. 'timm:<folder>', 'hf:<id>' (default: the world's guide)."),
    preset: str = typer.Option("fast", help="'paper' (the reference protocol), 'fast' (our defaults) or a preset TOML/JSON file."),
    depth: Optional[str] = typer.Option(None, help="Final UNet calls with gradient: an integer or 'full'."),
    checkpointing: Optional[str] = typer.Option(None, help="none | block | step | both"),
    precision: Optional[str] = typer.Option(None, help="fp32 | bf16 | fp16 (loss-scaled) | fp16-noscale"),
    scheduler: Optional[str] = typer.Option(None, help="ddim | pndm | dpm++ | euler | default"),
    steps: Optional[int] = typer.Option(None, help="Denoising steps."),
    guidance: Optional[float] = typer.Option(None, help="Classifier-free guidance scale."),
    lr: Optional[float] = typer.Option(None, help="Learning rate."),
    max_epochs: Optional[int] = typer.Option(None, help="At most this many optimiser steps."),
    images_per_update: Optional[int] = typer.Option(None, help="Images per optimiser step."),
    rollout_batch: Optional[int] = typer.Option(None, help="Images per rollout (a divisor of images-per-update)."),
    seed: Optional[int] = typer.Option(None, help="Seed of latents and template choice."),
    out: Optional[Path] = typer.Option(None, help="Output .safetensors (default tokens/class-<c>.safetensors)."),
    device: str = typer.Option(DEVICE_DEFAULT, help=DEVICE_HELP),
    resume: bool = typer.Option(False, help="Continue a training stopped by Ctrl-C from its state "
                                            "(<out>.resume/), with the same options."),
    overwrite: bool = typer.Option(False, help="Replace an existing output file (a bank still reuses the classes "
                                               "<out>.classes/ holds for the same config and world; delete that "
                                               "folder to retrain them)."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP + " (the sidecar)"),
):
    """Train one discriminative class token and save it in diffusers' textual-inversion format."""
    from dct.errors import DCTError
    from dct.jobs import load_train_config, parse_classes, sidecar_json, train_to_file

    try:
        depth_value = int(depth) if depth and depth.isdigit() else depth
        cfg = load_train_config(preset, model=model, classifier=classifier, depth=depth_value,
                          checkpointing=checkpointing, precision=precision, scheduler=scheduler, steps=steps,
                          guidance=guidance, lr=lr, max_epochs=max_epochs, images_per_update=images_per_update,
                          rollout_batch=rollout_batch, seed=seed)
        classes = parse_classes(cls)
        single = classes != "all" and len(classes) == 1
        path = out or Path("tokens") / (f"class-{cls}.safetensors" if single else
                                        f"bank-{cls.replace(',', '_')}.safetensors")
        path, sidecar = train_to_file(cfg, classes, path, device=device, overwrite=overwrite, progress=True,
                                      resume=resume)
    except DCTError as exc:
        fail(exc)
    if json_out:
        print(sidecar_json(sidecar))
    elif "tokens" in sidecar:
        for ph, t in sidecar["tokens"].items():
            r = t["result"]
            typer.echo(f"  {ph}: class {r['target']} '{r['class_name']}', stop: {r['stop_reason']}, {r['n_images']} images")
        typer.echo(f"saved {path} ({len(sidecar['tokens'])} tokens; resumed {len(sidecar['resumed_classes'])})")
        # the bank file holds N tokens, which diffusers does not read from one file; the per-class files do
        parts = path.with_suffix(".classes")
        typer.echo(f"diffusers: pipe.load_textual_inversion(sorted(glob.glob('{parts}/class-*.safetensors')))")
    else:
        r = sidecar["result"]
        typer.echo(f"saved {path} (class {r['target']} '{r['class_name']}', stop: {r['stop_reason']}, "
                   f"{r['n_images']} images, {r['seconds']:.1f} s, depth {r['n_grad_calls']}/{r['n_calls']} UNet calls)")


@app.command()
def generate(
    out: Path = typer.Option(..., help="Folder for the PNG images."),
    token: Optional[Path] = typer.Option(None, help="A learned token (.safetensors); its sidecar names the class."),
    cls: Optional[str] = typer.Option(None, "--class", "-c", help="Class index or name (default: the token's class)."),
    prompt: Optional[str] = typer.Option(None, help="A free prompt instead of the class template."),
    plain: bool = typer.Option(False, help="Also render the plain class prompt (no token) on the same seeds."),
    model: Optional[str] = typer.Option(None, help="Hub id or diffusers folder (default: the token's model or the tiny world)."),
    seeds: str = typer.Option("0-7", help="Seeds, e.g. '0-7' or '0,3,5'."),
    scheduler: str = typer.Option("ddim", help="ddim | pndm | dpm++ | euler | default"),
    steps: int = typer.Option(20, help="Denoising steps."),
    guidance: float = typer.Option(5.0, help="Classifier-free guidance scale."),
    device: str = typer.Option(DEVICE_DEFAULT, help=DEVICE_HELP),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP + " (the folder, files and prompts)"),
):
    """Render images with a learned token (and/or the plain prompt) on fixed seeds."""
    from dct.errors import DCTError
    from dct.eval.cli import parse_seeds
    from dct.jobs import run_generate

    try:
        files = run_generate(out=out, token=token, cls=cls, prompt=prompt,
                             plain=plain, model=model, seeds=parse_seeds(seeds), scheduler=scheduler, steps=steps,
                             guidance=guidance, device=device)
    except DCTError as exc:
        fail(exc)
    if json_out:
        import json

        prompts = json.loads((out / "prompts.json").read_text())
        typer.echo(json.dumps({"out": str(out), "files": [str(f) for f in files], **prompts}, indent=2))
    else:
        typer.echo(f"wrote {len(files)} images to {out}")


def _mount_subapps() -> None:
    """Sub-apps live beside the code they drive."""
    from bench.cli import bench_app, make_bench_command, results_app
    from bench.figures.cli import figures_app, report_app
    from bench.plan.cli import plan_command
    from bench.scale.launch import launch_app, worker_app
    from bench.search.cli import search_app
    from dct.eval.cli import eval_app
    from dct.world.cli import world_app

    bench_app.command("plan")(plan_command)
    for name, text in (("depth", "Backprop depth x gradient checkpointing x precision (ablations/depth.toml)."),
                       ("classifier", "Which classifier guides training; the judge stays fixed (ablations/classifier.toml)."),
                       ("transfer", "Train with one domain's classifier, judge with the other's (ablations/transfer.toml)."),
                       ("augment", "Low-resource augmentation: real vs plain-prompt vs DCT images (ablations/augment.toml)."),
                       ("methods", "DCT against prompt search, textual inversion and classifier guidance: accuracy vs "
                                   "the cost of N images (ablations/methods.toml).")):
        bench_app.command(name, help=text)(make_bench_command(name, help=text))
    app.add_typer(world_app, name="world", help="Build, check and describe the embedded tiny world.")
    app.add_typer(eval_app, name="eval", help="Judge accuracy (with CIs) and FID/KID of a token vs the plain prompt.")
    app.add_typer(bench_app, name="bench")
    app.add_typer(results_app, name="results")
    app.add_typer(figures_app, name="figures")
    app.add_typer(report_app, name="report")
    app.add_typer(search_app, name="search")
    app.add_typer(worker_app, name="worker")
    app.add_typer(launch_app, name="launch")


_mount_subapps()


if __name__ == "__main__":
    sys.exit(app())
