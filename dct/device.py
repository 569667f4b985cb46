"""The one meaning of --device, in every command: auto | cpu | cuda | cuda:N, checked before any work."""

from __future__ import annotations


def resolve_device(requested: str) -> str:
    """'auto' -> 'cuda:0' when CUDA is available, else 'cpu'; a named device must exist here."""
    from .errors import ConfigError

    accepted = "use 'auto', 'cpu', 'cuda' or 'cuda:N'"
    if requested == "auto":
        import torch

        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if requested == "cpu":
        return "cpu"
    head, _, index = str(requested).partition(":")
    if head != "cuda" or (index and not index.isdigit()):
        raise ConfigError(f"--device {requested!r} is not accepted: {accepted}")
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f"--device {requested!r}: CUDA is not available on this machine "
                          f"(torch {torch.__version__}); use --device cpu or auto")
    n = int(index or 0)
    if n >= torch.cuda.device_count():
        raise ConfigError(f"--device {requested!r}: only {torch.cuda.device_count()} CUDA device(s) here "
                          f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    return f"cuda:{n}"
