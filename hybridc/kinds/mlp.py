"""`mlp`: a standalone pre-norm feed-forward layer (Megatron-LM's pattern symbol `-`); the FFN sub-block's math and
options (`hybridc.kinds._ffn.FFNOptions`: plain or gated, biases or none, `hidden` or `mult`, a mixture of experts
with `experts=E`) with no sequence mixing and no FFN of its own."""
from __future__ import annotations

from typing import Literal

from ._base import KindSpec, auto_field
from ._ffn import FFNOptions, settle


class MLPSpec(FFNOptions, KindSpec):
    """A standalone pre-norm feed-forward layer (Megatron's `-`)."""

    kind: Literal["mlp"] = "mlp"
    bias: bool = auto_field("biases on gate/up/down (auto: on for plain, off for gated and experts)")

    ROLE = "mlp"
    SHOWN = ("mult", "act")
    TAKES_FFN = False

    @classmethod
    def resolve(cls, options: dict, dim: int) -> dict:
        return settle(options, cls)
