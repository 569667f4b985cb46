"""A cell kind for the figure tests: it takes the DCT cell's settings (validated by the DCT cell itself, so
its rows carry the same cfg_* columns) and runs out of memory in its first step, the way a too-deep rollout
does on a real device. The runner records that as a real `oom` row."""

from __future__ import annotations

from bench.cells import dct as cells_dct
from bench.registry import CellOutput, register_cell

KIND = "dct_out_of_memory"


def run(config: dict, ctx) -> CellOutput:
    with ctx.phase("train"), ctx.step():
        raise MemoryError(f"simulated: a depth-{config['depth']} rollout with checkpointing "
                          f"{config['checkpointing']!r} does not fit")


register_cell(KIND, keys=cells_dct.KEYS, validate=cells_dct.validate, run=run)
