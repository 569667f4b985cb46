"""The class token(s): placeholder strings added to the tokenizer, whose embeddings are trained.

The trained vectors are NOT rows of the text encoder's embedding table. They are a separate parameter
spliced into the embedding layer's output wherever a placeholder id appears, so no other row can
change: the reference code trains the whole table with AdamW and relies on zero gradients, and weight
decay then shrinks every other row (the textual-inversion drift bug). Here the table stays frozen and
bit-identical by construction.

Saved in the diffusers textual-inversion format ({token: vector} safetensors, loadable by
`pipe.load_textual_inversion`) with a JSON sidecar for config, history and gradient norms.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .errors import ConfigError

PAPER_PLACEHOLDER = "newclas"


def token_ids_of(tokenizer, word: str) -> list[int]:
    return tokenizer(word, add_special_tokens=False)["input_ids"]


class ClassTokens(torch.nn.Module):
    """One or more trainable token vectors spliced into a CLIP text encoder's input embeddings."""

    def __init__(self, tokenizer, text_encoder, placeholders: list[str], init_words: list[str] | str = "a",
                 init_vectors: torch.Tensor | None = None):
        super().__init__()
        if isinstance(init_words, str):
            init_words = [init_words] * len(placeholders)
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.placeholders = list(placeholders)
        table = text_encoder.get_input_embeddings()
        init = []
        for word in init_words:
            ids = token_ids_of(tokenizer, word)
            if len(ids) != 1:
                raise ConfigError(f"initialiser word {word!r} is {len(ids)} tokens; give a word that is "
                                  "exactly one token of this tokenizer (the paper uses 'a')")
            init.append(table.weight[ids[0]].detach().float().clone())
        ids = []
        for ph in self.placeholders:
            existing = tokenizer.convert_tokens_to_ids(ph)
            if ph not in tokenizer.get_vocab() or existing == tokenizer.unk_token_id:
                tokenizer.add_tokens([ph])
            ids.append(tokenizer.convert_tokens_to_ids(ph))
            if len(token_ids_of(tokenizer, ph)) != 1:
                raise ConfigError(f"placeholder {ph!r} does not tokenise to one token")
        if max(ids) >= table.num_embeddings:
            # Keeps ids valid; the new rows are never read (the hook overrides them) or trained.
            text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        self.register_buffer("ids", torch.tensor(ids, dtype=torch.long), persistent=False)
        if init_vectors is not None:
            check_vectors(dict(zip(self.placeholders, init_vectors)), "the given vectors", table.embedding_dim)
        vectors = init_vectors.float().clone() if init_vectors is not None else torch.stack(init)
        self.vectors = torch.nn.Parameter(vectors.to(table.weight.device))
        self._hook = text_encoder.get_input_embeddings().register_forward_hook(self._splice)

    def _splice(self, module, args, output):
        hits = self._hits(args[0])
        if not hits.any():
            return output
        return self._spliced(hits, output)

    def _hits(self, input_ids: torch.Tensor) -> torch.Tensor:
        return input_ids[..., None] == self.ids.to(input_ids.device)  # (B, L, n)

    def _spliced(self, hits: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        replacement = hits.to(self.vectors.dtype) @ self.vectors  # (B, L, D)
        return torch.where(hits.any(-1, keepdim=True), replacement.to(output.dtype), output)

    def remove(self) -> None:
        """Detach the hook (the tokenizer keeps its added placeholders)."""
        self._hook.remove()

    def encode(self, prompts: list[str], padding: str = "max_length") -> torch.Tensor:
        """Prompt embeddings (B, L, D) with a graph to `self.vectors`.

        padding "max_length" pads to the tokenizer's length (as the stock pipeline and evaluation do);
        "longest" pads only to the longest prompt (the reference code's training prompts are unpadded).
        """
        return encode_prompts(self.tokenizer, self.text_encoder, prompts, padding=padding)

    def state_dict_ti(self) -> dict[str, torch.Tensor]:
        return {ph: self.vectors[i].detach().float().cpu().clone() for i, ph in enumerate(self.placeholders)}


def encode_prompts(tokenizer, text_encoder, prompts: list[str], padding: str = "max_length") -> torch.Tensor:
    if padding not in ("max_length", "longest"):
        raise ConfigError(f"padding {padding!r} is not accepted: use 'max_length' or 'longest'")
    batch = tokenizer(prompts, padding=padding, max_length=tokenizer.model_max_length, truncation=True,
                      return_tensors="pt")
    device = text_encoder.get_input_embeddings().weight.device
    return text_encoder(batch.input_ids.to(device))[0]


def save_tokens(path: str | Path, tokens: dict[str, torch.Tensor], sidecar: dict | None = None) -> Path:
    """Write `{token: vector}` safetensors (diffusers textual-inversion format) and `<path>.json`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in tokens.items()}, str(tmp))
    tmp.replace(path)
    if sidecar is not None:
        side = sidecar_path(path)
        tmp_side = side.with_suffix(".json.tmp")
        tmp_side.write_text(json.dumps(sidecar, indent=2, default=str))
        tmp_side.replace(side)
    return path


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.stem + ".json")


def load_tokens(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """`({token: vector (D,)}, sidecar dict)`; the sidecar is optional ({} when `<path>.json` is absent:
    a plain diffusers textual-inversion file). Every fault is a ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"token file {str(path)!r} does not exist")
    side = sidecar_path(path)
    meta: dict = {}
    if side.is_file():
        try:
            meta = json.loads(side.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"token sidecar {str(side)!r} is not valid JSON ({e}); fix or delete it "
                              "(without a sidecar, give --class)") from None
        if not isinstance(meta, dict):
            raise ConfigError(f"token sidecar {str(side)!r} holds a JSON {type(meta).__name__}, not an object")
    try:
        tokens = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for a bad header
        raise ConfigError(f"token file {str(path)!r} is not a readable safetensors file "
                          f"({type(e).__name__}: {e}); expected diffusers' textual-inversion format "
                          "{token: vector}") from None
    return check_vectors(tokens, str(path)), meta


def check_vectors(tokens: dict[str, torch.Tensor], source: str, width: int | None = None) -> dict[str, torch.Tensor]:
    """One finite vector per token, all of one width (and of `width` when given): a NaN vector renders
    black images, a wrong width fails deep inside the text encoder."""
    if not tokens:
        raise ConfigError(f"token file {source!r} holds no token: expected {{token: vector}}")
    out = {}
    for name, vec in tokens.items():
        if vec.ndim == 2 and vec.shape[0] == 1:  # (1, D), as some textual-inversion files store it
            vec = vec[0]
        if vec.ndim != 1 or not vec.is_floating_point():
            raise ConfigError(f"token {name!r} in {source!r} is a {vec.dtype} tensor of shape {tuple(vec.shape)}; "
                              "a token is one float vector (D,)")
        if not torch.isfinite(vec).all():
            raise ConfigError(f"token {name!r} in {source!r} holds NaN or infinite values; it would render black "
                              "images (retrain it)")
        out[name] = vec
    widths = {v.shape[0] for v in out.values()}
    if len(widths) > 1:
        raise ConfigError(f"tokens in {source!r} have different widths {sorted(widths)}")
    if width is not None and widths != {width}:
        raise ConfigError(f"token file {source!r} holds vectors of width {widths.pop()}, but this model's text "
                          f"encoder takes width {width}: it was trained for another model")
    return out


def load_into_pipeline(pipe, path: str | Path) -> list[str]:
    """Load a token file (one token or a bank of many) with diffusers' own `load_textual_inversion`."""
    tokens, _ = load_tokens(path)
    names = list(tokens)
    pipe.load_textual_inversion([{n: tokens[n]} for n in names], token=names)
    return names
