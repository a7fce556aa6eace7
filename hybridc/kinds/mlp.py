"""`mlp`: a standalone pre-norm feed-forward layer (Megatron-LM's pattern symbol `-`); the FFN sub-block's math
(`hybridc.kinds._ffn`) with no sequence mixing and no FFN of its own."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._base import KindSpec
from ._ffn import Act, ffn_flops, ffn_params


class MLPSpec(KindSpec):
    """A standalone pre-norm feed-forward layer (Megatron's `-`)."""

    kind: Literal["mlp"] = "mlp"
    mult: float = Field(4.0, gt=0, le=64, description="hidden = int(mult * dim)")
    act: Act = Field("gelu", description="activation")

    ROLE = "mlp"
    PATTERN = "-"
    SHOWN = ("mult", "act")
    TAKES_FFN = False

    def params(self, dim: int) -> int:
        return ffn_params(self.mult, self.act, dim)

    def flops(self, dim: int, context: int = 0, meta: int = 0) -> int:
        return ffn_flops(self.mult, self.act, dim)
