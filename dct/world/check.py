"""Measurements of a built world against its targets.

- VAE: reconstruction error on the held-out images of both domains, and the guides' accuracy on the
  reconstructions (what the guides see during DCT is always a VAE decode).
- Classifiers: held-out accuracy of each guide in its domain and of the judge in both.
- Prompts: the judge's accuracy on generated images per class (N seeds x 10 classes, DDIM 20 steps,
  guidance 5) for the plain prompt "a handwritten {name}" (should be unreliable), the clean template
  "the handwritten number {name}" (should be high: the knowledge is in the model), and the same two in
  the printed domain for reference; accuracy on the designed ambiguous pair.

Generation goes through the project's loader and its one generator; classifiers through the project's
registry, cross-checked against a direct timm / transformers load of the same folders.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import data as D
from .paths import classifier_dir, default_world_dir, load_manifest, manifest_path

TARGETS = {
    "classifier_heldout_accuracy_min": 0.95,
    "plain_accuracy_mean_max": 0.50,
    "ambiguous_pair_accuracy_max": 0.60,
    "clean_accuracy_mean_min": 0.90,
}


# ---------------------------------------------------------------------------------------- generation
def generate(parts, prompts: Sequence[str], seeds: Sequence[int], *, steps: int = 20,
             guidance: float = 5.0) -> torch.Tensor:
    """Images (N, 3, H, W) in [0, 1]: image i is prompts[i] from seeds[i], by the project's one generator
    (`dct.generate.generate_images`: DDIM, the empty prompt as the unconditional half)."""
    from ..generate import generate_images

    return generate_images(parts, prompts, seeds, steps=steps, guidance=guidance, batch_size=64, progress=False)


# --------------------------------------------------------------------------------------- classifiers
@dataclass
class WorldClassifier:
    """A loaded classifier with its own preprocessing: `logits(images in [0, 1])`."""

    name: str
    forward: Callable[[torch.Tensor], torch.Tensor]  # images in [0, 1] -> logits
    library: str
    source: str

    @torch.no_grad()
    def logits(self, images01: torch.Tensor, batch: int = 256) -> torch.Tensor:
        return torch.cat([self.forward(images01[i:i + batch].float()).float() for i in range(0, len(images01), batch)])

    def predict(self, images01: torch.Tensor) -> torch.Tensor:
        return self.logits(images01).argmax(-1)


def _direct_forward(model, input_size, mean, std, interpolation, hf: bool):
    mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    std = torch.tensor(std, dtype=torch.float32)[:, None, None]
    model.eval()

    def forward(x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != tuple(input_size):
            x = F.interpolate(x, size=tuple(input_size), mode=interpolation, antialias=True, align_corners=False)
        x = (x - mean) / std
        y = model(pixel_values=x) if hf else model(x)
        return getattr(y, "logits", y)

    return forward


def load_direct(name: str, world: str | Path | None = None) -> WorldClassifier:
    """Load a world classifier straight from its folder with timm / transformers, preprocessing from its config."""
    folder = classifier_dir(name, world)
    if (folder / "preprocessor_config.json").is_file():
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        model = AutoModelForImageClassification.from_pretrained(str(folder)).float()
        proc = AutoImageProcessor.from_pretrained(str(folder))
        size = proc.size.get("shortest_edge") or proc.size.get("height")
        fwd = _direct_forward(model, (size, size), proc.image_mean, proc.image_std, "bicubic", hf=True)
        return WorldClassifier(name, fwd, "transformers", str(folder))
    import timm
    from timm.data import resolve_data_config

    model = timm.create_model(f"local-dir:{folder}", pretrained=True)
    cfg = resolve_data_config(model=model)
    interp = cfg.get("interpolation", "bicubic")
    fwd = _direct_forward(model, cfg["input_size"][1:], cfg["mean"], cfg["std"],
                          interp if interp in ("bilinear", "bicubic") else "bilinear", hf=False)
    return WorldClassifier(name, fwd, "timm", str(folder))


def load_world_classifier(name: str, world: str | Path | None = None) -> WorldClassifier:
    """'guide-handwritten', 'guide-printed' or 'judge', through `dct.classifiers.load_classifier`.

    The registry resolves `world:<name>` against the default world ($DCT_WORLD or the committed one);
    for another world folder its folder specs (`timm:<folder>`, `hf:<folder>`) are used.
    """
    from ..classifiers import load_classifier

    folder = classifier_dir(name, world)
    if world is None or Path(world).resolve() == default_world_dir().resolve():
        spec = f"world:{name}"
    else:
        spec = f"hf:{folder}" if (folder / "preprocessor_config.json").is_file() else f"timm:{folder}"
    clf = load_classifier(spec).eval()
    return WorldClassifier(name, clf, clf.family, spec)


# --------------------------------------------------------------------------------------------- check
def _per_class(pred: torch.Tensor, target: torch.Tensor, n_classes: int) -> list[float]:
    return [float((pred[target == c] == c).float().mean()) for c in range(n_classes)]


def run_check(world: str | Path | None = None, *, seeds: int = 32, seed_offset: int = 0, steps: int = 20,
              guidance: float = 5.0, threads: int | None = 2, grid_dir: str | Path | None = None,
              log: Callable[[str], None] | None = None) -> dict:
    """Measure the world; returns a JSON-ready dict (with "targets" and "meets" booleans)."""
    from ..pipeline import load_parts

    log = log or (lambda s: None)
    if threads:
        torch.set_num_threads(threads)
    world = Path(world or default_world_dir())
    manifest = load_manifest(world)
    names = manifest["classes"]
    n_classes = len(names)
    t0 = time.time()
    result: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "settings": {"seeds": seeds, "seed_offset": seed_offset, "scheduler": "ddim", "steps": steps,
                                 "guidance": guidance, "negative": "", "dtype": "fp32"}}

    clfs = {n: load_world_classifier(n, world) for n in manifest["classifiers"]}
    judge = clfs[manifest["default_judge"]]
    held = {d: D.load_domain(d, "heldout", as_float=True) for d in manifest["domains"]}
    result["classifiers"] = {}
    for name, clf in clfs.items():
        doms = manifest["classifiers"][name]["domains"]
        preds = {d: clf.predict(x) for d, (x, _) in held.items()}
        accs = {d: float((preds[d] == y).float().mean()) for d, (_, y) in held.items()}
        # The same folder loaded with bare timm / transformers must agree: the preprocessing facts
        # live in the folder's config, not in this project's code.
        direct = load_direct(name, world)
        agree = float(torch.cat([(direct.predict(x) == preds[d]) for d, (x, _) in held.items()]).float().mean())
        result["classifiers"][name] = {"heldout_accuracy": {d: accs[d] for d in doms},
                                       "other_domain_accuracy": {d: a for d, a in accs.items() if d not in doms},
                                       "loaded_as": clf.source, "direct_loader_agreement": agree}
        log(f"{name}: held-out accuracy " + ", ".join(f"{d} {a:.4f}" for d, a in accs.items()))

    parts = load_parts(str(world / manifest["pipeline"]), dtype="fp32")
    result["vae"] = {}
    with torch.no_grad():
        for d, (x, y) in held.items():
            z = parts.vae.encode(x * 2 - 1).latent_dist.mean
            rec = (parts.vae.decode(z).sample / 2 + 0.5).clamp(0, 1)
            mse = float(F.mse_loss(rec, x))
            guide = clfs[manifest["default_guide"][d]]
            result["vae"][d] = {"mse": mse, "psnr_db": 10 * math.log10(1 / mse),
                                "guide_accuracy_on_reconstructions": float((guide.predict(rec) == y).float().mean()),
                                "judge_accuracy_on_reconstructions": float((judge.predict(rec) == y).float().mean())}
            log(f"vae {d}: mse {mse:.5f}, guide on reconstructions {result['vae'][d]['guide_accuracy_on_reconstructions']:.4f}")

    seed_list = list(range(seed_offset, seed_offset + seeds))
    labels = torch.tensor([c for c in range(n_classes) for _ in seed_list])
    all_seeds = [s for _ in range(n_classes) for s in seed_list]
    templates = manifest["templates"]
    result["prompts"] = {}
    grids = {}
    for d in manifest["domains"]:
        for kind in ("plain", "clean"):
            prompts = [templates[kind].format(domain=d, name=names[c]) for c in labels.tolist()]
            t = time.time()
            images = generate(parts, prompts, all_seeds, steps=steps, guidance=guidance)
            pred = judge.predict(images)
            guide_pred = clfs[manifest["default_guide"][d]].predict(images)
            per = _per_class(pred, labels, n_classes)
            counts = torch.zeros(n_classes, n_classes, dtype=torch.long)  # [prompt class, judged class]
            for a, b in zip(labels.tolist(), pred.tolist()):
                counts[a, b] += 1
            result["prompts"][f"{d}/{kind}"] = {
                "template": templates[kind].format(domain=d, name="{name}"),
                "judge_accuracy_mean": float(np.mean(per)), "judge_accuracy_per_class": per,
                "guide_accuracy_mean": float(np.mean(_per_class(guide_pred, labels, n_classes))),
                "guide_judge_agreement": float((guide_pred == pred).float().mean()),
                "judged_as": counts.tolist(), "seconds": round(time.time() - t, 1)}
            grids[f"{d}-{kind}"] = images
            log(f"{d}/{kind}: judge accuracy {np.mean(per):.3f}  per class " + " ".join(f"{a:.2f}" for a in per)
                + f"  ({time.time() - t:.0f} s)")

    # Errors of the plain prompt should go to the class that shares the word: for the word of class c,
    # that is the class k whose confuser is c.
    said_by = {int(v): int(k) for k, v in manifest["confusers"].items()}
    plain = result["prompts"]["handwritten/plain"]
    counts = torch.tensor(plain["judged_as"])
    errors = counts.sum() - counts.diag().sum()
    to_sharer = sum(int(counts[c, said_by[c]]) for c in range(n_classes))
    plain["errors_to_word_sharer"] = float(to_sharer / errors) if errors else None
    a, b = manifest["ambiguous_pair"]["classes"]
    result["ambiguous_pair"] = {
        "classes": [a, b], "word": names[a],
        "plain_accuracy": float(np.mean([plain["judge_accuracy_per_class"][a], plain["judge_accuracy_per_class"][b]])),
        "word_prompt_judged_as": {names[a]: int(counts[a, a]) / seeds, names[b]: int(counts[a, b]) / seeds},
        "clean_accuracy": float(np.mean([result["prompts"]["handwritten/clean"]["judge_accuracy_per_class"][c]
                                         for c in (a, b)]))}
    clf_min = min(v for c in result["classifiers"].values() for v in c["heldout_accuracy"].values())
    result["targets"] = TARGETS
    result["meets"] = {
        "classifiers": clf_min >= TARGETS["classifier_heldout_accuracy_min"],
        "plain": plain["judge_accuracy_mean"] <= TARGETS["plain_accuracy_mean_max"],
        "ambiguous_pair": result["ambiguous_pair"]["plain_accuracy"] <= TARGETS["ambiguous_pair_accuracy_max"],
        "clean": result["prompts"]["handwritten/clean"]["judge_accuracy_mean"] >= TARGETS["clean_accuracy_mean_min"],
    }
    result["summary"] = {
        "min_classifier_heldout_accuracy": clf_min,
        "plain_judge_accuracy": plain["judge_accuracy_mean"],
        "clean_judge_accuracy": result["prompts"]["handwritten/clean"]["judge_accuracy_mean"],
        "ambiguous_pair_plain_accuracy": result["ambiguous_pair"]["plain_accuracy"],
        "vae_mse": {d: v["mse"] for d, v in result["vae"].items()},
    }
    result["seconds"] = round(time.time() - t0, 1)
    if grid_dir:
        grid_dir = Path(grid_dir)
        for key, images in grids.items():
            # one row per class, seeds across (at most 16 shown)
            k = min(seeds, 16)
            rows = images.view(n_classes, seeds, *images.shape[1:])[:, :k].reshape(-1, *images.shape[1:])
            D.save_grid(grid_dir / f"{key}.png", rows, nrow=k, scale=3)
        result["grids"] = str(grid_dir)
    return result


def record(result: dict, world: str | Path | None = None) -> Path:
    """Store a check result as the manifest's "check" section."""
    import json

    path = manifest_path(world)
    manifest = json.loads(path.read_text())
    manifest["check"] = result
    path.write_text(json.dumps(manifest, indent=2))
    return path
