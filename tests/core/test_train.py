"""Training on a tiny real pipeline with a real (timm) classifier through the registry."""

import pytest
import torch

from dct.config import load_preset
from dct.errors import TrainingError
from dct.pipeline import make_scheduler
from dct.token import ClassTokens
from dct.train import dct_loss, train_token

TEMPLATES = ("a {}", "a photo of {}")


def quick(preset="fast", **kw):
    base = dict(steps=4, depth=2, max_epochs=3, images_per_update=2, rollout_batch=2, guidance=3.0)
    base.update(kw)
    return load_preset(preset, **base)


def test_other_rows_bit_identical_after_training(parts, classifier):
    table_before = parts.text_encoder.get_input_embeddings().weight.detach().clone()
    params_before = {k: v.detach().clone() for k, v in parts.text_encoder.state_dict().items()}
    cfg = quick(optimizer="adamw", weight_decay=0.1, lr=0.1)  # weight decay is what made rows drift
    result = train_token(parts, classifier, 3, "three", cfg, templates=TEMPLATES, progress=False)
    table_after = parts.text_encoder.get_input_embeddings().weight.detach()
    n = table_before.shape[0]
    assert torch.equal(table_after[:n], table_before)
    for k, v in parts.text_encoder.state_dict().items():
        if k in params_before and v.shape == params_before[k].shape:
            assert torch.equal(v, params_before[k]), k
    # ...while the token itself did move
    init = table_before[parts.tokenizer.convert_tokens_to_ids("a</w>")]
    assert result.history[0]["grad_norm"] > 0
    assert len(result.history) == 3 and result.stop_reason == "max_epochs"
    assert not torch.equal(result.vector, init) or result.best_epoch == 0


def test_training_lowers_the_loss(parts, classifier):
    cfg = quick(lr=0.3, max_epochs=6, reseed_each_epoch=True, images_per_update=2, rollout_batch=2)
    result = train_token(parts, classifier, 5, "five", cfg, templates=TEMPLATES, progress=False)
    losses = [r["loss"] for r in result.history]
    assert min(losses[1:]) < losses[0]  # same latents every epoch: only the token changed


def test_paper_preset_runs_with_its_depth(parts, classifier):
    cfg = quick("paper", max_epochs=1, precision="fp32", images_per_update=2, rollout_batch=1)
    result = train_token(parts, classifier, 1, "one", cfg, templates=TEMPLATES, progress=False)
    assert result.n_calls == 5 and result.n_grad_calls == 2  # PNDM: 4 steps = 5 calls, last two with grad
    assert result.n_images == 2


class Confident(torch.nn.Module):
    """The classifier once training has nearly converged: the target wins by a wide margin, so the loss
    and every gradient behind it are small (where fp16 underflow bites in practice)."""

    def __init__(self, classifier, target, margin):
        super().__init__()
        self.classifier, self.target, self.margin = classifier, target, margin

    def forward(self, images):
        logits = self.classifier(images)
        return logits + self.margin * torch.nn.functional.one_hot(torch.tensor(self.target), logits.shape[1])


def test_fp16_loss_scaling_avoids_underflow(tiny_sd_dir, classifier):
    """Through DDIM's last step (almost the identity) a small loss's gradient underflows in plain fp16."""
    from dct.pipeline import load_parts

    parts = load_parts(str(tiny_sd_dir), dtype="fp16")
    tokens = ClassTokens(parts.tokenizer, parts.text_encoder, ["newclas"], "a")
    latents = torch.randn(1, *parts.latent_shape, generator=torch.Generator().manual_seed(0))
    classifier = Confident(classifier, 3, margin=8.0)
    grads = {}
    for precision, scale in (("fp16-noscale", 1.0), ("fp16", 2.0**16)):
        cfg = quick(precision=precision, depth=1, images_per_update=1, rollout_batch=1)
        tokens.vectors.grad = None
        loss, _, _ = dct_loss(parts, tokens, classifier, make_scheduler("ddim", parts.scheduler), cfg,
                              ["a newclas three"], latents, torch.tensor([3]))
        (loss * scale).backward()
        grads[precision] = tokens.vectors.grad / scale
    assert grads["fp16-noscale"].abs().max() == 0
    assert grads["fp16"].abs().max() > 0 and torch.isfinite(grads["fp16"]).all()
    # training refuses to go on with a zero gradient instead of silently training through it
    with pytest.raises(TrainingError, match="exactly zero.*loss scaling"):
        train_token(parts, classifier, 3, "three", quick(precision="fp16-noscale", depth=1, max_epochs=1,
                                                         images_per_update=1, rollout_batch=1),
                    templates=TEMPLATES, tokens=tokens, progress=False)
    tokens.remove()


def test_nan_loss_is_a_clear_error(parts):
    class NaNClassifier(torch.nn.Module):
        def forward(self, images):
            return images.mean((2, 3)).repeat(1, 4)[:, :10] * float("nan")

    with pytest.raises(TrainingError, match="loss is nan at epoch 0"):
        train_token(parts, NaNClassifier(), 0, "zero", quick(max_epochs=1), templates=TEMPLATES, progress=False)


def test_early_stop_on_threshold(parts):
    class Always(torch.nn.Module):  # a classifier that always says class 2 (and still passes a gradient)
        def forward(self, images):
            logits = torch.zeros(images.shape[0], 10) + images.mean((1, 2, 3))[:, None] * 1e-2
            logits[:, 2] += 5.0
            return logits

    cfg = quick(max_epochs=5, stop_accuracy=0.7, stop_window=1)
    result = train_token(parts, Always(), 2, "two", cfg, templates=TEMPLATES, progress=False)
    assert result.stop_reason == "threshold" and result.images_to_threshold == 2
    # stop_window: the mean over the last 3 epochs must pass, so a perfect classifier stops after 3
    result = train_token(parts, Always(), 2, "two", cfg.replace(stop_window=3), templates=TEMPLATES, progress=False)
    assert result.stop_reason == "threshold" and result.images_to_threshold == 6 and len(result.history) == 3


def test_classes_trained_together_match_classes_trained_alone(parts, classifier):
    """One rollout serves several classes (a different token per sample); each class still gets the token
    it would get alone, and a class that stops early leaves the batch with its row frozen."""
    from dct.train import train_tokens

    cfg = quick(lr=0.2, max_epochs=3, images_per_update=2, rollout_batch=1)
    alone = {c: train_token(parts, classifier, c, name, cfg.replace(placeholder=f"solo{c}"), templates=TEMPLATES,
                            progress=False) for c, name in ((1, "one"), (3, "three"))}
    done = []
    together = train_tokens(parts, classifier, [1, 3], ["one", "three"], cfg, templates=TEMPLATES,
                            on_class_done=done.append, progress=False)
    assert [r.placeholder for r in together] == ["newclas1", "newclas3"]
    for r in together:
        torch.testing.assert_close(r.vector, alone[r.target].vector, rtol=1e-4, atol=1e-6)
        assert [h["loss"] for h in r.history] == pytest.approx([h["loss"] for h in alone[r.target].history],
                                                               rel=1e-4)
    assert sorted(r.target for r in done) == [1, 3]
