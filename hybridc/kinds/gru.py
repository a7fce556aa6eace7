"""`gru`: a gated recurrent unit (Cho et al. 2014) with torch.nn.GRU semantics.

Parameters: weight_ih (3H, D), weight_hh (3H, H), both biases (3H,), and out_proj (D, H) when H != D.
Decode state: the hidden state (H,). Symbols: D model dim, H hidden size.
"""
from __future__ import annotations

from typing import Literal

from ._base import KindSpec, auto_field, positive_int


class GRUSpec(KindSpec):
    """Gated recurrent unit with torch.nn.GRU semantics."""

    kind: Literal["gru"] = "gru"
    hidden: int = auto_field("GRU hidden size (auto: dim)", ge=1, le=65536)

    SHOWN = ("hidden",)

    @classmethod
    def resolve(cls, options: dict, dim: int) -> dict:
        out = dict(options)
        if out.get("hidden") == "auto":
            out["hidden"] = dim
        if "hidden" in out:
            positive_int(out["hidden"], "hidden")
        return out

    def params(self, dim: int) -> int:
        H = self.hidden
        return 3 * H * dim + 3 * H * H + 6 * H + (H * dim if H != dim else 0)

    def state_numel(self, dim: int, context: int = 0, meta: int = 0) -> int:
        return self.hidden

    def flops(self, dim: int, context: int = 0, meta: int = 0) -> int:
        H = self.hidden
        matmuls = 2 * 3 * H * dim + 2 * 3 * H * H + (2 * H * dim if H != dim else 0)
        # biases (6H), r/z sigmoids (2H), r * hn (H), + (H), tanh (H), h = n + z * (h - n) (3H)
        return matmuls + 14 * H
