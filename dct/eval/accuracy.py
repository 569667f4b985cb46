"""Classification accuracy of generated images, with bootstrap confidence intervals.

The numbers DCT is judged by are accuracies over a few images per class (the reference code uses 10),
so every accuracy here comes with a 95% interval and the number of images it rests on; a difference
between the token prompt and the plain prompt comes with a paired interval when both were generated
from the same seeds (the same starting latents), which removes the seed-to-seed variance that the two
prompts share.

Reports are plain JSON-able dicts (lists, floats, ints, strings) so that `dct eval --json`, the bench
grids and pandas can consume them without this module.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import ConfigError

CI_METHOD = (
    "percentile bootstrap over images: per class, images are resampled with replacement; the overall "
    "interval resamples within each class (stratified, class sizes fixed), so it reflects only the "
    "image-to-image variation given the classes evaluated"
)
PAIRED_METHOD = (
    "paired percentile bootstrap: (class, seed) pairs are resampled with replacement within each class, "
    "and the difference of the two accuracies is recomputed on each resample"
)
UNPAIRED_METHOD = (
    "unpaired percentile bootstrap: each report's images are resampled independently within each class; "
    "used because the two reports were not made on the same (class, seed) pairs"
)
_MAX_CHUNK = 4_000_000  # resample indices held at once (n_boot x n_class), keeps memory bounded


@torch.no_grad()
def classify(classifier: torch.nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Logits (N, C), float32 on the CPU, of `images` (N, 3, H, W) in [0, 1].

    The classifier does its own preprocessing (resize, normalise). Images are moved to the classifier's
    device batch by batch, so a large set of generated images can stay on the CPU.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ConfigError(f"images must be (N, 3, H, W) in [0, 1]; got shape {tuple(images.shape)}")
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} is not accepted: an integer >= 1")
    was_training = classifier.training
    classifier.eval()
    try:
        param = next(classifier.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        out = [classifier(images[i:i + batch_size].to(device=device, dtype=torch.float32)).float().cpu()
               for i in range(0, len(images), batch_size)]
    finally:
        classifier.train(was_training)
    return torch.cat(out) if out else torch.empty(0, getattr(classifier, "num_classes", 0))


def topk_correct(scores: torch.Tensor, targets: torch.Tensor, k: int) -> np.ndarray:
    """(N,) 0/1: whether the target is among the top `k` of each row.

    `scores` are float logits (N, C) or integer predictions: (N,) top-1 labels, or (N, m) class ids
    ranked best first (m >= k).
    """
    if scores.dtype.is_floating_point:
        top = scores.topk(k, dim=1).indices
    else:
        top = scores[:, None] if scores.ndim == 1 else scores[:, :k]
        if top.shape[1] < k:
            raise ConfigError(f"top-{k} needs {k} ranked predictions per image; got {top.shape[1]}")
    return (top == targets[:, None]).any(1).numpy().astype(np.int8)


def _as_targets(targets, n: int) -> torch.Tensor:
    if isinstance(targets, (int, np.integer)):
        return torch.full((n,), int(targets), dtype=torch.long)
    t = torch.as_tensor(np.asarray(targets)).long().reshape(-1)
    if len(t) != n:
        raise ConfigError(f"got {n} images but {len(t)} targets")
    return t


def _percentile_ci(samples: np.ndarray, level: float) -> tuple[float, float]:
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(samples, [alpha, 1 - alpha])
    return float(lo), float(hi)


def _bootstrap_sums(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, M) sums over a with-replacement resample of the rows of `values` (n, M)."""
    n = len(values)
    out = np.empty((n_boot, values.shape[1]), dtype=np.float64)
    step = max(1, _MAX_CHUNK // max(n, 1))
    for start in range(0, n_boot, step):
        stop = min(n_boot, start + step)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = values[idx].sum(1)
    return out


def _stat(point: float, boot: np.ndarray, level: float) -> dict:
    lo, hi = _percentile_ci(boot, level)
    return {"acc": float(point), "lo": lo, "hi": hi}


def accuracy_report(
    scores: torch.Tensor,
    targets: torch.Tensor | Sequence[int] | int,
    class_ids: Sequence[int] | None = None,
    *,
    num_classes: int | None = None,
    labels: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    topk: int = 5,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Top-1 and top-k accuracy, per class and overall, each with a bootstrap confidence interval.

    scores: float logits (N, C), or integer predictions: (N,) top-1 labels or (N, m) ranked class ids
        (then top-k needs m >= k, and `num_classes` clips k as C does for logits).
    targets: (N,) class ids, or one int for all images.
    class_ids: the classes to report per class, in this order (default: the classes in `targets`);
        images of other classes still count overall.
    labels: class names indexed by class id (e.g. `classifier.labels`), copied into the report.
    seeds: (N,) the generation seed of each image; `compare` pairs two reports by (class, seed).
    topk: the second k, clipped to the number of classes (top-5 of a 3-class classifier is top-3);
        the report keys stay "top1"/"top5" and `report["k"]` says which k each one is.

    Confidence intervals: percentile bootstrap over images with `n_boot` resamples from
    `np.random.default_rng(seed)`, at `level` (0.95). Per class, that class's images are resampled with
    replacement. Overall (micro accuracy over all images) resamples within each class with the class
    sizes fixed (stratified), so the interval reflects image-to-image variation for the classes
    evaluated, not a choice of classes. With one image per class an interval has width 0 for that
    class; small n gives wide intervals, which is the point of reporting them.
    """
    if not isinstance(scores, torch.Tensor):
        scores = torch.as_tensor(np.asarray(scores))
    scores = scores.detach().cpu()
    if scores.ndim not in (1, 2) or (scores.dtype.is_floating_point and scores.ndim != 2):
        raise ConfigError(f"scores must be float logits (N, C) or integer predictions (N,) / (N, k); "
                          f"got {scores.dtype} {tuple(scores.shape)}")
    n = scores.shape[0]
    if n == 0:
        raise ConfigError("accuracy needs at least one image; got 0")
    if n_boot < 1:
        raise ConfigError(f"n_boot={n_boot} is not accepted: an integer >= 1")
    if not 0 < level < 1:
        raise ConfigError(f"level={level} is not accepted: a number in (0, 1)")
    t = _as_targets(targets, n)
    if scores.dtype.is_floating_point:
        if num_classes is not None and num_classes != scores.shape[1]:
            raise ConfigError(f"num_classes={num_classes} but the logits have {scores.shape[1]} columns")
        num_classes = scores.shape[1]
        available = num_classes
    else:
        available = 1 if scores.ndim == 1 else scores.shape[1]
    k2 = min(topk, num_classes) if num_classes is not None else topk
    if int(t.min()) < 0 or (num_classes is not None and int(t.max()) >= num_classes):
        raise ConfigError(f"targets must be class ids in 0..{(num_classes or 0) - 1}; got {t.min()}..{t.max()}")
    ks = {"top1": 1}
    if k2 <= available:  # else predictions too short for top-k: only top-1, stated by the missing key
        ks["top5"] = k2
    correct = np.stack([topk_correct(scores, t, k) for k in ks.values()], axis=1)  # (N, len(ks))

    t_np = t.numpy()
    present = sorted(set(t_np.tolist()))
    class_ids = present if class_ids is None else [int(c) for c in class_ids]
    if seeds is not None:
        seeds = [int(s) for s in seeds]
        if len(seeds) != n:
            raise ConfigError(f"got {n} images but {len(seeds)} seeds")

    rng = np.random.default_rng(seed)
    overall_boot = np.zeros((n_boot, len(ks)))
    per_class = []
    boot_by_class = {}
    for c in present:
        vals = correct[t_np == c].astype(np.float64)
        sums = _bootstrap_sums(vals, n_boot, rng)
        overall_boot += sums
        boot_by_class[c] = sums / len(vals)
    for c in class_ids:
        mask = t_np == c
        entry = {"class_id": int(c), "label": _label(labels, c), "n": int(mask.sum())}
        for j, name in enumerate(ks):
            if mask.any():
                entry[name] = _stat(correct[mask, j].mean(), boot_by_class[c][:, j], level)
            else:
                entry[name] = {"acc": None, "lo": None, "hi": None}
        per_class.append(entry)
    overall_boot /= n
    overall = {"n": n}
    for j, name in enumerate(ks):
        overall[name] = _stat(correct[:, j].mean(), overall_boot[:, j], level)

    return {
        "n_images": n,
        "num_classes": num_classes,
        "k": ks,
        "overall": overall,
        "per_class": per_class,
        "ci": {"method": CI_METHOD, "level": level, "n_boot": n_boot, "seed": seed},
        # per-image outcomes, kept so that `compare` can pair two reports
        "images": {"target": t_np.tolist(), "seed": seeds,
                   **{name: correct[:, j].tolist() for j, name in enumerate(ks)}},
    }


def _label(labels, c: int) -> str | None:
    if labels is None:
        return None
    try:
        return str(labels[c])
    except (IndexError, KeyError):
        return None


def _keys(report: dict) -> list[tuple[int, int]] | None:
    seeds = report["images"].get("seed")
    if seeds is None:
        return None
    return list(zip(report["images"]["target"], seeds))


def compare(report_a: dict, report_b: dict, *, n_boot: int | None = None, seed: int | None = None,
            level: float | None = None) -> dict:
    """Accuracy of `report_a` minus `report_b` (e.g. token prompt minus plain prompt), overall and per
    class, with a bootstrap confidence interval.

    When both reports carry seeds and were made on the same set of (class, seed) pairs, the interval is
    a paired bootstrap (pairs resampled within each class): the two prompts share starting latents, so
    the difference is far less noisy than either accuracy. Otherwise the two are resampled
    independently (still stratified by class) and `paired` is False. n_boot/seed/level default to
    those of `report_a`.
    """
    ci = report_a["ci"]
    n_boot = ci["n_boot"] if n_boot is None else n_boot
    seed = ci["seed"] if seed is None else seed
    level = ci["level"] if level is None else level
    metrics = [m for m in ("top1", "top5") if m in report_a["k"] and m in report_b["k"]
               and report_a["k"][m] == report_b["k"][m]]
    ka, kb = _keys(report_a), _keys(report_b)
    paired = ka is not None and kb is not None and len(set(ka)) == len(ka) and set(ka) == set(kb)
    ta = np.asarray(report_a["images"]["target"])
    tb = np.asarray(report_b["images"]["target"])
    va = np.stack([np.asarray(report_a["images"][m], dtype=np.float64) for m in metrics], 1)
    vb = np.stack([np.asarray(report_b["images"][m], dtype=np.float64) for m in metrics], 1)
    if paired:
        order = {key: i for i, key in enumerate(kb)}
        vb = vb[[order[key] for key in ka]]
        tb = ta
    classes = sorted(set(ta.tolist()) | set(tb.tolist()))
    rng = np.random.default_rng(seed)
    boot_a = np.zeros((n_boot, len(metrics)))
    boot_b = np.zeros((n_boot, len(metrics)))
    per_class = []
    for c in classes:
        ma, mb = ta == c, tb == c
        entry = {"class_id": int(c), "n_a": int(ma.sum()), "n_b": int(mb.sum())}
        if ma.any() and mb.any():
            if paired:
                sums = _bootstrap_sums(np.concatenate([va[ma], vb[mb]], 1), n_boot, rng)
                sa, sb = sums[:, :len(metrics)], sums[:, len(metrics):]
            else:
                sa, sb = _bootstrap_sums(va[ma], n_boot, rng), _bootstrap_sums(vb[mb], n_boot, rng)
            diff = sa / ma.sum() - sb / mb.sum()
            for j, m in enumerate(metrics):
                lo, hi = _percentile_ci(diff[:, j], level)
                entry[m] = {"diff": float(va[ma, j].mean() - vb[mb, j].mean()), "lo": lo, "hi": hi}
            boot_a += sa
            boot_b += sb
        per_class.append(entry)
    # Overall over the classes present in both, so a class missing on one side cannot fake a difference.
    both = [c for c in classes if (ta == c).any() and (tb == c).any()]
    ma, mb = np.isin(ta, both), np.isin(tb, both)
    overall = {"n_a": int(ma.sum()), "n_b": int(mb.sum())}
    if both:
        diff = boot_a / ma.sum() - boot_b / mb.sum()
        for j, m in enumerate(metrics):
            lo, hi = _percentile_ci(diff[:, j], level)
            overall[m] = {"diff": float(va[ma, j].mean() - vb[mb, j].mean()), "lo": lo, "hi": hi,
                          "a": float(va[ma, j].mean()), "b": float(vb[mb, j].mean())}
    return {
        "paired": paired,
        "overall": overall,
        "per_class": per_class,
        "ci": {"method": PAIRED_METHOD if paired else UNPAIRED_METHOD, "level": level, "n_boot": n_boot,
               "seed": seed},
    }


def strip_images(report: dict) -> dict:
    """A copy of a report without the per-image outcomes (for compact tables and logs)."""
    return {k: v for k, v in report.items() if k != "images"}
