"""The standalone `mlp` layer kind (Megatron's `-` in a hybrid pattern): the FFN of ``ffn.py`` as a mixer, under the
block's pre-norm residual like any other layer kind (same parameters: `up`, `down` or `gate`, `up`, `down`); with
`experts=E` (E > 0) the mixture of experts of ``moe.py`` (`router`, `experts.*`, `shared.*`).
"""
from __future__ import annotations

from .ffn import FFN
from .moe import MoE

__all__ = ["LAYER", "KERNEL"]


class MLP(FFN):
    """`MLP(dim, spec)`: the dense FFN, or an `MoE` when `spec.experts` > 0 (the same options as the FFN sub-block)."""

    def __new__(cls, dim: int, spec, *, impl: str = "auto"):
        if getattr(spec, "experts", 0):
            return MoE(dim, spec, impl=impl)  # not an MLP: Python skips MLP.__init__
        return super().__new__(cls)


LAYER = MLP
KERNEL = (None, "no recurrence")  # what it runs (`describe --kernels`: hybridc_torch.plan)
