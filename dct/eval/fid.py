"""FID and KID of generated images against a folder of real images, with torch-fidelity.

No Inception weights can be downloaded here, so the default feature space is the penultimate layer of
a project classifier (the tiny world's judge), registered as a torch-fidelity feature extractor. Such
numbers are comparable only within one feature space, which is why every result names it (with a hash
of the classifier's weights) next to the sample counts. Real FID (Inception-v3, as in the paper) runs
when the user gives a local weights file.

torch-fidelity keys its on-disk cache by the extractor's NAME and the input's cache name, not by
content: the extractor name therefore carries a content hash of the classifier, and the reference
set's cache name a content hash of its images (caching is off unless `cache_dir` is given).
"""

from __future__ import annotations

import hashlib
import re
import weakref
from pathlib import Path

import torch

from ..errors import ClassifierSpecError, ConfigError, UnsafeWeightsError

MIN_IMAGES = 2  # a covariance (FID) and an MMD between subsets (KID) need two samples at least
IMAGE_EXTENSIONS = ("png", "jpg", "jpeg")
DEFAULT_JUDGE = "world:judge"
INCEPTION = "inception-v3-compat"
FEATURE_LAYER = "features"

# name -> classifier; weak, so a registered name does not keep a classifier alive after its last use
_CLASSIFIERS: "weakref.WeakValueDictionary[str, torch.nn.Module]" = weakref.WeakValueDictionary()
_FEATURE_DIMS: dict[str, int] = {}


def _extractor_base():
    from torch_fidelity import FeatureExtractorBase

    return FeatureExtractorBase


def _make_extractor_class():
    base = _extractor_base()

    class ClassifierFeatureExtractor(base):
        """torch-fidelity feature extractor over `Classifier.features` (uint8 (B,3,H,W) in, (B,F) out).

        The classifier is held outside the module tree (in a list) so that torch-fidelity's
        `.eval()`, `.requires_grad_(False)` and `.cuda()` on the extractor leave the caller's classifier
        where and as it was; batches are moved to the classifier's device instead.
        """

        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)
            if name not in _CLASSIFIERS:
                raise ConfigError(f"feature extractor {name!r} has no classifier bound (register it with "
                                  "dct.eval.fid.register_classifier)")
            self._held = [_CLASSIFIERS[name]]

        @staticmethod
        def get_provided_features_list():
            return (FEATURE_LAYER,)

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return FEATURE_LAYER

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return None

        def forward(self, x):
            if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
                raise ConfigError(f"expected uint8 images (B, 3, H, W); got {x.dtype} {tuple(x.shape)}")
            clf = self._held[0]
            was_training = clf.training
            clf.eval()
            try:
                with torch.no_grad():
                    f = clf.features(x.to(_device_of(clf)).float() / 255.0)
            finally:
                clf.train(was_training)
            _FEATURE_DIMS[self.name] = int(f[0].numel())
            # float64 so that a set against itself gives FID ~1e-10, not float32 round-off
            return (f.reshape(len(x), -1).double().cpu(),)

    return ClassifierFeatureExtractor


_EXTRACTOR_CLASS = None


def _device_of(module: torch.nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


_HASHES: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple, str]]" = weakref.WeakKeyDictionary()


def classifier_hash(classifier: torch.nn.Module) -> str:
    """sha256 (hex) of a classifier's spec, class and every state-dict tensor (name, dtype, shape, bytes).

    Hashing a large classifier reads every weight (a second or two for ViT-L), so the hash is kept per
    object and reused while no tensor was replaced or modified in place (tensor `_version` counters).
    """
    state = classifier.state_dict()
    stamp = (str(getattr(classifier, "spec", "")),
             tuple((k, t.data_ptr(), t._version, t.dtype, tuple(t.shape)) for k, t in state.items()))
    cached = _HASHES.get(classifier)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    digest = _hash_state(classifier, state)
    _HASHES[classifier] = (stamp, digest)
    return digest


def _hash_state(classifier: torch.nn.Module, state: dict) -> str:
    h = hashlib.sha256()
    h.update(str(getattr(classifier, "spec", "")).encode())
    h.update(type(classifier).__qualname__.encode())
    for name, t in sorted(state.items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def register_classifier(classifier: torch.nn.Module) -> str:
    """Register `classifier.features` as a torch-fidelity feature extractor; returns its name.

    The name is `dct-<spec>-<16 hex of the content hash>`: the same weights give the same name (and
    reuse one registration), different weights a different name, so torch-fidelity's name-keyed cache
    cannot serve features of another classifier.
    """
    global _EXTRACTOR_CLASS
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if not callable(getattr(classifier, "features", None)):
        raise ConfigError(f"{type(classifier).__name__} has no features(images) method: the FID feature "
                          "extractor needs a dct classifier (penultimate features)")
    spec = str(getattr(classifier, "spec", "") or type(classifier).__name__)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", spec).strip("_")[:48] or "classifier"
    name = f"dct-{slug}-{classifier_hash(classifier)[:16]}"
    if _EXTRACTOR_CLASS is None:
        _EXTRACTOR_CLASS = _make_extractor_class()
    _CLASSIFIERS[name] = classifier
    if name not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(name, _EXTRACTOR_CLASS)
    return name


# ------------------------------------------------------------------------------------------- inputs
class _UInt8Images(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS)


def _prepare(images, what: str):
    """(torch Dataset of uint8 (3,H,W), count, content-hash function) for a tensor or an image folder."""
    if isinstance(images, (str, Path)):
        from PIL import Image
        from torch_fidelity.datasets import ImagesPathDataset

        folder = Path(images).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"{what} folder {str(folder)!r} does not exist or is not a folder")
        files = _image_files(folder)
        sizes = set()
        for f in files:
            with Image.open(f) as im:
                sizes.add(im.size)
        if len(sizes) > 1:
            raise ConfigError(f"{what} folder {str(folder)!r} mixes image sizes {sorted(sizes)[:4]}: "
                              "resize them to one size first")

        def digest() -> str:
            h = hashlib.sha256()
            for f in files:
                h.update(f.name.encode())
                h.update(f.read_bytes())
            return h.hexdigest()

        return ImagesPathDataset([str(f) for f in files]), len(files), digest
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ConfigError(f"{what} images must be (N, 3, H, W); got shape {tuple(images.shape)}")
        if images.dtype != torch.uint8:
            if not images.dtype.is_floating_point:
                raise ConfigError(f"{what} images must be float in [0, 1] or uint8; got {images.dtype}")
            images = (images.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
        images = images.cpu().contiguous()

        def digest() -> str:
            return hashlib.sha256(images.numpy().tobytes() + str(tuple(images.shape)).encode()).hexdigest()

        return _UInt8Images(images), len(images), digest
    raise ConfigError(f"{what} images must be a tensor (N, 3, H, W) or a folder of "
                      f"{'/'.join(IMAGE_EXTENSIONS)} files; got {type(images).__name__}")


def _resolve_extractor(feature_extractor, inception_weights, device, trust_weights):
    """(torch-fidelity extractor name, extra kwargs, cuda flag, a keeper of the classifier, a description)."""
    if isinstance(feature_extractor, str) and feature_extractor.lower() in ("inception", INCEPTION):
        if inception_weights is None:
            raise ConfigError(
                "Inception FID needs a local weights file (inception_weights / --inception-weights): "
                "torch-fidelity would download them, and nothing can be downloaded here. Make one with "
                "torch-fidelity's util_convert_inception_weights, or use the default feature space 'judge'")
        path = Path(inception_weights).expanduser()
        if not path.is_file():
            raise ConfigError(f"Inception weights file {str(path)!r} does not exist")
        _check_weights_safe(path, trust_weights)
        cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
        return INCEPTION, {"feature_extractor_weights_path": str(path)}, cuda, None, INCEPTION
    if isinstance(feature_extractor, str):
        spec = DEFAULT_JUDGE if feature_extractor == "judge" else feature_extractor
        try:
            from ..classifiers import load_classifier
        except ImportError as exc:
            raise ConfigError(f"feature extractor {feature_extractor!r} needs dct.classifiers, which cannot be "
                              f"imported ({exc}); pass a classifier object instead") from exc
        try:
            classifier = load_classifier(spec, device=device or "cpu")
        except ClassifierSpecError as exc:
            raise ConfigError(f"unknown feature extractor {feature_extractor!r}: use 'judge' (the tiny world's "
                              f"judge), 'inception' (with a local weights file), a classifier spec or a "
                              f"classifier object ({exc})") from exc
    elif isinstance(feature_extractor, torch.nn.Module):
        classifier = feature_extractor
    else:
        raise ConfigError(f"unknown feature extractor {feature_extractor!r}: use 'judge', 'inception', a "
                          "classifier spec or a classifier object")
    name = register_classifier(classifier)
    return name, {}, False, classifier, str(getattr(classifier, "spec", type(classifier).__name__))


def _check_weights_safe(path: Path, trust: bool) -> None:
    # torch-fidelity loads the file with weights_only=False, which runs any pickled code in it.
    if trust:
        return
    try:
        torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means it is not a plain tensor file
        raise UnsafeWeightsError(
            f"Inception weights {str(path)!r} are not loadable as plain tensors ({exc.__class__.__name__}); "
            "torch-fidelity would unpickle them with code execution. Pass trust_weights=True "
            "(--trust-weights) only if you trust the file") from exc


# ------------------------------------------------------------------------------------------- metric
def fid_kid(
    generated,
    reference,
    *,
    feature_extractor="judge",
    inception_weights: str | Path | None = None,
    kid: bool = True,
    kid_subset_size: int | None = None,
    kid_subsets: int = 100,
    batch_size: int = 64,
    device: str | None = None,
    cache_dir: str | Path | None = None,
    trust_weights: bool = False,
    rng_seed: int = 2020,
) -> dict:
    """FID (and KID) of `generated` against `reference`, with the feature space and sample counts.

    generated, reference: a tensor (N, 3, H, W), float in [0, 1] or uint8, or a folder of PNG/JPEG files
        (not searched recursively; one image size per folder).
    feature_extractor: "judge" (default: the tiny world's judge, `world:judge`), another classifier spec,
        a classifier object with `features(images) -> (B, F)`, or "inception" with `inception_weights`
        (a local torch-fidelity Inception-v3 state dict).
    kid_subset_size: default min(1000, n_generated, n_reference); larger than either count is an error.
    cache_dir: when given, the reference features are cached there under a content hash of the
        reference images and of the extractor; generated images are never cached.

    Returns {"fid", "kid_mean", "kid_std", "kid_subset_size", "kid_subsets", "n_generated",
    "n_reference", "feature_space" (torch-fidelity extractor name), "feature_extractor" (spec),
    "feature_dim", "warnings"}. FID in a low-dimensional classifier space is not comparable with
    Inception FID, and with fewer images than feature dimensions it is strongly biased upwards (the
    warning says so): compare numbers only at equal counts in one feature space.
    """
    import torch_fidelity

    gen_ds, n_gen, _ = _prepare(generated, "generated")
    ref_ds, n_ref, ref_digest = _prepare(reference, "reference")
    for n, what in ((n_gen, "generated"), (n_ref, "reference")):
        if n < MIN_IMAGES:
            raise ConfigError(f"FID/KID need at least {MIN_IMAGES} {what} images; got {n}")
    if kid:
        if kid_subset_size is None:
            kid_subset_size = min(1000, n_gen, n_ref)
        elif not MIN_IMAGES <= kid_subset_size <= min(n_gen, n_ref):
            raise ConfigError(f"kid_subset_size={kid_subset_size} is not accepted: it must be in "
                              f"{MIN_IMAGES}..min(n_generated={n_gen}, n_reference={n_ref})")
        if kid_subsets < 1:
            raise ConfigError(f"kid_subsets={kid_subsets} is not accepted: an integer >= 1")
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} is not accepted: an integer >= 1")

    name, extra, cuda, keeper, described = _resolve_extractor(feature_extractor, inception_weights, device,
                                                              trust_weights)
    # save_cpu_ram=True: no DataLoader worker processes; for a few hundred small images they cost more
    # to start than they save, and each would copy the in-memory generated set.
    kwargs = dict(input1=gen_ds, input2=ref_ds, cuda=cuda, fid=True, kid=kid, feature_extractor=name,
                  batch_size=batch_size, verbose=False, save_cpu_ram=True, rng_seed=rng_seed, cache=False,
                  **extra)
    if kid:
        kwargs.update(kid_subset_size=kid_subset_size, kid_subsets=kid_subsets)
    if cache_dir is not None:
        key = hashlib.sha256(ref_digest().encode())
        if "feature_extractor_weights_path" in extra:  # the Inception name says nothing of its weights
            key.update(Path(extra["feature_extractor_weights_path"]).read_bytes())
        kwargs.update(cache=True, cache_root=str(Path(cache_dir).expanduser()),
                      input2_cache_name=f"ref-{key.hexdigest()[:16]}")
    metrics = torch_fidelity.calculate_metrics(**kwargs)
    del keeper  # held until here so the weak registry entry stays valid during the computation

    feature_dim = 2048 if name == INCEPTION else _FEATURE_DIMS.get(name)
    warnings = []
    if feature_dim is not None and min(n_gen, n_ref) <= feature_dim:
        warnings.append(f"fewer images ({min(n_gen, n_ref)}) than feature dimensions ({feature_dim}): the "
                        "covariances are rank-deficient and FID is biased upwards; compare only at equal counts")
    out = {
        "fid": float(metrics[torch_fidelity.KEY_METRIC_FID]),
        "kid_mean": float(metrics[torch_fidelity.KEY_METRIC_KID_MEAN]) if kid else None,
        "kid_std": float(metrics[torch_fidelity.KEY_METRIC_KID_STD]) if kid else None,
        "kid_subset_size": kid_subset_size if kid else None,
        "kid_subsets": kid_subsets if kid else None,
        "n_generated": n_gen,
        "n_reference": n_ref,
        "feature_space": name,
        "feature_extractor": described,
        "feature_dim": feature_dim,
        "warnings": warnings,
    }
    return out
