"""`delta_net`: DeltaNet (Yang et al. 2024, arXiv:2406.06484), as flash-linear-attention's DeltaNet layer.

Parameters: q/k/v projections (H*K, D) each (K = V), b_proj (H, D), q/k/v short convs (no bias), o_norm (V,),
o_proj (D, H*V), and g_proj (H*V, D) with the gated output norm. Decode state: the conv windows and the [K, V]
state per head. FLOPs count matmuls, convs and the recurrence (elementwise activations and norms are not counted).
Symbols: D model dim, H heads, K key head dim, V value head dim.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from . import _delta
from ._base import KindSpec, auto_field, positive_int


class DeltaNetSpec(KindSpec):
    """DeltaNet (Yang et al. 2024), as flash-linear-attention's DeltaNet layer."""

    kind: Literal["delta_net"] = "delta_net"
    heads: int = Field(4, ge=1, le=1024, description="number of heads")
    head_dim: int = auto_field("key/value head size (auto: dim // heads)", ge=1, le=4096)
    conv: int = Field(4, ge=1, le=64, description="short convolution width")
    gate: bool = Field(False, description="gated output norm")

    SHOWN = ("heads", "head_dim")

    @classmethod
    def resolve(cls, options: dict, dim: int) -> dict:
        out = dict(options)
        out.setdefault("head_dim", "auto")
        _delta.head_dim_auto(out, positive_int(cls.option(out, "heads"), "heads"), dim)
        positive_int(out["head_dim"], "head_dim")
        positive_int(cls.option(out, "conv"), "conv", minimum=0)
        return out

    def _dims(self):
        H, K = self.heads, self.head_dim
        return H, K, K, H * K, H * K

    def params(self, dim: int) -> int:
        H, K, V, kd, vd = self._dims()
        n = dim * (2 * kd + vd) + dim * H + vd * dim + V              # q/k/v proj, b_proj, o_proj, o_norm
        n += _delta.conv_channels(kd, vd) * self.conv                 # q/k/v short convs (no bias)
        n += dim * vd if self.gate else 0                             # g_proj
        return n

    def state_numel(self, dim: int, context: int = 0, meta: int = 0) -> int:
        H, K, V, _, _ = self._dims()
        return _delta.state_numel(H, K, V, self.conv)

    def flops(self, dim: int, context: int = 0, meta: int = 0) -> int:
        H, K, V, kd, vd = self._dims()
        mm = 2 * dim * (2 * kd + vd + H + vd) + (2 * dim * vd if self.gate else 0)
        conv = 2 * _delta.conv_channels(kd, vd) * self.conv
        rec = H * (6 * K * V + 2 * V)        # k^T S, u = beta (v - .), S += k u^T, q^T S
        return mm + conv + rec
