"""Where one DCT step's memory and time go, component by component, on a full-size architecture.

    python -m bench.gpu.probe_components --arch sd15 --resolution 256 --precision bf16 --device cpu
    python -m bench.gpu.probe_components --arch sd15 --resolution 512 --precision fp16 --device cuda

For each piece of the gradient path (text encoder on the prompt with the token, ONE UNet call with
classifier-free guidance, the same call with its unconditional half under no_grad, the VAE decode, the
classifier) it runs forward with gradient and backward,
and reports: activation bytes saved for backward (autograd's saved tensors, parameters excluded,
shared storages counted once: what a graph through that piece holds until backward), forward and
backward seconds, and the same for the decode under torch.utils.checkpoint. Runs the real modules with
random weights (dct.archs); on the CPU use a reduced resolution (activations scale with pixels).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch.utils.checkpoint import checkpoint


class SavedBytes:
    """Bytes of the tensors autograd saves for backward inside the context (parameters excluded)."""

    def __init__(self, params):
        self.skip = {p.untyped_storage().data_ptr() for p in params}
        self.storages: dict[int, int] = {}

    def pack(self, t: torch.Tensor):
        s = t.untyped_storage()
        if s.data_ptr() not in self.skip and t.device.type != "meta":
            self.storages[s.data_ptr()] = s.nbytes()
        return t

    def __enter__(self):
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)

    @property
    def total(self) -> int:
        return sum(self.storages.values())


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def probe(arch: str, resolution: int, precision: str, device: str, batch: int = 1, repeats: int = 2,
          classifier: str = "vit-l16-random") -> dict:
    from bench.cells.step import load_step_classifier
    from dct.archs import build_parts
    from dct.rollout import decode
    from dct.token import ClassTokens
    from dct.train import precision_dtype

    dtype = precision_dtype(precision)
    parts = build_parts(arch, device, dtype=dtype)
    clf, target, name, _ = load_step_classifier(classifier, device)
    params = [p for m in (parts.unet, parts.vae, parts.text_encoder, clf) for p in m.parameters()]
    tokens = ClassTokens(parts.tokenizer, parts.text_encoder, ["newclas"], "a")
    params.append(tokens.vectors)
    latent = resolution // 8
    prompt = [f"A photo of newclas {name}"] * batch
    results: dict[str, dict] = {}

    def measure(label, forward):
        rows = []
        for _ in range(repeats):
            tokens.vectors.grad = None
            _sync(device)
            with SavedBytes(params) as saved:
                t0 = time.perf_counter()
                out = forward()
                _sync(device)
                t1 = time.perf_counter()
            out.float().square().mean().backward()
            _sync(device)
            rows.append((saved.total, t1 - t0, time.perf_counter() - t1))
        results[label] = {"saved_mib": rows[-1][0] / 2**20, "fwd_s": statistics.median(r[1] for r in rows),
                          "bwd_s": statistics.median(r[2] for r in rows)}
        print(label, json.dumps({k: round(v, 3) for k, v in results[label].items()}), flush=True)

    cond = tokens.encode(prompt, padding="longest").detach()
    emb = torch.cat([cond, cond]).to(dtype)
    measure("text_encoder", lambda: tokens.encode(prompt, padding="longest"))
    emb_grad = emb.clone().requires_grad_(True)
    x = torch.randn(2 * batch, 4, latent, latent, device=device, dtype=dtype)
    measure("unet_call_cfg", lambda: parts.unet(x, 500, encoder_hidden_states=emb_grad, return_dict=False)[0])
    x1 = x[:batch]

    def split_cfg():
        # The first UNet call with gradient gets a token-independent x: its unconditional half needs no graph.
        with torch.no_grad():
            eps_u = parts.unet(x1, 500, encoder_hidden_states=emb[:batch], return_dict=False)[0]
        eps_c = parts.unet(x1, 500, encoder_hidden_states=emb_grad[batch:], return_dict=False)[0]
        return torch.cat([eps_u, eps_c])

    measure("unet_call_cfg_uncond_no_grad", split_cfg)
    z = torch.randn(batch, 4, latent, latent, device=device, requires_grad=True)
    measure("vae_decode", lambda: decode(parts.vae, z))
    measure("vae_decode_checkpointed", lambda: checkpoint(decode, parts.vae, z, use_reentrant=False))
    parts.vae.enable_gradient_checkpointing()
    measure("vae_decode_block_ckpt", lambda: decode(parts.vae, z))
    parts.vae.disable_gradient_checkpointing()
    img = torch.rand(batch, 3, resolution, resolution, device=device, requires_grad=True)
    measure("classifier", lambda: clf(img))
    return {"arch": arch, "resolution": resolution, "precision": precision, "device": device, "batch": batch,
            "components": results}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="sd15")
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--precision", default="fp16")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--classifier", default="vit-l16-random")
    p.add_argument("--json")
    a = p.parse_args(argv)
    out = probe(a.arch, a.resolution, a.precision, a.device, a.batch, a.repeats, a.classifier)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
