"""The standalone `mlp` layer kind (Megatron's `-` in a hybrid pattern): the FFN of ``ffn.py`` as a mixer, under the
block's pre-norm residual like any other layer kind (same parameters: `up`, `down` or `gate`, `up`, `down`).
"""
from __future__ import annotations

from .ffn import FFN

__all__ = ["LAYER", "KERNEL"]

LAYER = FFN
KERNEL = (None, "no recurrence")  # what it runs (`describe --kernels`: hybridc_torch.plan)
