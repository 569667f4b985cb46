"""Saving and loading tokens, loading pipelines by folder and by hub id, and clear errors."""

import json
import shutil

import pytest
import torch

from dct.errors import ClassifierSpecError, ClassNotFoundError, ModelNotFoundError
from dct.pipeline import load_parts
from dct.token import ClassTokens, load_tokens, save_tokens


def test_token_loads_with_diffusers_and_changes_the_image(tiny_sd_dir, tmp_path):
    from diffusers import StableDiffusionPipeline

    vector = torch.randn(64, generator=torch.Generator().manual_seed(1)) * 3
    path = save_tokens(tmp_path / "tok.safetensors", {"newclas": vector}, {"class_index": 3})
    loaded, meta = load_tokens(path)
    assert torch.equal(loaded["newclas"], vector) and meta["class_index"] == 3

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_sd_dir), safety_checker=None,
                                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)

    def render(prompt):
        return pipe(prompt, num_inference_steps=3, guidance_scale=3.0, output_type="np",
                    generator=torch.Generator().manual_seed(0)).images

    before = render("a newclas seven")
    pipe.load_textual_inversion(str(path), token="newclas")
    tid = pipe.tokenizer.convert_tokens_to_ids("newclas")
    torch.testing.assert_close(pipe.text_encoder.get_input_embeddings().weight[tid], vector)
    after = render("a newclas seven")
    assert abs(after - before).max() > 1e-3


def test_spliced_token_equals_a_loaded_row(parts):
    """What training sees (the spliced vector) is what diffusers' loaded row gives at generation."""
    vector = torch.randn(64, generator=torch.Generator().manual_seed(2))
    tokens = ClassTokens(parts.tokenizer, parts.text_encoder, ["newclas"], init_vectors=vector[None])
    spliced = tokens.encode(["a newclas seven"]).detach()
    tokens.remove()
    tid = parts.tokenizer.convert_tokens_to_ids("newclas")
    with torch.no_grad():
        parts.text_encoder.get_input_embeddings().weight[tid] = vector
    from dct.token import encode_prompts

    torch.testing.assert_close(encode_prompts(parts.tokenizer, parts.text_encoder, ["a newclas seven"]), spliced)


def test_hub_id_and_local_folder_take_the_same_path(tiny_sd_dir, tmp_path, monkeypatch):
    """A hub id resolved from the local hub cache (offline) loads exactly like the folder itself."""
    snap = tmp_path / "hub" / "models--someone--tiny-sd" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_sd_dir, snap)
    (tmp_path / "hub" / "models--someone--tiny-sd" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--tiny-sd" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    by_id = load_parts("someone/tiny-sd")
    by_dir = load_parts(str(tiny_sd_dir))
    for a, b in zip(by_id.unet.state_dict().values(), by_dir.unet.state_dict().values()):
        assert torch.equal(a, b)
    assert by_id.source == "someone/tiny-sd"


def test_missing_folder_and_unknown_id_fail_clearly(tmp_path, monkeypatch):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_parts(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="no model_index.json"):
        load_parts(str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="could not load model 'nobody/no-such-model'"):
        load_parts("nobody/no-such-model")


def test_bad_classifier_and_class_fail_clearly(classifier):
    from dct.classifiers import load_classifier, resolve_class

    with pytest.raises(ClassifierSpecError, match="nosuch"):
        load_classifier("nosuch:thing")
    with pytest.raises(ClassNotFoundError, match="12"):
        resolve_class(classifier, 12)
    with pytest.raises(ClassNotFoundError, match="elephant"):
        resolve_class(classifier, "elephant")
    assert resolve_class(classifier, "seven") == 7
