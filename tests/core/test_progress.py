"""dct.progress: tqdm's call shape on rich; silent when disabled or when stderr is not a terminal."""

from __future__ import annotations

import io

from dct.progress import progress


def test_call_shape_and_silence(capsys):
    with progress(3, "x", enabled=True) as bar:  # pytest's stderr is not a terminal: nothing drawn
        bar.update(2)
        bar.set_postfix(loss=0.5, active=1)
    bar = progress(3, "x", enabled=False)
    bar.update(1)
    bar.set_postfix(loss=1.0)
    bar.close()
    assert capsys.readouterr().err == ""


def test_draws_on_a_terminal(monkeypatch):
    import rich.console

    buffer = io.StringIO()
    real = rich.console.Console

    def terminal_console(*args, **kwargs):
        kwargs.pop("stderr", None)
        return real(*args, file=buffer, force_terminal=True, width=100, **kwargs)

    monkeypatch.setattr(rich.console, "Console", terminal_console)
    bar = progress(4, "token for class 7", enabled=True)
    bar.update(2)
    bar.set_postfix(loss=0.25)
    bar._progress.refresh()
    bar.close()
    text = buffer.getvalue()
    assert "token for class 7" in text and "2/4" in text and "loss=0.25" in text


def test_loading_a_pipeline_warns_nothing_about_dct_own_calls():
    """diffusers deprecates `torch_dtype`; dct's loader must not trigger that warning on every load."""
    import warnings

    import pytest

    pytest.importorskip("dct.world.paths")
    from dct.pipeline import load_parts

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_parts(None)
    assert not [w for w in caught if "torch_dtype" in str(w.message)]
