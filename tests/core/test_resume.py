"""Ctrl-C in training: the best token so far is kept, the state is on disk, and --resume continues to
exactly the token an uninterrupted run gives."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from dct.config import load_preset
from dct.errors import ConfigError, TrainingInterrupted
from dct.jobs import train_to_file
from dct.token import load_tokens

QUICK = dict(steps=3, depth=2, max_epochs=5, images_per_update=2, rollout_batch=2, guidance=3.0, lr=0.3)


def _cfg(tiny_sd_dir, tiny_timm_dir, preset="fast", **kw):
    return load_preset(preset, model=str(tiny_sd_dir), classifier=f"timm:{tiny_timm_dir}", **{**QUICK, **kw})


def _interrupt_at(monkeypatch, n_steps):
    """Raise KeyboardInterrupt at the start of optimisation step number `n_steps` (0-based), as a Ctrl-C."""
    from dct.train import TokenOptimiser

    real, calls = TokenOptimiser.step, [0]

    def step(self, *a, **k):
        if calls[0] == n_steps:
            calls[0] += 1
            raise KeyboardInterrupt
        calls[0] += 1
        return real(self, *a, **k)

    monkeypatch.setattr(TokenOptimiser, "step", step)


@pytest.mark.parametrize("preset, classes", [("fast", [4]), ("paper", [4]), ("fast", [1, 3])])
def test_interrupted_then_resumed_equals_uninterrupted(tiny_sd_dir, tiny_timm_dir, tmp_path, monkeypatch,
                                                       preset, classes):
    # fp32: bit-equality is the test (fp16 on the CPU is not bitwise reproducible from run to run); paper
    # with 2 rollouts of 2 images per update still clips between them, cycles templates, keeps post-update
    kw = dict(precision="fp32") if preset == "fast" else dict(precision="fp32", images_per_update=4,
                                                                rollout_batch=2, classifier_preprocessing="model")
    cfg = _cfg(tiny_sd_dir, tiny_timm_dir, preset, **kw)
    straight, _ = train_to_file(cfg, classes, tmp_path / "straight.safetensors", progress=False)

    out = tmp_path / "t.safetensors"
    with monkeypatch.context() as m:
        _interrupt_at(m, 3)  # Ctrl-C during the 4th epoch: 3 epochs are done
        with pytest.raises(TrainingInterrupted, match=r"after 3 epoch\(s\).*best-so-far.*--resume"):
            train_to_file(cfg, classes, out, progress=False)
    assert not out.exists() and (tmp_path / "t.resume" / "state.json").is_file()
    best, side = load_tokens(tmp_path / "t.best-so-far.safetensors")
    assert side["interrupted_after_epoch"] == 2 and len(best) == len(classes)
    with pytest.raises(ConfigError, match="--resume"):  # a fresh run would throw the state away: refused
        train_to_file(cfg, classes, out, progress=False)
    with pytest.raises(ConfigError, match="another run"):  # resuming with other options: refused
        train_to_file(cfg.replace(lr=0.1), classes, out, progress=False, resume=True)

    resumed, meta = train_to_file(cfg, classes, out, progress=False, resume=True)
    a, b = load_tokens(straight)[0], load_tokens(resumed)[0]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # the same token, bit for bit
    hist = (lambda s: [h["loss"] for h in s["history"]]) if len(classes) == 1 else \
        (lambda s: [h["loss"] for t in s["tokens"].values() for h in t["history"]])
    assert hist(meta) == hist(load_tokens(straight)[1])
    assert not (tmp_path / "t.resume").exists()  # finished: the state is gone


def test_resume_restores_the_loss_scaler(tiny_sd_dir, tiny_timm_dir, tmp_path, monkeypatch):
    """fp16: the GradScaler's scale and growth tracker continue across the interruption (growth every 2
    good steps: 2^16, 2^16, 2^17, 2^17, 2^18 whether or not training stopped after epoch 2)."""
    cfg = _cfg(tiny_sd_dir, tiny_timm_dir, "paper", precision="fp16", images_per_update=2, rollout_batch=1,
               classifier_preprocessing="model", loss_scale_growth_interval=2, lr=0.01)
    out = tmp_path / "t.safetensors"
    with monkeypatch.context() as m:
        _interrupt_at(m, 3)
        with pytest.raises(TrainingInterrupted):
            train_to_file(cfg, [4], out, progress=False)
    _, meta = train_to_file(cfg, [4], out, progress=False, resume=True)
    assert [h["loss_scale"] for h in meta["history"]] == [2.0**16, 2.0**16, 2.0**17, 2.0**17, 2.0**18]


def test_resume_without_a_state_is_a_clear_error(tiny_sd_dir, tiny_timm_dir, tmp_path):
    with pytest.raises(ConfigError, match="nothing to resume"):
        train_to_file(_cfg(tiny_sd_dir, tiny_timm_dir), [4], tmp_path / "t.safetensors", resume=True)


def test_ctrl_c_in_dct_train_keeps_the_best_token_and_says_how_to_resume(tiny_sd_dir, tiny_timm_dir, tmp_path):
    """A real SIGINT to a real `dct train` process."""
    out = tmp_path / "t.safetensors"
    cmd = [sys.executable, "-c", "from cli import app; app()", "train", "--class", "4", "--model", str(tiny_sd_dir),
           "--classifier", f"timm:{tiny_timm_dir}", "--steps", "3", "--depth", "2", "--max-epochs", "400", "--images-per-update",
           "2", "--rollout-batch", "2", "--device", "cpu", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    state = tmp_path / "t.resume" / "state.json"
    deadline = time.time() + 240
    while not state.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert state.is_file(), proc.communicate()[1][-2000:]
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "best token so far is saved in" in lines[0] and "--resume" in lines[0]
    assert (tmp_path / "t.best-so-far.safetensors").is_file()
    epochs = json.loads(state.read_text())["epoch"]
    assert epochs >= 1
