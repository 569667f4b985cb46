"""The real CLIP BPE tokenizer, rebuilt offline from the CLIP BPE vocabulary shipped with this package
(dct/world/assets/clip/, the file open_clip_torch also ships).

Converted to vocab.json + merges.txt it tokenises exactly like Stable Diffusion's tokenizer.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

from ..errors import ModelNotFoundError


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


PACKAGED_BPE = Path(__file__).resolve().parent / "assets" / "clip" / "bpe_simple_vocab_16e6.txt.gz"


def open_clip_bpe_path() -> Path:
    if PACKAGED_BPE.is_file():
        return PACKAGED_BPE
    spec = importlib.util.find_spec("open_clip")  # locate without importing (import pulls in timm etc.)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError("open_clip_torch is not installed: it ships the CLIP BPE vocabulary "
                                 "(pip install open_clip_torch)")
    path = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise ModelNotFoundError(f"CLIP BPE vocabulary not found at {path}")
    return path


def write_clip_tokenizer(folder: str | Path, model_max_length: int = 77) -> Path:
    """Write a CLIPTokenizer folder (vocab.json, merges.txt, configs) loadable by from_pretrained."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = gzip.open(open_clip_bpe_path()).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(_bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    config = {
        "tokenizer_class": "CLIPTokenizer", "model_max_length": model_max_length,
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>", "do_lower_case": True, "errors": "replace",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}, indent=2))
    return folder
