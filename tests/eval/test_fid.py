"""FID/KID through torch-fidelity in a classifier's feature space (no Inception download anywhere)."""

import pytest
import torch

from dct.errors import ConfigError
from dct.eval.fid import classifier_hash, fid_kid, register_classifier
from dct.generate import save_images

from .conftest import TinyClassifier


def image_set(n, seed, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 1, 1, generator=g) * 0.6 + 0.1  # per-image colour, like the world's digits
    return (base + 0.15 * torch.rand(n, 3, 16, 16, generator=g) + shift).clamp(0, 1)


def test_set_against_itself_is_zero_and_shift_is_positive(tiny_judge):
    a = image_set(30, 0)
    same = fid_kid(a, a, feature_extractor=tiny_judge)
    assert abs(same["fid"]) < 1e-6
    # unbiased KID of a set with itself is slightly negative (the diagonal is left out within a set only)
    assert same["kid_mean"] <= 0
    other = fid_kid(a, image_set(30, 1), feature_extractor=tiny_judge)
    shifted = fid_kid(a, image_set(30, 1, shift=0.25), feature_extractor=tiny_judge)
    assert shifted["fid"] > 10 * max(other["fid"], 1e-6) and shifted["fid"] > 1e-3
    assert shifted["kid_mean"] > other["kid_mean"]
    assert shifted["n_generated"] == 30 and shifted["n_reference"] == 30
    assert shifted["feature_space"].startswith("dct-test_tiny-") and shifted["feature_dim"] == 11
    assert shifted["warnings"] == []


def test_folder_inputs_counts_and_kid_subset(tiny_judge, tmp_path):
    gen, ref = image_set(12, 0), image_set(20, 1, shift=0.2)
    save_images(ref, tmp_path / "ref", [f"r{i}" for i in range(20)])
    (tmp_path / "ref" / "notes.txt").write_text("not an image")
    from_tensor = fid_kid(gen, ref, feature_extractor=tiny_judge)
    from_folder = fid_kid(gen, tmp_path / "ref", feature_extractor=tiny_judge)
    assert from_folder["n_reference"] == 20 and from_folder["n_generated"] == 12
    assert from_folder["kid_subset_size"] == 12  # clipped to the smaller set
    # PNG round-trip is 8-bit, as is the tensor path (both go through uint8)
    assert from_folder["fid"] == pytest.approx(from_tensor["fid"], rel=1e-6)
    small = fid_kid(gen, ref, feature_extractor=tiny_judge, kid_subset_size=5, kid_subsets=7)
    assert small["kid_subset_size"] == 5 and small["kid_subsets"] == 7
    with pytest.raises(ConfigError, match="kid_subset_size=13"):
        fid_kid(gen, ref, feature_extractor=tiny_judge, kid_subset_size=13)
    no_kid = fid_kid(gen, ref, feature_extractor=tiny_judge, kid=False)
    assert no_kid["kid_mean"] is None and no_kid["fid"] == pytest.approx(from_tensor["fid"])


def test_few_images_warn_about_rank_deficient_covariance(tiny_judge):
    r = fid_kid(image_set(5, 0), image_set(6, 1), feature_extractor=tiny_judge)
    assert r["warnings"] and "feature dimensions" in r["warnings"][0]


def test_extractor_name_follows_the_weights():
    a, b = TinyClassifier(seed=0), TinyClassifier(seed=0)
    assert classifier_hash(a) == classifier_hash(b)
    assert register_classifier(a) == register_classifier(b)
    c = TinyClassifier(seed=1)
    assert register_classifier(c) != register_classifier(a)
    with torch.no_grad():
        b.fc.bias.add_(1e-3)
    assert register_classifier(b) != register_classifier(a)


def test_cache_dir_caches_reference_under_content_hash(tiny_judge, tmp_path):
    gen, ref = image_set(8, 0), image_set(8, 1)
    first = fid_kid(gen, ref, feature_extractor=tiny_judge, cache_dir=tmp_path / "cache")
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert files and all(f.startswith("ref-") for f in files)
    again = fid_kid(gen, ref, feature_extractor=tiny_judge, cache_dir=tmp_path / "cache")
    assert again["fid"] == first["fid"]
    # another classifier must not be served the first one's cached reference features
    other = fid_kid(gen, ref, feature_extractor=TinyClassifier(seed=2), cache_dir=tmp_path / "cache")
    assert other["fid"] != first["fid"]
    assert len(list((tmp_path / "cache").iterdir())) == 2 * len(files)


def test_errors_are_clear(tiny_judge, tmp_path):
    a = image_set(4, 0)
    with pytest.raises(ConfigError, match="at least 2 generated"):
        fid_kid(a[:1], a, feature_extractor=tiny_judge)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="at least 2 reference images; got 0"):
        fid_kid(a, tmp_path / "empty", feature_extractor=tiny_judge)
    with pytest.raises(ConfigError, match="does not exist"):
        fid_kid(a, tmp_path / "missing", feature_extractor=tiny_judge)
    with pytest.raises(ConfigError, match="local weights file"):
        fid_kid(a, a, feature_extractor="inception")
    with pytest.raises(ConfigError, match="does not exist"):
        fid_kid(a, a, feature_extractor="inception", inception_weights=tmp_path / "nope.pth")
    with pytest.raises(ConfigError, match="unknown feature extractor"):
        fid_kid(a, a, feature_extractor=42)
    with pytest.raises(ConfigError, match="no features"):
        fid_kid(a, a, feature_extractor=torch.nn.Linear(3, 3))
    with pytest.raises(ConfigError, match=r"\(N, 3, H, W\)"):
        fid_kid(torch.rand(4, 16, 16), a, feature_extractor=tiny_judge)
    save_images(image_set(2, 0), tmp_path / "mixed", ["a", "b"])
    save_images(torch.rand(1, 3, 8, 8), tmp_path / "mixed", ["c"])
    with pytest.raises(ConfigError, match="mixes image sizes"):
        fid_kid(a, tmp_path / "mixed", feature_extractor=tiny_judge)


def test_unknown_classifier_spec_is_a_config_error():
    pytest.importorskip("dct.classifiers", reason="classifier registry not written yet")
    from dct import classifiers

    if not hasattr(classifiers, "load_classifier"):
        pytest.skip("dct.classifiers has no load_classifier yet")
    with pytest.raises(ConfigError, match="unknown feature extractor"):
        fid_kid(image_set(4, 0), image_set(4, 1), feature_extractor="nosuchkind:thing")


@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory):
    """A random-weight torch-fidelity Inception-v3 state dict (the real one cannot be downloaded here)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    original = FeatureExtractorInceptionV3.load_state_dict
    FeatureExtractorInceptionV3.load_state_dict = lambda self, sd, *a, **k: None
    try:
        import torch_fidelity.feature_extractor_inceptionv3 as fe

        real_load = fe.torch.load
        fe.torch.load = lambda *a, **k: {}
        try:
            torch.manual_seed(0)
            model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path="x")
        finally:
            fe.torch.load = real_load
    finally:
        FeatureExtractorInceptionV3.load_state_dict = original
    path = tmp_path_factory.mktemp("inception") / "inception.pth"
    torch.save(model.state_dict(), path)
    return path


def test_inception_with_local_weights(random_inception_weights):
    a = image_set(6, 0)
    r = fid_kid(a, a, feature_extractor="inception", inception_weights=random_inception_weights, kid=False)
    assert r["feature_space"] == "inception-v3-compat" and r["feature_dim"] == 2048
    assert abs(r["fid"]) < 1e-2 and r["warnings"]  # 6 images in 2048 dimensions


def test_pickled_code_in_weights_is_refused(tmp_path):
    from dct.errors import UnsafeWeightsError

    path = tmp_path / "evil.pth"
    torch.save({"model": TinyClassifier()}, path)  # a pickled module: unpickling would import code
    with pytest.raises(UnsafeWeightsError, match="trust"):
        fid_kid(image_set(4, 0), image_set(4, 1), feature_extractor="inception", inception_weights=path)


def test_hash_is_reused_until_a_weight_changes_in_place():
    clf = TinyClassifier(seed=4)
    first = classifier_hash(clf)
    assert classifier_hash(clf) == first
    with torch.no_grad():
        clf.conv.weight[0, 0, 0, 0] += 1.0
    assert classifier_hash(clf) != first


def test_inception_weights_with_a_live_payload_are_never_unpickled(tmp_path):
    from dct.errors import UnsafeWeightsError

    from ..payloads import save_with_payload

    sentinel = tmp_path / "ran"
    path = save_with_payload({"w": torch.zeros(2)}, tmp_path / "evil.pth", sentinel)
    with pytest.raises(UnsafeWeightsError) as err:
        fid_kid(image_set(4, 0), image_set(4, 1), feature_extractor="inception", inception_weights=path)
    assert not sentinel.exists(), "the payload ran before the refusal"
    assert str(path) in str(err.value)
    # the control: trusting the file hands it to torch-fidelity, which unpickles it (and the payload runs)
    with pytest.raises(Exception):
        fid_kid(image_set(4, 0), image_set(4, 1), feature_extractor="inception", inception_weights=path,
                trust_weights=True, kid=False)
    assert sentinel.exists()


@pytest.mark.parametrize("family", ["file", "timm"])
def test_classifier_spec_extractor_with_a_live_payload_is_refused(tmp_path, family):
    from dct.errors import UnsafeWeightsError

    from ..payloads import Holder, save_with_payload

    sentinel = tmp_path / "ran"
    if family == "file":
        path = tmp_path / "model.pt"
        torch.save(torch.nn.Sequential(TinyClassifier(), Holder(sentinel)), path)
        spec = f"file:{path}"
    else:
        import timm

        state = timm.create_model("test_resnet", num_classes=3, pretrained=False).state_dict()
        path = save_with_payload(state, tmp_path / "ckpt.pth", sentinel)
        spec = f"timm:test_resnet@{path}"
    with pytest.raises(UnsafeWeightsError) as err:
        fid_kid(image_set(4, 0), image_set(4, 1), feature_extractor=spec)
    assert not sentinel.exists(), "the payload ran before the refusal"
    assert str(path) in str(err.value)


def _judge_features(classifier, images):
    # what the extractor sees: the images rounded to uint8, back to [0, 1]
    u8 = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    with torch.no_grad():
        return classifier.features(u8.float() / 255).double().numpy()


def test_fid_and_kid_equal_the_closed_forms_on_the_same_features(tiny_judge):
    import numpy as np

    a, b = image_set(40, 0), image_set(40, 1, shift=0.1)
    fa, fb = _judge_features(tiny_judge, a), _judge_features(tiny_judge, b)
    mu_a, mu_b = fa.mean(0), fb.mean(0)
    cov_a, cov_b = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    # Tr sqrt(cov_a cov_b) = Tr sqrt(A^1/2 cov_b A^1/2), a symmetric PSD matrix: eigh, not the product's eigvals
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    frechet = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.sqrt(np.clip(inner, 0, None)).sum()

    # KID with one subset of all the images is the unbiased MMD^2 of the whole sets (cubic kernel, gamma 1/d)
    d = fa.shape[1]
    kernel = lambda x, y: (x @ y.T / d + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = kernel(fa, fa), kernel(fb, fb), kernel(fa, fb)
    m = len(fa)
    mmd2 = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.mean()

    r = fid_kid(a, b, feature_extractor=tiny_judge, kid_subset_size=40, kid_subsets=1)
    assert frechet > 1e-2  # the sets differ: a wrong formula cannot hide behind a zero
    assert r["fid"] == pytest.approx(frechet, rel=1e-6)
    assert r["kid_mean"] == pytest.approx(mmd2, rel=1e-6)
