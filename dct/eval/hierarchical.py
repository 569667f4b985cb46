"""Accuracy over classes x training runs x images, with a hierarchical bootstrap CI.

A DCT result has three sources of variance: which classes were evaluated, which token a training run
happened to produce (a different training seed can give a different token), and which images the
evaluation seeds drew. A CI over images alone (dct.eval.accuracy) covers only the last. Here the
outcomes are an array (C classes, R training runs, S evaluation seeds) of 0/1 and each bootstrap draw
resamples all three levels in turn: C classes with replacement, then R runs within each drawn class,
then S images within each drawn run. The interval therefore covers another draw of classes from the
same population, another R training runs and another S seeds.

Paired contrasts (token minus plain prompt, depth full minus depth 1) apply ONE set of drawn indices to
both arrays: the two sides share classes, training seeds (run r of both was trained with the same seed)
and evaluation seeds (image s of both started from the same latent), so what they share cancels. A side
without training runs (the plain prompt: R = 1) is broadcast over the other side's runs.

With R = 1 the run level has nothing to resample: such an interval does not cover training variance,
and `describe` says so.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError

METHOD = ("hierarchical percentile bootstrap: classes resampled with replacement, then training runs "
          "within each class, then evaluation images within each run")
PAIRED_METHOD = METHOD + "; the same draws applied to both sides (shared classes, training seeds, eval seeds)"
_MAX_DRAWS = 2_000_000  # index entries held at once (n_boot chunk x C x R x S)


def as_outcomes(values) -> np.ndarray:
    """A (C, R, S) float array of 0/1 outcomes; (C, S) is taken as R = 1."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 2:
        x = x[:, None, :]
    if x.ndim != 3 or min(x.shape) < 1:
        raise ConfigError(f"outcomes must be (classes, runs, images) with at least one of each; got {x.shape}")
    return x


def _means(arrays: list[np.ndarray], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, len(arrays)) means of each array under the same hierarchical draws."""
    c, r, s = (max(a.shape[i] for a in arrays) for i in range(3))
    out = np.empty((n_boot, len(arrays)))
    chunk = max(1, _MAX_DRAWS // (c * r * s))
    for start in range(0, n_boot, chunk):
        b = min(n_boot, start + chunk) - start
        ci = rng.integers(0, c, size=(b, c))
        ri = rng.integers(0, r, size=(b, c, r))
        si = rng.integers(0, s, size=(b, c, r, s))
        for k, a in enumerate(arrays):
            # a side with one run (the plain prompt) is broadcast over the other's runs
            rk = ri if a.shape[1] == r else np.zeros_like(ri)
            picked = a[ci[:, :, None, None], rk[:, :, :, None], si]
            out[start:start + b, k] = picked.mean(axis=(1, 2, 3))
    return out


def _check_level(level: float, n_boot: int) -> None:
    if not 0 < level < 1:
        raise ConfigError(f"level={level} is not accepted: a number in (0, 1)")
    if n_boot < 1:
        raise ConfigError(f"n_boot={n_boot} is not accepted: an integer >= 1")


def hierarchical_ci(outcomes, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Mean accuracy of a (C, R, S) outcome array and its hierarchical percentile interval."""
    _check_level(level, n_boot)
    x = as_outcomes(outcomes)
    boot = _means([x], n_boot, np.random.default_rng(seed))[:, 0]
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return {"acc": float(x.mean()), "lo": float(lo), "hi": float(hi), **describe(x), "level": level,
            "n_boot": n_boot, "method": METHOD}


def paired_difference(a, b, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """mean(a) - mean(b) with a paired hierarchical interval; b may have R = 1 (broadcast over a's runs)."""
    _check_level(level, n_boot)
    xa, xb = as_outcomes(a), as_outcomes(b)
    if xa.shape[0] != xb.shape[0] or xa.shape[2] != xb.shape[2] or xb.shape[1] not in (1, xa.shape[1]):
        raise ConfigError(f"a paired contrast needs the same classes, runs and images on both sides; got "
                          f"{xa.shape} and {xb.shape}")
    boot = _means([xa, xb], n_boot, np.random.default_rng(seed))
    diff = boot[:, 0] - boot[:, 1]
    lo, hi = np.quantile(diff, [(1 - level) / 2, (1 + level) / 2])
    return {"diff": float(xa.mean() - xb.mean()), "lo": float(lo), "hi": float(hi), "a": float(xa.mean()),
            "b": float(xb.mean()), **describe(xa), "level": level, "n_boot": n_boot, "method": PAIRED_METHOD}


def describe(x: np.ndarray) -> dict:
    c, r, s = x.shape
    covers = "classes, training runs and images" if r > 1 else "classes and images (one training run: " \
                                                                "training variance NOT covered)"
    return {"n_classes": c, "n_runs": r, "n_images_per_run": s, "n": c * r * s, "covers": covers}
