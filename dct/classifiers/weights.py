"""Reading weights without running code from them, and deciding quickly whether a hub can be asked at all.

A `.safetensors` file is plain tensors. Any other file goes through `torch.load(weights_only=True)`, whose
restricted unpickler refuses every object but tensors and containers; a file that needs more is a program,
and is only run when the user passes `trust_pickle=True`.
"""

from __future__ import annotations

import functools
import hashlib
import pickle
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch

from dct.errors import ModelNotFoundError, UnsafeWeightsError

# Checkpoint wrappers written by common training scripts (timm, Lightning, plain loops). EMA copies are not
# preferred: a user who wants them can export them; silently swapping weights would not be honest provenance.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net")


def _unsafe_message(path: Path, why: str) -> str:
    # the CLI has no option to unpickle a classifier: trusting a file is a decision made in code
    return (f"{path} cannot be read as plain weights ({why}); unpickling it could run arbitrary code. "
            "Convert it to .safetensors, or, from Python, pass trust_pickle=True to "
            "dct.classifiers.load_classifier if you trust its author.")


def _is_pickle(path: Path) -> bool:
    """Whether the file is a well-formed pickle (inside a torch zip archive, or a legacy torch file).
    weights_only refuses such a file because of what it holds (classes, functions): it is unsafe, not
    unreadable. Decided from the bytes, not from the error's wording, which changes between torch versions."""
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next((n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
                if name is None:
                    return False
                data = archive.read(name)
        else:
            data = path.read_bytes()
        for _ in pickletools.genops(data):  # stops at the first STOP opcode; junk fails on a bad opcode
            pass
        return True
    except Exception:  # noqa: BLE001 - any failure to parse means: not a pickle
        return False


def torch_load(path: Path, *, trust_pickle: bool):
    """`torch.load` that only falls back to full unpickling when the user trusts the file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # A well-formed pickle that the restricted unpickler refuses holds Python objects (it names the
        # class in a wording that varies by torch version); junk or a truncated file is unreadable
        # whatever the trust.
        if not _is_pickle(path):
            first = (str(e).strip().splitlines() or [type(e).__name__])[-1][:200]
            raise ModelNotFoundError(f"{path} is not a readable torch weights file ({first})") from None
        if not trust_pickle:
            raise UnsafeWeightsError(_unsafe_message(path, "it holds Python objects, not only tensors")) from None
    except Exception as e:  # a junk file fails with anything from KeyError to RuntimeError
        raise ModelNotFoundError(f"{path} is not a readable torch weights file: {e}") from None
    return torch.load(path, map_location="cpu", weights_only=False)


def load_state_dict(path: Path, *, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """A flat {name: tensor} dict from a .safetensors / .pth / .pt / .bin file, unwrapping training checkpoints."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises its own SafetensorError for a bad header
            raise ModelNotFoundError(f"{path} is not a readable safetensors file: {e}") from None
    obj = torch_load(path, trust_pickle=trust_pickle)
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    for key in _WRAPPER_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelNotFoundError(f"{path} holds no state dict of tensors (found {type(obj).__name__})")
    if all(k.startswith("module.") for k in obj):  # saved from DataParallel / DDP
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


@functools.lru_cache(maxsize=None)
def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@functools.lru_cache(maxsize=None)
def host_reachable(url: str, timeout: float = 3.0) -> bool:
    """One TCP connect, cached per host. Hub clients retry an unreachable host for ~25-45 s before failing;
    asking first turns an offline miss into an immediate, clear error."""
    parsed = urlparse(url)
    host, port = parsed.hostname, parsed.port or (443 if parsed.scheme != "http" else 80)
    if not host:
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def hf_hub_online() -> bool:
    """False when HF_HUB_OFFLINE is set or the hub endpoint cannot be reached."""
    from huggingface_hub import constants

    return not constants.HF_HUB_OFFLINE and host_reachable(constants.ENDPOINT)
