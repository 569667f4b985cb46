"""Tracing a DCT step on the meta device: live tensor bytes as a CUDA allocator would count them, and
FLOPs, with no weights and no device memory.

`Tracer` is a TorchDispatchMode: every aten op that runs inside it (forward, backward, checkpoint
recomputation: the autograd engine carries the mode into backward) reports its outputs. Each new
storage is counted once, rounded up as the CUDA caching allocator rounds it (512 bytes), and uncounted
when Python frees it (a weakref finaliser on the storage), so `live` follows what `memory_allocated`
would read and `peak` what `max_memory_allocated` would. Storages that existed before the trace
(parameters, buffers, inputs) are never counted: views of parameters are weights, already resident.

What differs on CUDA from what runs here is modelled, not measured:
- attention: on the meta device (as on the CPU) `scaled_dot_product_attention` takes the math path,
  which materialises and saves the (L x L) attention matrix; CUDA runs flash or memory-efficient
  kernels that save only the output and a log-sum-exp. `fused_attention()` routes every call through
  `aten._scaled_dot_product_efficient_attention`, which has a meta kernel and saves what the CUDA kernel
  saves (about 12 GiB of saved tensors for one sd15 UNet call at 512 px becomes about 1.4 GiB).
- allocator rounding: 512 bytes per allocation (memory_allocated counts blocks, not requested bytes).
- cuBLAS workspaces: a per-GPU constant in bench/plan/planner.py (they are allocated once, through the
  allocator, on the first matmul).
- cuDNN convolution workspaces and other unmodelled transients: the one calibrated constant per arch.

Per op, a roofline time for each known GPU: max(FLOPs / peak FLOP rate of its dtype, bytes read and
written / memory bandwidth), summed; and a count of the ops that launch a kernel (bench.plan.planner adds a
calibrated launch cost per kernel: at batch 1 the GPU waits on launches far more than on arithmetic).
FLOPs come from torch.utils.flop_counter's formulas (the ones FlopCounterMode uses: matmuls,
convolutions, attention, forward and backward).
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import flop_registry

CUDA_ROUND = 512  # the caching allocator's block granularity (kMinBlockSize)


def rounded(nbytes: int) -> int:
    return -(-nbytes // CUDA_ROUND) * CUDA_ROUND if nbytes else 0


@dataclass
class GPU:
    """Public datasheet numbers: dense tensor-core FLOP rates (no sparsity), fp32 without tensor cores
    (torch leaves TF32 matmuls off by default), HBM bandwidth, and the memory torch reports."""

    name: str
    memory_gib: float
    fp16_tflops: float  # also bf16
    fp32_tflops: float
    bandwidth_tbs: float
    cublas_workspace_mib: float  # torch's default cuBLAS workspace per handle: 32 MiB on sm90, 8.125 before

    def op_seconds(self, flops: float, half: bool, nbytes: float) -> float:
        rate = (self.fp16_tflops if half else self.fp32_tflops) * 1e12
        return max(flops / rate, nbytes / (self.bandwidth_tbs * 1e12))


GPUS = {g.name: g for g in (
    GPU("h200", 139.8, 989, 67, 4.8, 32),
    GPU("h100", 79.1, 989, 67, 3.35, 32),
    GPU("a100-80gb", 79.2, 312, 19.5, 2.0, 8.125),
    GPU("a100-40gb", 39.4, 312, 19.5, 1.56, 8.125),
    GPU("l40s", 44.4, 362, 91.6, 0.864, 8.125),
    GPU("rtx4090", 23.6, 165, 82.6, 1.008, 8.125),
    GPU("a10g", 22.1, 70, 31.2, 0.6, 8.125),
    GPU("l4", 22.0, 121, 30.3, 0.3, 8.125),
    GPU("t4", 14.6, 65, 8.1, 0.32, 8.125),
)}


@dataclass
class TraceResult:
    live: int = 0  # bytes live at the end
    peak: int = 0
    marks: dict[str, int] = field(default_factory=dict)  # live bytes at named points
    flops: int = 0
    kernels: int = 0  # ops that would launch a kernel: they allocate an output or write one in place
    seconds: dict[str, float] = field(default_factory=dict)  # roofline seconds per GPU name

    def to_dict(self) -> dict:
        return dict(live=self.live, peak=self.peak, marks=dict(self.marks), flops=self.flops,
                    kernels=self.kernels, seconds=dict(self.seconds))


class Tracer(TorchDispatchMode):
    """Live and peak bytes of the storages that ops allocate inside it, plus FLOPs and roofline time.

    `exclude` (modules or tensors): storages that already exist and must never count (weights).
    Storages made before the trace are excluded anyway: only op outputs are looked at, and a view's
    storage is its base's, so `t()` of a weight is not a new allocation.
    """

    def __init__(self, exclude=(), cuda: bool = True):
        super().__init__()
        self._round = rounded if cuda else (lambda n: n)  # the CPU allocator does not round
        self._known: set[int] = set()
        for item in exclude:
            tensors = [item] if isinstance(item, torch.Tensor) else [*item.parameters(), *item.buffers()]
            self._known.update(id(t.untyped_storage()) for t in tensors)
        self._keep = [t.untyped_storage() for item in exclude
                      for t in ([item] if isinstance(item, torch.Tensor) else [*item.parameters(), *item.buffers()])]
        self._counted: dict[int, int] = {}
        self.result = TraceResult(seconds={name: 0.0 for name in GPUS})

    def mark(self, name: str) -> None:
        self.result.marks[name] = self.result.live

    def _free(self, key: int) -> None:
        self.result.live -= self._counted.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        res = self.result
        moved = 0
        allocated = False
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                moved += t.numel() * t.element_size()
                storage = t.untyped_storage()
                key = id(storage)
                if key in self._known or key in self._counted:
                    continue
                nbytes = self._round(storage.nbytes())
                self._counted[key] = nbytes
                res.live += nbytes
                allocated = True
                weakref.finalize(storage, self._free, key)
        res.peak = max(res.peak, res.live)
        # a view or a reshape launches nothing; an op that allocates or writes in place launches a kernel
        res.kernels += int(allocated or func._schema.is_mutable)
        inputs = [a for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        moved += sum(a.numel() * a.element_size() for a in inputs)
        formula = flop_registry.get(func._overloadpacket)
        flops = int(formula(*args, **kwargs, out_val=out)) if formula is not None else 0
        res.flops += flops
        half = any(a.dtype in (torch.float16, torch.bfloat16) for a in inputs)
        for name, gpu in GPUS.items():
            res.seconds[name] += gpu.op_seconds(flops, half, moved)
        return out


def _fused_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    # compute_log_sumexp=True: the training path, which saves the log-sum-exp for backward as CUDA does
    return torch.ops.aten._scaled_dot_product_efficient_attention(
        query, key, value, attn_mask, True, dropout_p, is_causal, scale=scale)[0]


@contextlib.contextmanager
def fused_attention():
    """Route F.scaled_dot_product_attention (diffusers' AttnProcessor2_0 and transformers' sdpa path look
    it up at call time) through the memory-efficient kernel, as on CUDA; restored afterwards."""
    original = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = _fused_sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original
